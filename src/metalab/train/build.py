"""Build learners and optimisers from configs, and load trained runs."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig

from metalab.algorithms.base import MetaLearner
from metalab.algorithms.registry import learner_class
from metalab.config import ConfigError, compose, learner_options, load_recipe, speed_options
from metalab.nn.library_backbones import weights_from_checkpoint
from metalab.train.checkpoint import config_of, load_checkpoint, run_checkpoint


def build_learner(config: DictConfig, input_shape: tuple[int, ...]) -> MetaLearner:
    """The config's learner; a meta-RL learner also gets its environment family (spaces, episode length)."""
    from metalab.data.sources import is_environment

    cls = learner_class(config.learner.name)
    acts = cls.task_kind == "reinforcement"
    if acts != is_environment(config):
        raise ConfigError(
            f"learner {config.learner.name!r} {'acts in environments' if acts else 'learns from data'} but "
            f"data.dataset={config.data.dataset!r} is {'an environment' if not acts else 'a data set'}: pair meta-RL "
            f"learners (maml-rl, emaml, rl2) with environments (navigation2d, bandit-K, tabular-mdp, cheetah-dir, "
            f"cheetah-vel, metaworld-ml1-SKILL) and the others with data sets")
    if acts:
        from metalab.envs.families import environment_family

        environment = environment_family(config.data.dataset, config.data.horizon)
        return cls(learner_options(config), tuple(input_shape), speed_options(config),
                   environment=environment)  # type: ignore[call-arg]
    return cls(learner_options(config), tuple(input_shape), speed_options(config))


#: the recipe of the "good embedding" baseline that ``metalab predict --backbone`` builds without training
EMBEDDING_RECIPE = "miniimagenet-pretrained-protonet-5w5s"


def embedding_learner(backbone: str, image_size: int) -> tuple[MetaLearner, DictConfig]:
    """The "good embedding" baseline, untrained: :data:`EMBEDDING_RECIPE`'s ProtoNet with ``backbone`` (e.g. a
    pretrained ``timm:resnet18(pretrained=true)``) for RGB images of ``image_size``, in evaluation mode, and its
    config."""
    config = load_recipe(EMBEDDING_RECIPE)
    config.learner.backbone, config.data.image_size, config.data.channels = backbone, image_size, 3
    config.name = f"{EMBEDDING_RECIPE} with learner.backbone={backbone}"
    learner = build_learner(config, (3, image_size, image_size))
    learner.eval()
    return learner, config


def build_optimizer(config: DictConfig,
                    learner: MetaLearner) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    optim = config.optim
    params = [p for p in learner.parameters() if p.requires_grad]
    if optim.name == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(params, lr=optim.lr, weight_decay=optim.weight_decay)
    elif optim.name == "sgd":
        optimizer = torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
    else:
        raise ValueError(f"optim.name must be 'adam' or 'sgd', got {optim.name!r}")
    return optimizer, build_scheduler(config, optimizer)


def build_scheduler(config: DictConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Constant, step (``optim.lr_step``) or linear (``optim.lr_final``) learning rate over ``train.steps``.

    The linear schedule is Reptile's: at step ``i`` (0-based) of ``n`` the lr is
    ``lr + (i / n) * (lr_final - lr)``, so the last step uses ``lr / n`` when ``lr_final`` is 0, as in
    the authors' code; steps past ``n`` (a resumed run with more steps) keep ``lr_final``.
    """
    optim = config.optim
    if optim.lr_final is None:
        if optim.lr_step > 0:
            return torch.optim.lr_scheduler.StepLR(optimizer, step_size=optim.lr_step, gamma=optim.lr_gamma)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if optim.lr_step > 0:
        raise ConfigError(f"optim.lr_final={optim.lr_final} (linear annealing) and optim.lr_step={optim.lr_step} "
                         f"(step decay) are two schedules; set optim.lr_step=0 or optim.lr_final=null")
    if optim.lr <= 0:
        raise ConfigError(f"optim.lr_final anneals from optim.lr, which must be positive; got optim.lr={optim.lr}")
    total = max(config.train.steps, 1)
    final_fraction = optim.lr_final / optim.lr
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 1.0 + min(step / total, 1.0) * (final_fraction - 1.0))


def checkpoint_path(run_dir: str | Path, checkpoint: str | Path | None = None) -> Path:
    """The checkpoint that :func:`load_run` reads: ``checkpoint`` if given (a path, or a file name in the run
    directory, e.g. ``last.pt``), else the run's ``best.pt``, else its ``last.pt``.

    The run directory must exist in either case: a checkpoint is always a checkpoint of a run.
    """
    run_dir = Path(run_dir)
    if checkpoint is None:
        return run_checkpoint(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist; --checkpoint {checkpoint} picks one "
                                f"checkpoint of a run, so give that run's directory too "
                                f"(the run.dir it was trained with)")
    path = Path(checkpoint)
    if not path.exists() and (run_dir / path).exists():
        path = run_dir / path
    if not path.is_file():
        held = ", ".join(sorted(p.name for p in run_dir.glob("*.pt"))) or "no checkpoint"
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist (neither as given nor in {run_dir}, which "
                                f"holds {held})")
    return path


def is_out_of_memory(error: BaseException) -> bool:
    """Whether PyTorch (or Python) ran out of memory: the CPU allocator says so in a RuntimeError."""
    return isinstance(error, (MemoryError, torch.OutOfMemoryError)) or "can't allocate memory" in str(error)


def load_run(run_dir: str | Path, checkpoint: str | Path | None = None,
             overrides: Sequence[str] = ()) -> tuple[MetaLearner, DictConfig, dict]:
    """The trained learner of a run (best checkpoint by default), its config and the checkpoint state.

    ``checkpoint`` picks another checkpoint of the run (see :func:`checkpoint_path`). ``overrides``
    (``key=value``) change the saved config before the learner is built, e.g.
    ``learner.inner_steps_test=10``; they must keep the shapes of the trained weights.
    """
    path = checkpoint_path(run_dir, checkpoint)
    state = load_checkpoint(path)
    if state.get("online"):
        raise ValueError(f"{run_dir} is a run of `metalab online` (one learner per method over a task stream): its "
                         f"results are in {Path(run_dir) / 'results.json'} and efficiency.csv; `metalab plot "
                         f"{run_dir}` draws them")
    learner, config = learner_of(state, path, overrides)
    return learner, config, state


def learner_of(state: dict, path: str | Path, overrides: Sequence[str] = ()) -> tuple[MetaLearner, DictConfig]:
    """The trained learner (in eval mode) and config of a loaded checkpoint ``state`` (read from ``path``), with
    ``overrides`` applied as :func:`load_run` applies them."""
    config = compose(config_of(state), list(overrides), origin=str(path))
    try:
        with weights_from_checkpoint():  # the checkpoint's weights replace a backbone's published or local ones
            learner = build_learner(config, tuple(state["input_shape"]))
    except (RuntimeError, MemoryError) as error:  # e.g. learner.hidden=100000: PyTorch cannot allocate the weights
        if not overrides or not is_out_of_memory(error):
            raise
        reason = str(error).splitlines()[0].split("DefaultCPUAllocator: ")[-1].split(". Error code")[0]
        raise ValueError(f"the overrides {' '.join(overrides)} build a learner too large for memory ({reason}); only "
                         f"options that keep the trained weights' shapes apply to a trained run") from None
    try:
        learner.load_state_dict(state["model"])
    except RuntimeError as error:
        if not overrides:
            raise
        raise ValueError(f"the overrides {' '.join(overrides)} change the learner's weights, so {path} no longer "
                         f"loads into it; only options that keep the trained weights' shapes (e.g. inner steps, "
                         f"learning rates at test, precision) apply to a trained run. "
                         f"{str(error).splitlines()[0]}") from None
    learner.eval()
    return learner, config
