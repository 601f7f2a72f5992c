"""Run logs (one JSON object per line in metrics.jsonl, TensorBoard scalars and the run's config) and the
progress bars of training and evaluation."""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO, cast

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm


class RunLogger:
    """Appends records to ``<run_dir>/metrics.jsonl`` and mirrors scalars to TensorBoard.

    With ``config``, TensorBoard also gets the run's config: as text (``config``, the YAML of
    ``metalab show``) and as hyperparameters (the HParams dashboard, one column per key, against the
    run's validation and test scores).
    """

    def __init__(self, run_dir: Path, tensorboard: bool = True, config: DictConfig | None = None,
                 step: int = 0) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.file = self.path.open("a", encoding="utf-8")
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
            if config is not None:
                self._write_config(config, step)

    def _write_config(self, config: DictConfig, step: int) -> None:
        from torch.utils.tensorboard.summary import hparams

        from metalab.data.sources import metric_of

        writer = self.writer
        assert writer is not None  # called once the writer is made
        # four spaces: a Markdown code block, so that TensorBoard's text tab keeps the YAML's indentation
        writer.add_text("config", "    " + OmegaConf.to_yaml(config).replace("\n", "\n    "), step)
        metric = metric_of(config)
        values = flat_values(cast("dict[str, Any]", OmegaConf.to_container(config, resolve=True)))  # a DictConfig's
        # the hparams summaries go into this writer's own event file (SummaryWriter.add_hparams would start
        # another run in a sub-folder); the metrics are the tags of the scalars that log() writes
        file_writer = writer.file_writer
        assert file_writer is not None  # SummaryWriter() makes it
        for summary in hparams(values, {f"val/{metric}": math.nan, f"test/{metric}": math.nan}):
            file_writer.add_summary(summary)

    def log(self, kind: str, step: int, values: dict[str, Any]) -> None:
        """One record: ``kind`` is "train", "val" or "test"; ``values`` are scalars."""
        record = {"kind": kind, "step": step, **values}
        self.file.write(json.dumps(record, allow_nan=True) + "\n")
        self.file.flush()
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self.writer.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        self.file.close()
        if self.writer is not None:
            self.writer.close()


def flat_values(values: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """A nested config as ``{"section.key": value}``, values TensorBoard's hyperparameters take (lists and
    nulls as text)."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flat_values(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
    return flat


def truncate_after(path: Path, step: int) -> None:
    """Drop records after ``step`` (a resumed run re-logs the steps after its checkpoint)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    from metalab.utils.io import atomic_write_text

    atomic_write_text(path, "".join(line + "\n" for line in kept))


def progress_bar(total: int, desc: str, unit: str, enabled: bool = True, initial: int = 0,
                 file: TextIO | None = None) -> tqdm:
    """A tqdm bar (on stderr by default) shown only to a person watching it: off when ``enabled`` is false
    (``train.progress=false``), when its stream is not a terminal (tqdm's ``disable=None``), and when the
    ``metalab`` logger is set above INFO (``metalab -q``)."""
    quiet = logging.getLogger("metalab").level > logging.INFO
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, file=file,
                disable=True if not enabled or quiet else None)


class TrainingProgress:
    """The training loop's bar: steps toward ``train.steps``, or, once the time budget ``train.max_minutes``
    is expected to stop the run first, toward the step the budget will reach at the current speed, so that
    the bar's fraction and time left are the budget's ("stops at 25 min" beside it) rather than those of
    steps the run will never take.

    Args:
        steps: ``train.steps``; start: the step the run starts from (a resumed run's).
        max_minutes: ``train.max_minutes`` (None: no time budget); clock: seconds, for tests.
        enabled, file: as :func:`progress_bar`.
    """

    def __init__(self, steps: int, start: int, desc: str, enabled: bool = True, max_minutes: float | None = None,
                 clock: Callable[[], float] = time.perf_counter, file: TextIO | None = None) -> None:
        self.steps, self.start, self.max_minutes, self.clock = steps, start, max_minutes, clock
        self.started = clock()
        self.bar = progress_bar(total=steps, initial=start, desc=desc, unit="step", enabled=enabled, file=file)
        self.metrics: dict[str, str] = {}
        self.budget_note = ""

    def update(self, step: int) -> None:
        """Count one more step; ``step`` steps are done in all."""
        if self.max_minutes is not None:
            elapsed, done = self.clock() - self.started, step - self.start
            left = max(60.0 * self.max_minutes - elapsed, 0.0)
            reach = step + int(done / elapsed * left) if elapsed > 0 and done > 0 else self.steps
            binding = reach < self.steps
            self.bar.total = reach if binding else self.steps
            self.budget_note = f"stops at {self.max_minutes:g} min (train.max_minutes)" if binding else ""
            self._postfix()
        self.bar.update(1)

    def show(self, metrics: dict[str, float]) -> None:
        """Show the latest training metrics beside the bar."""
        self.metrics = {key: f"{value:.3f}" for key, value in metrics.items()}
        self._postfix()

    def _postfix(self) -> None:
        parts = [f"{key}={value}" for key, value in self.metrics.items()]
        parts += [self.budget_note] if self.budget_note else []
        self.bar.set_postfix_str(", ".join(parts), refresh=False)

    def write(self, message: str) -> None:
        """Print a line above the bar."""
        self.bar.write(message)

    def close(self) -> None:
        self.bar.close()
