"""Checkpoints: everything needed to resume exactly, written atomically with a checksum that is checked on load."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from metalab.config import upgrade_saved_config
from metalab.utils.checksum import IntegrityError, torch_load_checked, torch_save_checked

FORMAT = "metalab-checkpoint/1"
LAST = "last.pt"
BEST = "best.pt"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` (model, optimiser, scheduler, RNG, step, config, ...) atomically, with its SHA-256."""
    torch_save_checked({"format": FORMAT, **state}, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, with a clear error when it is unusable.

    Its checksum is checked first: a damaged file is refused, never used. Checkpoints written before
    checksums existed load unchecked.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; train first (metalab train RECIPE run.dir={path.parent})")
    try:
        state = torch_load_checked(path, weights_only=False)
    except IntegrityError as error:
        raise IntegrityError(f"{error}; nothing was loaded from it. {_instead(path)}") from None
    except Exception as error:
        raise ValueError(f"checkpoint {path} cannot be read ({error}); it may be corrupt. {_instead(path)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a metalab checkpoint")
    return state


def _instead(path: Path) -> str:
    """What to do when checkpoint ``path`` is unusable: the run's other checkpoint, or training again."""
    other = path.with_name(BEST if path.name == LAST else LAST)
    if not other.exists():
        return f"The run has no other checkpoint ({other.name}): train again (a new run.dir)"
    resume = f"; to resume from it, copy it over {path.parent / LAST}" if other.name == BEST else ""
    return (f"Use the run's other checkpoint: `metalab eval {path.parent} --checkpoint {other}` (predict takes "
            f"--checkpoint too){resume}; or train again")


def run_checkpoint(run_dir: str | Path, prefer: str = BEST) -> Path:
    """The checkpoint of a run to evaluate or predict with: best.pt if present, else last.pt."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist; train with "
                                f"`metalab train RECIPE run.dir={run_dir}` first")
    for name in (prefer, LAST, BEST):
        if (run_dir / name).exists():
            return run_dir / name
    raise FileNotFoundError(f"run directory {run_dir} holds no checkpoint ({BEST} or {LAST}); train it first")


def config_of(state: dict[str, Any]) -> DictConfig:
    """The config a checkpoint was trained with (keys an earlier metalab kept elsewhere moved to their place)."""
    return OmegaConf.create(upgrade_saved_config(state["config"]))
