"""Run logs and progress bars: the config in TensorBoard, the training bar under a time budget."""
from __future__ import annotations

import io
import logging

import pytest
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from metalab.config import load_recipe
from metalab.train.logging import RunLogger, TrainingProgress, progress_bar


class Terminal(io.StringIO):
    """A stream that says it is a terminal, so that progress bars draw on it."""

    def isatty(self) -> bool:
        return True


class Clock:
    """Seconds that a test moves forward by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_tensorboard_holds_the_config_as_text_and_as_hyperparameters(tmp_path):
    config = load_recipe("omniglot-protonet-5w1s", ["train.steps=7", "learner.hidden=8"])
    logger = RunLogger(tmp_path, tensorboard=True, config=config)
    logger.log("val", 2, {"accuracy": 0.5, "ci95": 0.1})
    logger.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert OmegaConf.create(text.replace("\n    ", "\n").strip()) == config  # the YAML of `metalab show`
    plugin = events.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(plugin["_hparams_/session_start_info"]).session_start_info
    assert session.hparams["learner.name"].string_value == "protonet"
    assert session.hparams["train.steps"].number_value == 7 and session.hparams["learner.hidden"].number_value == 8
    experiment = plugin_data_pb2.HParamsPluginData.FromString(plugin["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {"val/accuracy", "test/accuracy"}
    assert events.Scalars("val/accuracy")[0].value == 0.5  # the metric the dashboard shows, in this same run


def test_a_time_budget_that_stops_the_run_first_is_what_the_bar_counts_down():
    """train.max_minutes=25 of a 20000-step recipe showed 20000 steps and an ETA of 36 hours."""
    clock, stream = Clock(), Terminal()
    progress = TrainingProgress(20000, 0, "recipe", max_minutes=25, clock=clock, file=stream)
    for step in range(1, 101):  # 10 steps a second: 15000 steps in 25 minutes
        clock.now = step / 10
        progress.update(step)
    expected = 100 + (25 * 60 - 10) * 10
    assert progress.bar.total == expected
    progress.show({"loss": 1.25})
    progress.bar.refresh()
    shown = stream.getvalue().splitlines()[-1] if "\n" in stream.getvalue() else stream.getvalue().split("\r")[-1]
    assert f"100/{expected}" in shown and "loss=1.250" in shown and "stops at 25 min (train.max_minutes)" in shown
    assert "20000" not in shown
    progress.close()


def test_a_budget_that_the_steps_end_first_leaves_the_bar_on_the_steps():
    clock = Clock()
    progress = TrainingProgress(500, 100, "recipe", max_minutes=25, clock=clock, file=Terminal())
    for step in range(101, 201):  # 10 steps a second: the 400 steps left take 40 s
        clock.now = (step - 100) / 10
        progress.update(step)
    assert progress.bar.total == 500 and progress.budget_note == ""
    progress.close()


def test_without_a_budget_the_bar_counts_the_steps():
    progress = TrainingProgress(50, 0, "recipe", file=Terminal())
    for step in range(1, 11):
        progress.update(step)
    assert (progress.bar.n, progress.bar.total) == (10, 50)
    progress.close()


@pytest.mark.parametrize("enabled, stream, level, shown", [
    (True, Terminal(), logging.NOTSET, True),
    (False, Terminal(), logging.NOTSET, False),  # train.progress=false
    (True, io.StringIO(), logging.NOTSET, False),  # not a terminal: a log file, a pipe
    (True, Terminal(), logging.WARNING, False),  # metalab -q
])
def test_a_bar_shows_only_where_a_person_watches(enabled, stream, level, shown, monkeypatch):
    monkeypatch.setattr(logging.getLogger("metalab"), "level", level)
    bar = progress_bar(total=3, desc="work", unit="item", enabled=enabled, file=stream)
    bar.update(3)
    bar.close()
    assert ("3/3" in stream.getvalue()) == shown
