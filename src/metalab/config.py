"""Recipes (named YAML configs) and their schema, with ``key=value`` overrides via OmegaConf.

A config has fixed sections (data, task, eval, optim, train, run) checked against dataclasses, and
a ``learner`` section checked against the chosen learner's own ``Options`` dataclass. Any unknown
key, in a recipe file or an override, is an error that names the nearest valid key.
"""
from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, is_dataclass, make_dataclass
from importlib import resources
from pathlib import Path
from typing import Any, cast

import torch
import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from metalab.accel.options import SpeedOptions, check_speed_options
from metalab.algorithms.registry import learner_class
from metalab.train.online import OnlineOptions


@dataclass
class DataConfig:
    #: "omniglot", "miniimagenet", "tieredimagenet", "cub", "cifar-fs", "fc100", "folder" (split = a path), a
    #: regression family ("sinusoid", "gp", "sinusoid-line", "ambiguous"), or a heterogeneous task set:
    #: "hetero-regression" (HSML's four function families) or "hetero-omniglot" (transformed Omniglot + digits), see
    #: :mod:`metalab.data.mixtures`.
    dataset: str = "omniglot"
    #: data root; None -> --data-root, then $METALAB_DATA, then the per-user data dir.
    root: str | None = None
    train_split: str = "vinyals-train"
    val_split: str | None = "vinyals-val"
    test_split: str = "vinyals-test"
    #: input size; None -> the data set's default (28 for Omniglot, 84 for mini-ImageNet).
    image_size: int | None = None
    channels: int | None = None
    #: invert user images so that dark strokes on light paper look like the preprocessed Omniglot.
    invert_user_images: bool = False
    #: heterogeneous task sets: family name -> mixing weight (normalised); empty = all the set's families, equally.
    families: dict[str, float] = field(default_factory=dict)
    #: give each task's family to the learner (``Task.group``); off: the family stays the evaluator's side table.
    reveal_groups: bool = False
    #: steps per episode of an environment (meta-RL); None -> the environment's own (100 for navigation2d).
    horizon: int | None = None
    #: meta-RL: train on a fixed set of this many tasks (the train split's stream cycles through its first
    #: task_pool tasks, PEARL's n_train_tasks); None -> a new task at every index of the stream.
    task_pool: int | None = None
    #: augmentation of the training tasks' images through torchvision transforms, e.g. [random_crop(padding=8),
    #: color_jitter(0.4, 0.4, 0.4), hflip] (:mod:`metalab.data.augment`); never applied to evaluation episodes.
    augment: list[str] = field(default_factory=list)


@dataclass
class EpisodeConfig:
    """The shape of an episode, the same keys for training (``task.``) and evaluation (``eval.``)."""

    #: classes per episode (N-way).
    ways: int = 5
    #: support examples per class (K-shot).
    shots: int = 1
    #: query examples per class.
    queries: int = 15
    #: draw all ways of an episode from one group (e.g. one Omniglot alphabet).
    within_group: bool = False


@dataclass
class TaskConfig(EpisodeConfig):
    """Meta-training episodes."""

    meta_batch: int = 1


@dataclass
class EvalConfig(EpisodeConfig):
    """Validation and test episodes (the evaluation protocol)."""

    episodes: int = 1000
    seed: int = 0
    val_episodes: int = 200
    val_seed: int = 1
    within_group: bool = False


@dataclass
class OptimConfig:
    name: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    #: StepLR: multiply lr by lr_gamma every lr_step steps (0 = constant lr).
    lr_step: int = 0
    lr_gamma: float = 0.5
    #: linear annealing: the lr goes in a straight line from ``lr`` at step 0 to ``lr_final`` at
    #: ``train.steps`` (Reptile's meta step, 1.0 -> 0); None = off. Excludes ``lr_step``.
    lr_final: float | None = None
    #: clip the global gradient norm (None = no clipping).
    grad_clip: float | None = None


@dataclass
class TrainConfig:
    steps: int = 10000
    val_every: int = 500
    ckpt_every: int = 500
    log_every: int = 50
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    #: wall-clock budget of this invocation's training loop in minutes (None = train.steps decides).
    #: When it runs out, the step in progress is the last: validation, checkpoint, then the test.
    max_minutes: float | None = None


@dataclass
class RunConfig:
    #: run directory (checkpoints, logs, results); None -> runs/<recipe name>.
    dir: str | None = None
    tensorboard: bool = True


@dataclass
class BaseConfig:
    name: str = "custom"
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    #: execution options: time and memory, never results (:class:`metalab.accel.options.SpeedOptions`)
    speed: SpeedOptions = field(default_factory=SpeedOptions)


@dataclass
class OnlineConfig(OnlineOptions):
    """Online meta-learning over a task stream (``metalab online``): the section only an online recipe has; the
    schedule and the update of :class:`metalab.train.online.OnlineOptions`, plus what the run takes."""

    #: the methods to run on the same stream from the same initial weights: ftml, ftl, toe, tfs.
    methods: list[str] = field(default_factory=lambda: ["ftml", "ftl", "toe", "tfs"])
    #: the first tasks of each stage of the stream, in stream order; None: every task.
    per_stage: int | None = None
    #: held-out test images per class of each task (its accuracy is measured on them).
    queries: int = 10


#: keys that moved into the ``speed`` group (execution options), old -> new
MOVED_TO_SPEED = {
    "train.threads": "speed.threads",
    "train.reuse_freed_memory": "speed.reuse_freed_memory",
    "eval.batch": "speed.eval_batch",
    **{f"learner.{key}": f"speed.{key}" for key in (
        "task_chunk", "query_chunk", "checkpoint", "checkpoint_inner_loop", "channels_last", "inner_channels_last",
        "fold_conv_norm", "native_kernels", "winograd", "precision")},
}


#: keys whose value is a mapping of the user's own names (their keys are not config keys)
FREE_MAPPINGS = {"data.families"}


class ConfigError(ValueError):
    """A recipe or override that cannot be used; the message says how to fix it."""


def recipe_dir() -> Path:
    return Path(str(resources.files("metalab") / "recipes"))


def recipe_names() -> list[str]:
    return sorted(p.stem for p in recipe_dir().glob("*.yaml"))


def looks_like_path(name: str) -> bool:
    """Whether a command-line word names a file or folder rather than a packaged recipe (recipe names
    have no folder separator and no YAML suffix)."""
    return (os.sep in name or "/" in name or name.startswith(("~", "."))
            or Path(name).suffix in (".yaml", ".yml"))


def recipe_path(name: str) -> Path:
    """A packaged recipe by name, or a path to a YAML file; the error says which of the two was not found."""
    if not name.strip():
        raise ConfigError("the recipe is empty: give a packaged recipe's name (`metalab recipes` lists them) "
                          "or a YAML file")
    candidate = Path(name)
    if candidate.is_dir():
        raise ConfigError(f"{name} is a folder, not a recipe (a packaged recipe's name or a YAML file); to continue "
                          f"the run in that folder: metalab train {name} --resume")
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return candidate
    if candidate.is_file():
        raise ConfigError(f"{name} is not a recipe: a recipe is a YAML file (.yaml or .yml) or a packaged recipe's "
                          f"name (`metalab recipes` lists them)")
    if looks_like_path(name):
        raise ConfigError(f"recipe file {name} does not exist; give the path of a YAML recipe, or the name of a "
                          f"packaged recipe (`metalab recipes` lists them)")
    path = recipe_dir() / f"{name}.yaml"
    if not path.exists():
        near = difflib.get_close_matches(name, recipe_names(), n=3)
        hint = f" Did you mean {', '.join(near)}?" if near else ""
        raise ConfigError(f"unknown recipe {name!r}.{hint} `metalab recipes` lists them all.")
    return path


def _key_paths(schema: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every key of a dataclass schema."""
    paths = []
    for f in fields(schema):
        path = f"{prefix}{f.name}"
        paths.append(path)
        default = f.default_factory() if callable(f.default_factory) else None
        if is_dataclass(default):
            paths += _key_paths(default, path + ".")
    return paths


def _described(value: Any) -> str:
    """A value as an error message shows it: its kind and, shortened, itself."""
    kind = "a list" if isinstance(value, list) else "null" if value is None else "the value"
    text = repr(value)
    return kind if value is None else f"{kind} {text if len(text) <= 40 else text[:37] + '...'}"


def _check_keys(given: Any, schema_paths: list[str], prefix: str, origin: str) -> None:
    """Every key of ``given`` (a plain container, interpolations unresolved) is in the schema, and every
    section of the schema given is a mapping of keys."""
    if not isinstance(given, dict):
        return
    for key, value in given.items():
        path = f"{prefix}{key}"
        if path not in schema_paths and path in MOVED_TO_SPEED:
            raise ConfigError(f"{path} in {origin} is now {MOVED_TO_SPEED[path]}: execution options (time and memory, "
                              f"never results) are one group, `speed` (see `metalab show RECIPE`)")
        if path not in schema_paths:
            near = difflib.get_close_matches(path, schema_paths, n=1, cutoff=0.5)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"unknown config key {path!r} in {origin}.{hint}")
        _check_section(path, value, [p for p in schema_paths if p.startswith(path + ".")], origin)
        if path not in FREE_MAPPINGS:
            _check_keys(value, schema_paths, path + ".", origin)


def _check_section(path: str, value: Any, members: list[str], origin: str) -> None:
    """A section (``task``, ``train``, ...) must be given as keys, not replaced by a list or a single value."""
    if members and not isinstance(value, dict):
        first = members[0]
        raise ConfigError(f"{path} in {origin} is a section of keys ({', '.join(m.split('.')[-1] for m in members[:4])}"
                          f"{', ...' if len(members) > 4 else ''}), not {_described(value)}; set its keys one by one, "
                          f"e.g. {first}=... (`metalab show RECIPE` prints them)")


def _mandatory(values: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the values written ``???`` (OmegaConf's mandatory value) in a plain container."""
    if not isinstance(values, dict):
        return []
    paths = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        paths += [path] if value == "???" else _mandatory(value, path + ".")
    return paths


def _leaves(values: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every value (not section) of a plain container."""
    if not isinstance(values, dict):
        return [prefix.rstrip(".")] if prefix else []
    return [path for key, value in values.items() for path in _leaves(value, f"{prefix}{key}.")]


def _check_given_values(given: dict, overrides: dict, origin: str) -> None:
    """A ``???`` of the recipe (a value it leaves to the user) needs an override; an override cannot be ``???``.

    OmegaConf's merge would otherwise put the schema's default in its place without a word.
    """
    empty = _mandatory(overrides)
    if empty:
        raise ConfigError(f"the override {empty[0]}=??? gives no value ('???' marks a value left to the user in a "
                          f"recipe); give {empty[0]} a value, e.g. {empty[0]}=VALUE")
    left = [key for key in _mandatory(given) if key not in _leaves(overrides)]
    if left:
        raise ConfigError(f"{left[0]} has no value: {origin} marks it '???', a value it leaves to you; give it on the "
                          f"command line, e.g. {left[0]}=VALUE")


def _plain(config: DictConfig | ListConfig, origin: str) -> dict:
    """``config`` as plain dicts and lists, interpolations and ``???`` left as they are written."""
    plain = OmegaConf.to_container(config, resolve=False)
    if not isinstance(plain, dict):
        raise ConfigError(f"{origin} must be a mapping of config sections (name, data, task, eval, optim, train, run, "
                          f"speed, learner), not {_described(plain)}")
    return plain


def _parse_overrides(overrides: list[str]) -> DictConfig:
    for item in overrides:
        key = item.split("=", 1)[0]
        if "=" not in item or not all(part.strip() for part in key.split(".")):
            raise ConfigError(f"override {item!r} must look like key=value with a dotted key (e.g. train.steps=2000)")
    for item in overrides:  # one by one, to name the one that fails
        try:
            OmegaConf.from_dotlist([item])
        except OmegaConfBaseException as error:
            raise ConfigError(f"cannot parse the override {item!r}: {str(error).splitlines()[0]}") from None
        except yaml.YAMLError as error:  # the value is read as YAML
            reason = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise ConfigError(f"cannot parse the override {item!r}: its value is not valid YAML ({reason}); quote "
                              f"text with YAML's special characters, e.g. 'run.dir=\"my: runs\"'") from None
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as error:  # e.g. a key given both as a value and as a section
        raise ConfigError(f"the overrides {' '.join(overrides)} do not fit together: "
                          f"{str(error).splitlines()[0]}") from None


def compose(recipe: dict | list | DictConfig | ListConfig, overrides: Sequence[str] = (),
            origin: str = "recipe") -> DictConfig:
    """Validate a recipe plus ``key=value`` overrides against the schema; returns the full config.

    Every way a config can be wrong is a :class:`ConfigError` naming the key: an unknown key, a section
    replaced by a list or a value, a value of the wrong type or out of range, a ``???`` left without a
    value, an interpolation ``${...}`` that does not resolve.
    """
    try:
        recipe = OmegaConf.create(recipe) if isinstance(recipe, (dict, list)) else recipe
    except OmegaConfBaseException as error:
        raise ConfigError(f"{origin} cannot be read as a config: {str(error).splitlines()[0]}") from None
    override_cfg = _parse_overrides(list(overrides))
    given = _plain(recipe, origin)
    given_overrides = _plain(override_cfg, "the command-line overrides")
    _check_given_values(given, given_overrides, origin)
    for values, where in ((given, origin), (given_overrides, "the command-line overrides")):
        if "learner" in values:  # before its name is read
            _check_section("learner", values["learner"], ["learner.name"], where)
    name = (given_overrides.get("learner") or {}).get("name") or (given.get("learner") or {}).get("name")
    if not name:
        raise ConfigError(f"{origin} has no learner.name; set it to one of the registered learners")
    options_cls = learner_class(str(name)).Options
    sections: list[tuple[str, Any, Any]] = [("learner", options_cls, field(default_factory=options_cls))]
    if "online" in given:  # an online recipe (metalab online): its own section
        sections.append(("online", OnlineConfig, field(default_factory=OnlineConfig)))
    paths = _key_paths(BaseConfig) + [path for section, cls, _ in sections
                                      for path in [section, *(f"{section}.{p}" for p in _key_paths(cls))]]
    _check_keys(given, paths, "", origin)
    _check_keys(given_overrides, paths, "", "the command-line overrides")
    schema = OmegaConf.structured(make_dataclass("Config", sections, bases=(BaseConfig,)))
    try:
        config = OmegaConf.merge(schema, recipe, override_cfg)
        # every value, interpolations resolved: what the trainer will read
        OmegaConf.to_container(config, resolve=True, throw_on_missing=True)
    except InterpolationResolutionError as error:
        key = error.full_key
        raise ConfigError(f"{key} in {origin} or the overrides does not resolve ({str(error).splitlines()[0]}); an "
                          f"interpolation ${{KEY}} names another key of the config, e.g. {key}=${{train.seed}}, "
                          f"and must give a value of the key's type") from None
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", "")
        reason = str(error).splitlines()[0]
        raise ConfigError(f"bad value for {key or 'a config key'} in {origin} or the overrides: {reason}") from None
    assert isinstance(config, DictConfig)  # merged into the structured schema
    _check_ranges(config, origin)
    OmegaConf.set_readonly(config, False)
    OmegaConf.set_struct(config, True)
    return config


#: counts that must be at least 1 or 0, with what they count (for the error message)
_AT_LEAST = {
    "task.ways": (1, "classes per training task"),
    "task.shots": (1, "support examples per class"),
    "task.queries": (1, "query examples per class"),
    "task.meta_batch": (1, "tasks per meta-iteration"),
    "eval.ways": (1, "classes per evaluation episode"),
    "eval.shots": (1, "support examples per class"),
    "eval.queries": (1, "query examples per class"),
    "eval.episodes": (1, "test episodes"),
    "eval.val_episodes": (0, "validation episodes; 0 = no validation"),
    "train.steps": (1, "meta-iterations"),
    "train.val_every": (0, "steps between validations; 0 = no validation"),
    "train.ckpt_every": (1, "steps between checkpoints"),
    "train.log_every": (1, "steps between log lines"),
    "optim.lr_step": (0, "steps between lr decays; 0 = constant"),
}


#: the largest data.image_size: an episode of larger images holds more than few-shot learners use (and than
#: memory holds); resize such images first
MAX_IMAGE_SIZE = 1024
#: the kinds of torch device that metalab trains and evaluates on, and how to name them in train.device
DEVICE_TYPES = ("cpu", "cuda", "mps")
DEVICES = ("cpu", "cuda", "cuda:N (GPU N)", "mps")


def _check_ranges(config: DictConfig, origin: str) -> None:
    """Refuse counts that cannot work (a meta-batch of 0 tasks, 0 test episodes, ...), naming the key."""
    for key, (low, meaning) in _AT_LEAST.items():
        value = OmegaConf.select(config, key)
        if value < low:
            raise ConfigError(f"{key} must be >= {low} ({meaning}), got {value} in {origin} or the overrides")
    size, channels = config.data.image_size, config.data.channels
    if size is not None and not 1 <= size <= MAX_IMAGE_SIZE:
        raise ConfigError(f"data.image_size must be between 1 and {MAX_IMAGE_SIZE} pixels (or null: the data set's "
                          f"own size), got {size} in {origin} or the overrides")
    if channels not in (None, 1, 3):
        raise ConfigError(f"data.channels must be 1 (grey-scale), 3 (RGB) or null (the data set's own), got {channels} "
                          f"in {origin} or the overrides")
    from metalab.data.augment import parse_operation

    for operation in config.data.augment:
        try:
            parse_operation(operation)
        except ValueError as error:
            raise ConfigError(f"{error}; in {origin} or the overrides") from None
    minutes = config.train.max_minutes
    if minutes is not None and not minutes >= 0:
        raise ConfigError(f"train.max_minutes must be >= 0 (or null: no time budget), got {minutes}")
    try:
        device = torch.device(config.train.device)
    except (RuntimeError, ValueError, TypeError) as error:
        raise ConfigError(f"train.device={config.train.device!r} in {origin} or the overrides is not a device "
                          f"PyTorch knows ({str(error).splitlines()[0]}); use {', '.join(DEVICES)}") from None
    if device.type not in DEVICE_TYPES:
        raise ConfigError(f"train.device={config.train.device!r} in {origin} or the overrides is a {device.type} "
                          f"device, which metalab does not train on; use {', '.join(DEVICES)}")
    try:
        check_speed_options(SpeedOptions(**cast("dict[str, Any]", OmegaConf.to_container(config.speed))))
    except ValueError as error:
        raise ConfigError(f"{error} in {origin} or the overrides") from None


def load_recipe(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """A packaged recipe (or YAML path) with overrides applied and validated."""
    path = recipe_path(name)
    try:
        raw = OmegaConf.load(path)
    except Exception as error:  # YAML syntax errors come in several types
        raise ConfigError(f"recipe {path} is not valid YAML: {error}") from None
    return compose(raw, overrides, origin=str(path))


def learner_options(config: DictConfig) -> Any:
    """The learner section as an instance of the learner's Options dataclass."""
    return OmegaConf.to_object(config.learner)


def speed_options(config: DictConfig) -> SpeedOptions:
    """The ``speed`` section as :class:`SpeedOptions`."""
    return cast(SpeedOptions, OmegaConf.to_object(config.speed))  # the section's structured type


def upgrade_saved_config(saved: dict) -> dict:
    """A config saved by an earlier metalab (a checkpoint's) with moved keys put where they are now.

    Execution options were spread over ``learner``, ``train`` and ``eval`` before they became the ``speed``
    group; their values move there unchanged.
    """
    upgraded = {section: dict(values) if isinstance(values, dict) else values for section, values in saved.items()}
    for old, new in MOVED_TO_SPEED.items():
        section, key = old.split(".")
        values = upgraded.get(section)
        if isinstance(values, dict) and key in values:
            upgraded.setdefault("speed", {})[new.split(".")[1]] = values.pop(key)
    return upgraded


def to_yaml(config: DictConfig) -> str:
    return OmegaConf.to_yaml(config)
