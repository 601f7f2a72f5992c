"""Checkpoints: everything needed to resume exactly, written atomically."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from metalab.config import upgrade_saved_config
from metalab.utils.io import atomic_torch_save

FORMAT = "metalab-checkpoint/1"
LAST = "last.pt"
BEST = "best.pt"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` (model, optimiser, scheduler, RNG, step, config, ...) atomically."""
    atomic_torch_save({"format": FORMAT, **state}, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, with a clear error when it is unusable."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; train first (metalab train RECIPE run.dir={path.parent})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise ValueError(f"checkpoint {path} cannot be read ({error}); it may be corrupt: use the other "
                         f"checkpoint of the run ({LAST} or {BEST}) or train again") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a metalab checkpoint")
    return state


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
