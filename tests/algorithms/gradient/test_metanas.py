"""MetaNAS: alpha meta-learns (after the warm-up), and with alpha frozen one-hot a meta-step is Reptile's on the
derived network, update for update; the temperature schedule; the speed engine equals the reference."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from metalab.algorithms.gradient.metanas import MetaNAS, MetaNASOptions
from metalab.algorithms.gradient.reptile import CarriedAdamMoments, Reptile, ReptileOptions
from metalab.data.task import Task
from metalab.nas.genotype import Genotype
from metalab.nas.space import alpha_names, derived_classifier, derived_names

sys.path.insert(0, str(Path(__file__).parents[2] / "nas"))
from test_genotype import one_hot_alpha

OPS = ["none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"]
SMALL = dict(operations=OPS, cells=2, channels=4, nodes=2, reductions=[1], ways=3, inner_steps=3,
             inner_steps_test=2, inner_lr=0.01, alpha_lr=0.02, warm_up_steps=0)


def tasks(count=2, ways=3, shots=2, queries=2, size=16, seed=0, dtype=torch.float32) -> Task:
    generator = torch.Generator().manual_seed(seed)

    def labels(n):
        return torch.arange(ways).repeat_interleave(n).expand(count, -1)

    return Task(torch.rand(count, ways * shots, 1, size, size, generator=generator, dtype=dtype), labels(shots),
                torch.rand(count, ways * queries, 1, size, size, generator=generator, dtype=dtype), labels(queries))


def alpha_gradients(**options) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    learner = MetaNAS(MetaNASOptions(**{**SMALL, **options}), (1, 16, 16)).double()
    learner.meta_step(tasks(dtype=torch.float64))
    params = learner.parameters_by_name()
    return {name: params[name].grad for name in alpha_names(learner.network)}


def test_alpha_receives_meta_gradients_after_the_warm_up():
    full = alpha_gradients(alpha_meta_scale=1.0)
    assert all(float(grad.abs().max()) > 1e-4 for grad in full.values())
    scaled = alpha_gradients(alpha_meta_scale=0.6)  # eps_alpha / eps_w = 0.6: the same step, 0.6 times as long
    assert all(torch.allclose(scaled[n], 0.6 * full[n], atol=1e-15) for n in full)
    frozen = alpha_gradients(warm_up_steps=1)  # during the warm-up alpha neither adapts nor meta-learns
    assert all(float(grad.abs().max()) == 0.0 for grad in frozen.values())
    learner = MetaNAS(MetaNASOptions(**{**SMALL, "warm_up_steps": 1}), (1, 16, 16))
    assert not set(alpha_names(learner.network)) & set(learner.adapted_names())
    learner.meta_step(tasks())
    assert set(alpha_names(learner.network)) <= set(learner.adapted_names())  # the warm-up is over


def test_with_alpha_frozen_one_hot_a_meta_step_is_reptile_on_the_derived_network():
    torch.manual_seed(0)
    genotype = Genotype([[("sep_conv_3x3", 0), ("skip_connect", 1)], [("max_pool_3x3", 0), ("sep_conv_3x3", 2)]],
                        [[("skip_connect", 0), ("max_pool_3x3", 1)], [("sep_conv_3x3", 1), ("skip_connect", 2)]],
                        [2, 3], [2, 3])
    options = {**SMALL, "alpha_lr": 0.0, "alpha_meta_scale": 0.0, "prune_threshold": 0.0}
    metanas = MetaNAS(MetaNASOptions(**options), (1, 16, 16)).double()
    body = metanas.network.body
    with torch.no_grad():
        body.alpha_normal.copy_(one_hot_alpha(genotype.normal, OPS, 2))
        body.alpha_reduce.copy_(one_hot_alpha(genotype.reduce, OPS, 2))
    reptile_options = {k: v for k, v in options.items() if k in ReptileOptions.__dataclass_fields__}
    reptile = Reptile(ReptileOptions(**reptile_options), (1, 16, 16)).double()
    space = metanas.body.space
    reptile.network = derived_classifier(genotype, space, (1, 16, 16), 3, affine=False).double()
    names = {f"body.{d}": f"body.{s}" for d, s in derived_names(body, genotype).items()}
    names.update({"head.weight": "head.weight", "head.bias": "head.bias"})
    state = metanas.network.state_dict()
    reptile.network.load_state_dict({d: state[s] for d, s in names.items()})
    reptile.adam_moments = CarriedAdamMoments(reptile.parameters_by_name()).double()
    for step in range(2):  # the second step starts from the carried Adam moments
        batch = tasks(seed=step, dtype=torch.float64)
        ours, theirs = metanas.meta_step(batch), reptile.meta_step(batch)
        # float64 rounding apart (the one-shot network's backward sums more, exactly zero, terms in another order)
        assert torch.allclose(ours["loss"], theirs["loss"], atol=1e-13, rtol=0)
        assert torch.equal(ours["accuracy"], theirs["accuracy"])
        mine = metanas.parameters_by_name()
        for derived, source in names.items():
            if derived in dict(reptile.network.named_parameters()):
                assert torch.allclose(reptile.parameters_by_name()[derived].grad, mine[source].grad,
                                      atol=1e-13, rtol=0), derived
        for name in alpha_names(metanas.network):
            assert float(mine[name].grad.abs().max()) == 0.0
        for learner in (metanas, reptile):  # the trainer's SGD with lr 1 (the meta step)
            with torch.no_grad():
                for p in learner.parameters():
                    if p.grad is not None:
                        p -= p.grad
            learner.zero_grad()
    test = tasks(seed=5, dtype=torch.float64)
    assert torch.allclose(metanas.predict(test), reptile.predict(test), atol=1e-12, rtol=0)


def test_temperature_anneals_linearly_within_each_task():
    learner = MetaNAS(MetaNASOptions(**{**SMALL, "inner_steps": 5}), (1, 16, 16))
    assert [learner.temperature(k, 5) for k in range(5)] == pytest.approx([1.0, 0.7625, 0.525, 0.2875, 0.05])
    seen = []
    original = learner.network.body.forward

    def spy(x):
        seen.append(learner.network.body.temperature)
        return original(x)

    learner.network.body.forward = spy
    learner.meta_step(tasks(count=1))
    assert seen == pytest.approx([1.0, 0.7625, 0.525, 0.2875, 0.05, 0.05])  # five steps, then the queries at T_min
    frozen = MetaNAS(MetaNASOptions(**{**SMALL, "warm_up_steps": 10}), (1, 16, 16))
    assert frozen.temperature(3, 5) == 1.0  # the warm-up keeps T = 1


def test_pruning_removes_weak_operations_at_evaluation():
    learner = MetaNAS(MetaNASOptions(**{**SMALL, "prune_threshold": 0.2}), (1, 16, 16))
    alpha = torch.tensor([[0.0, 0.0, -1.0, -9.0]])
    pruned = learner.pruned({"body.alpha_normal": alpha, "body.alpha_reduce": alpha})["body.alpha_normal"]
    weights = torch.softmax(pruned / learner.temperature(1, 2), -1)
    assert torch.equal(weights[0, 2:], torch.zeros(2)) and torch.allclose(weights[0, :2], torch.full((2,), 0.5))


def test_the_speed_engine_equals_the_reference():
    from metalab.nn.execution import SpeedOptions

    grads = []
    for engine in ("reference", "accel"):
        torch.manual_seed(0)
        learner = MetaNAS(MetaNASOptions(**SMALL), (1, 16, 16), SpeedOptions(engine=engine)).double()
        learner.meta_step(tasks(dtype=torch.float64))
        grads.append([p.grad for p in learner.parameters() if p.grad is not None])
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="temperature_min"):
        MetaNAS(MetaNASOptions(**{**SMALL, "temperature_min": 0.0}), (1, 16, 16))
    with pytest.raises(ValueError, match="learner.channels"):
        MetaNAS(MetaNASOptions(**{**SMALL, "channels": 3}), (1, 16, 16))
    with pytest.raises(ValueError, match="image inputs"):
        MetaNAS(MetaNASOptions(**SMALL), (10,))


def test_metanas_trains_evaluates_and_plots_through_the_cli(image_folders, tmp_path, capsys):
    from metalab.cli import main

    run = tmp_path / "run"
    overrides = [
        "data.dataset=folder", f"data.train_split={image_folders['train']}", f"data.val_split={image_folders['val']}",
        f"data.test_split={image_folders['test']}", "data.invert_user_images=false", "data.image_size=16",
        "data.channels=1", "task.ways=3", "task.shots=2", "task.queries=1", "task.meta_batch=2", "eval.ways=3",
        "eval.queries=2", "eval.episodes=4", "eval.val_episodes=2", "learner.ways=3", "learner.channels=4",
        "learner.cells=2", "learner.nodes=2", "learner.reductions=[1]", "learner.inner_steps=2",
        "learner.inner_steps_test=2", "learner.inner_batch=3", "learner.inner_batch_test=3", "learner.warm_up_steps=1",
        "train.steps=3", "train.val_every=3", "train.progress=false", "run.tensorboard=false", f"run.dir={run}",
    ]
    assert main(["train", "omniglot-metanas-20w1s", *overrides]) == 0
    assert main(["eval", str(run), "--json"]) == 0
    assert 0.0 <= json.loads(capsys.readouterr().out.strip().splitlines()[-1])["accuracy"] <= 1.0
    assert main(["plot", str(run)]) == 0
    drawn = capsys.readouterr().out.split()
    assert drawn[-2].endswith("cell.png") and drawn[-1].endswith("alpha.png")  # alpha over the meta-steps
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    alpha = next(r for r in logged if r.get("kind") == "train")
    for kind in ("normal", "reduce"):  # each cell's mean operation weights: a distribution over the operations
        weights = [v for k, v in alpha.items() if k.startswith(f"alpha/{kind}/")]
        assert len(weights) == 7 and abs(sum(weights) - 1.0) < 1e-5
    assert Genotype.load(run / "genotype.json").nodes == 2
