"""Make a zoo entry from a trained run: its checkpoint's weights and resolved config (what rebuilding the learner
needs, without the optimiser's state), their SHA-256 and size, and its test score, into a zoo's manifest."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from metalab.train.build import checkpoint_path
from metalab.train.checkpoint import FORMAT, load_checkpoint
from metalab.utils.checksum import torch_save_checked
from metalab.utils.io import atomic_write_text
from metalab.zoo.registry import MANIFEST, ZOO_FORMAT, file_sha256

#: the checkpoint keys a zoo model keeps: enough to rebuild the learner and say where it came from
KEPT = ("model", "config", "input_shape", "step", "computed_with")
#: the fields of `metalab eval --json` that a zoo entry records as its accuracy
ACCURACY_FIELDS = ("mean", "ci95", "episodes", "ways", "shots", "queries", "seed", "split", "step")


def build_entry(run_dir: str | Path, name: str, zoo_dir: str | Path, evaluation: dict[str, Any],
                details: dict[str, Any] | None = None, url: str | None = None, checkpoint: str | None = None,
                zoo_version: int | None = None) -> dict[str, Any]:
    """Write zoo model ``name`` from the run in ``run_dir`` into the zoo in ``zoo_dir`` and return its record.

    ``evaluation``: the run's score as ``metalab eval RUN --json`` prints it; ``details``: more fields for the record
    (data, training budget, commands). The weights go to ``zoo_dir/<name>.pt`` (package data); with ``url`` (where
    they will be published) to ``zoo_dir/to-publish/<name>.pt``, outside the package data: upload that file to
    ``url``, from where the zoo downloads it. The manifest is rewritten atomically, its other models
    kept; ``zoo_version`` sets the zoo's version (default: one more than the manifest's, 1 for a new zoo).
    """
    from metalab import __version__

    zoo = Path(zoo_dir)
    path = checkpoint_path(run_dir, checkpoint)
    state = load_checkpoint(path)
    if evaluation.get("metric", "accuracy") != "accuracy":
        raise ValueError(f"the zoo holds classifiers scored by accuracy; {run_dir} was scored by "
                         f"{evaluation.get('metric')}")
    if evaluation.get("step") not in (None, state["step"]):
        raise ValueError(f"the evaluation scored step {evaluation['step']} of {run_dir}, but {path} holds step "
                         f"{state['step']}: score the checkpoint that goes into the zoo (metalab eval {run_dir})")
    weights = (zoo if url is None else zoo / "to-publish") / f"{name}.pt"
    torch_save_checked({"format": FORMAT, **{key: state[key] for key in KEPT if key in state}}, weights)
    config = state["config"]
    record = {
        "file": weights.name, "sha256": file_sha256(weights), "size": weights.stat().st_size, "url": url,
        "recipe": config.get("name"), "learner": config["learner"]["name"], "input_shape": state["input_shape"],
        "data": f"{config['data']['dataset']} ({config['data']['train_split']} classes)",
        "accuracy": {key: evaluation[key] for key in ACCURACY_FIELDS if key in evaluation},
        "invert_user_images": bool(config["data"].get("invert_user_images", False)),
        **(details or {}), "metalab_version": __version__,
    }
    manifest_path = zoo / MANIFEST
    manifest: dict[str, Any] = (json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file()
                                else {"format": ZOO_FORMAT, "zoo_version": 0, "models": {}})
    manifest["models"][name] = record
    manifest["zoo_version"] = zoo_version if zoo_version is not None else int(manifest.get("zoo_version", 0)) + 1
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return record
