"""Recipes and overrides: every packaged recipe composes; unknown keys name the nearest valid one."""
from __future__ import annotations

import re

import pytest
from omegaconf import OmegaConf

from metalab.config import ConfigError, load_recipe, recipe_names


def test_every_packaged_recipe_composes():
    names = recipe_names()
    assert {"omniglot-protonet-5w1s", "omniglot-protonet-5w5s", "omniglot-protonet-20w1s",
            "omniglot-protonet-20w5s"} <= set(names)
    for name in names:
        config = load_recipe(name)
        assert config.name == name, f"{name}.yaml declares name {config.name}"


def test_protonet_recipes_follow_the_paper():
    for ways, shots in [(5, 1), (5, 5), (20, 1), (20, 5)]:
        config = load_recipe(f"omniglot-protonet-{ways}w{shots}s")
        assert (config.task.ways, config.task.shots, config.task.queries) == (60, shots, 5)
        assert (config.eval.ways, config.eval.shots) == (ways, shots)
        assert config.optim.lr == 1e-3 and config.optim.lr_step == 2000 and config.optim.lr_gamma == 0.5


def test_reptile_recipes_anneal_the_meta_step_on_omniglot_only():
    for name in [f"omniglot-reptile-{setting}" for setting in ("5w1s", "5w5s", "20w1s", "20w5s")]:
        config = load_recipe(name)
        optim = config.optim
        assert (optim.name, optim.lr, optim.lr_final, optim.lr_step) == ("sgd", 1.0, 0.0, 0), name
        assert config.train.steps == (100000 if name.startswith("omniglot-reptile-5w") else 200000), name
    for shots in (5, 10, 20):
        config = load_recipe(f"sinusoid-reptile-{shots}shot")
        assert (config.optim.lr, config.optim.lr_final) == (0.1, None)  # constant: it measured better
        assert (config.learner.inner_lr, config.learner.inner_grad_clip) == (0.02, 50.0)



def test_sinusoid_anil_recipes_test_with_ten_clipped_head_steps():
    for shots in (5, 10, 20):
        learner = load_recipe(f"sinusoid-anil-{shots}shot").learner
        assert (learner.inner_steps, learner.inner_steps_test, learner.inner_grad_clip) == (1, 10, 50.0)

def test_overrides_apply_with_types():
    config = load_recipe("omniglot-protonet-5w1s", ["train.steps=7", "learner.distance=cosine", "run.dir=runs/x"])
    assert config.train.steps == 7 and config.learner.distance == "cosine" and config.run.dir == "runs/x"


@pytest.mark.parametrize(
    "override, nearest",
    [("trian.steps=3", "train"), ("train.step=3", "train.steps"), ("learner.distnce=cosine", "learner.distance")],
)
def test_unknown_key_names_the_nearest(override, nearest):
    with pytest.raises(ConfigError, match=f"unknown config key .*Did you mean '{nearest}'"):
        load_recipe("omniglot-protonet-5w1s", [override])


def test_bad_value_and_bad_syntax():
    with pytest.raises(ConfigError, match="train.steps"):
        load_recipe("omniglot-protonet-5w1s", ["train.steps=many"])
    with pytest.raises(ConfigError, match="key=value"):
        load_recipe("omniglot-protonet-5w1s", ["train.steps"])


def test_unknown_recipe_suggests_names():
    with pytest.raises(ConfigError, match="Did you mean omniglot-protonet-5w1s"):
        load_recipe("omniglot-protonet-5w1")


def test_unknown_learner_is_named():
    from metalab.config import compose

    with pytest.raises(ValueError, match="unknown learner 'protonett'.*protonet"):
        compose({"learner": {"name": "protonett"}})


@pytest.mark.parametrize("override", ["task.meta_batch=0", "task.shots=0", "task.queries=0", "eval.episodes=0",
                                      "speed.eval_batch=0", "train.steps=0", "train.ckpt_every=0", "train.log_every=0",
                                      "eval.val_episodes=-1", "optim.lr_step=-2"])
def test_counts_that_cannot_work_are_refused_by_name(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{key} must be >= "):
        load_recipe("omniglot-protonet-5w1s", [override])


@pytest.mark.parametrize("override", ["train.val_every=0", "eval.val_episodes=0", "train.max_minutes=0"])
def test_zero_means_off_where_it_is_documented(override):
    key, value = override.split("=")
    assert OmegaConf.select(load_recipe("omniglot-protonet-5w1s", [override]), key) == float(value)


def test_negative_time_budget_and_threads_are_refused():
    with pytest.raises(ConfigError, match="train.max_minutes must be >= 0"):
        load_recipe("omniglot-protonet-5w1s", ["train.max_minutes=-1"])
    with pytest.raises(ConfigError, match="speed.threads must be >= 1"):
        load_recipe("omniglot-protonet-5w1s", ["speed.threads=0"])


@pytest.mark.parametrize("override, message", [
    ("speed.precision=fp16", "speed.precision must be one of fp32, bf16"),
    ("speed.engine=fast", "speed.engine must be one of accel, reference"),
    ("speed.task_chunk=-1", "speed.task_chunk must be >= 0"),
    ("speed.query_chunk=0", "speed.query_chunk must be >= 1"),
])
def test_bad_speed_options_are_refused_by_name(override, message):
    with pytest.raises(ConfigError, match=message):
        load_recipe("omniglot-maml-5w1s", [override])


@pytest.mark.parametrize("old, new", [("learner.task_chunk=2", "speed.task_chunk"),
                                      ("train.threads=1", "speed.threads"),
                                      ("eval.batch=5", "speed.eval_batch"),
                                      ("learner.precision=bf16", "speed.precision")])
def test_execution_options_at_their_old_keys_name_the_new_one(old, new):
    with pytest.raises(ConfigError, match=f"{old.split('=')[0]} .* is now {new}"):
        load_recipe("omniglot-maml-5w1s", [old])


def test_a_config_saved_with_the_old_keys_loads_with_them_in_the_speed_group():
    from omegaconf import OmegaConf

    from metalab.config import compose, upgrade_saved_config

    saved = OmegaConf.to_container(load_recipe("omniglot-maml-5w1s"))
    del saved["speed"]
    saved["learner"].update(task_chunk=3, checkpoint=True, winograd=False)
    saved["train"].update(threads=2, reuse_freed_memory=False)
    saved["eval"]["batch"] = 7
    config = compose(upgrade_saved_config(saved))
    assert (config.speed.task_chunk, config.speed.checkpoint, config.speed.winograd) == (3, True, False)
    assert (config.speed.threads, config.speed.reuse_freed_memory, config.speed.eval_batch) == (2, False, 7)
    assert "task_chunk" not in config.learner and "threads" not in config.train


def test_training_and_evaluation_episodes_have_the_same_shape_keys():
    """TaskConfig and EvalConfig declare ways/shots/queries/within_group once (EpisodeConfig); the recipe
    keys are the ones they always were."""
    from dataclasses import fields

    from metalab.config import EpisodeConfig, EvalConfig, TaskConfig

    shape = ["ways", "shots", "queries", "within_group"]
    assert [f.name for f in fields(EpisodeConfig)] == shape
    assert sorted(f.name for f in fields(TaskConfig)) == sorted([*shape, "meta_batch"])
    assert sorted(f.name for f in fields(EvalConfig)) == sorted(
        [*shape, "episodes", "seed", "val_episodes", "val_seed"])
    config = load_recipe("omniglot-protonet-5w1s", ["task.within_group=true", "eval.queries=3"])
    assert (config.task.within_group, config.eval.within_group) == (True, False)
    assert (config.eval.queries, config.task.queries) == (3, 5)
    with pytest.raises(ConfigError, match="Did you mean 'eval.within_group'"):
        load_recipe("omniglot-protonet-5w1s", ["eval.within_groups=true"])


@pytest.mark.parametrize("override, message", [
    ("task=[1,2]", "task in the command-line overrides is a section of keys (ways, shots, queries, within_group, ...), "
                   "not a list [1, 2]; set its keys one by one, e.g. task.ways="),
    ("train=1000", "train in the command-line overrides is a section of keys (steps, "),
    ("learner=3", "learner in the command-line overrides is a section of keys (name), not the value 3"),
    ("speed=null", "speed in the command-line overrides is a section of keys"),
])
def test_a_section_replaced_by_a_list_or_a_value_is_named(override, message):
    """These raised OmegaConf's TypeError, or a merge error naming no key."""
    with pytest.raises(ConfigError) as caught:
        load_recipe("omniglot-protonet-5w1s", [override])
    assert message in str(caught.value)


def test_a_section_replaced_in_a_recipe_file_is_named(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("name: mine\nlearner:\n  name: protonet\ntrain: [1, 2]\n")
    with pytest.raises(ConfigError, match=f"train in {recipe} is a section of keys"):
        load_recipe(str(recipe))
    recipe.write_text("- learner\n- protonet\n")
    with pytest.raises(ConfigError, match="must be a mapping of config sections .* not a list"):
        load_recipe(str(recipe))


def test_a_mandatory_value_left_to_the_user_must_be_given(tmp_path):
    """`???` in a recipe marks a value the user gives; OmegaConf's merge would silently put the schema's default
    (train.steps 10000) in its place, and reading the recipe's keys raised MissingMandatoryValue."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("name: mine\nlearner:\n  name: protonet\ntrain:\n  steps: ???\n")
    with pytest.raises(ConfigError,
                       match=r"train.steps has no value: .*recipe.yaml marks it '\?\?\?'.*train.steps=VALUE"):
        load_recipe(str(recipe))
    assert load_recipe(str(recipe), ["train.steps=7"]).train.steps == 7
    recipe.write_text("name: mine\nlearner:\n  name: ???\n")
    with pytest.raises(ConfigError, match="learner.name has no value"):
        load_recipe(str(recipe))
    with pytest.raises(ConfigError, match=r"the override train.steps=\?\?\? gives no value"):
        load_recipe("omniglot-protonet-5w1s", ["train.steps=???"])


def test_interpolations_resolve_or_name_the_key():
    config = load_recipe("omniglot-protonet-5w1s", ["train.val_every=${train.ckpt_every}"])
    assert config.train.val_every == config.train.ckpt_every == 500
    with pytest.raises(ConfigError, match=r"train.steps in .* does not resolve \(Interpolation key 'nothing.here' "
                                          r"not found\); an interpolation \$\{KEY\} names another key"):
        load_recipe("omniglot-protonet-5w1s", ["train.steps=${nothing.here}"])
    with pytest.raises(ConfigError, match="train.steps in .* does not resolve .*could not be converted to Integer"):
        load_recipe("omniglot-protonet-5w1s", ["train.steps=${data.dataset}"])
    with pytest.raises(ConfigError) as caught:
        load_recipe("omniglot-protonet-5w1s", ["train.steps=${"])
    assert str(caught.value).startswith("cannot parse the override 'train.steps=${'") and "\n" not in str(caught.value)


def test_an_unknown_device_is_named_with_the_valid_ones():
    with pytest.raises(ConfigError, match=r"train.device='tpu9' in .* is not a device PyTorch knows .*; use cpu, cuda"):
        load_recipe("omniglot-protonet-5w1s", ["train.device=tpu9"])
    with pytest.raises(ConfigError,
                       match=r"train.device='meta' in .* is a meta device, which metalab does not train on"):
        load_recipe("omniglot-protonet-5w1s", ["train.device=meta"])  # a traceback from the first .item()
    assert load_recipe("omniglot-protonet-5w1s", ["train.device=cuda:1"]).train.device == "cuda:1"


@pytest.mark.parametrize("override", ["=3", "a..b=1", ".steps=2", "train.=2"])
def test_an_override_without_a_whole_key_is_refused(override):
    with pytest.raises(ConfigError, match="must look like key=value with a dotted key"):
        load_recipe("omniglot-protonet-5w1s", [override])


def test_a_recipe_path_that_is_not_there_is_not_called_an_unknown_recipe(tmp_path):
    """`metalab train missing.yaml` said "unknown recipe 'missing.yaml'"."""
    with pytest.raises(ConfigError, match="recipe file missing.yaml does not exist"):
        load_recipe("missing.yaml")
    with pytest.raises(ConfigError, match="recipe file .*/nothing/here does not exist"):
        load_recipe(str(tmp_path / "nothing" / "here"))
    with pytest.raises(ConfigError, match=f"{tmp_path} is a folder, not a recipe .* metalab train {tmp_path} --resume"):
        load_recipe(str(tmp_path))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ConfigError, match="notes.txt is not a recipe: a recipe is a YAML file"):
        load_recipe(str(tmp_path / "notes.txt"))


@pytest.mark.parametrize("override, message", [
    ("data.image_size=0",
     "data.image_size must be between 1 and 1024 pixels (or null: the data set's own size), got 0"),
    ("data.image_size=1000000000000", "data.image_size must be between 1 and 1024"),  # Pillow's OverflowError
    ("data.channels=2", "data.channels must be 1 (grey-scale), 3 (RGB) or null"),
])
def test_image_sizes_and_channels_that_cannot_work_are_refused(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_recipe("omniglot-protonet-5w1s", [override])
