"""Checkpoints of existing runs still load: every metric- and model-based learner keeps the registered
name, the options and the ``state_dict`` keys and shapes that it had before the families were
reorganised (issue 25).

The expected values in ``learners_at_c04787a.json`` were written once by the code of commit c04787a
(main before the reorganisation): the default options of every learner of both families, and the
state_dict (key -> shape) of each learner built from its defaults, from every packaged recipe that
uses it, and from a few options that change its modules (``fce``, ``features``, ``write_keys``, ...).
Entries that built the same state_dict are one entry listing their cases.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from metalab.algorithms.registry import learner_class, learner_names

EXPECTED = json.loads((Path(__file__).parent / "learners_at_c04787a.json").read_text())


def family_of(name: str) -> str:
    """The family folder of a learner of metalab ("metric", ...); "" for one registered elsewhere (tests)."""
    module = learner_class(name).__module__.split(".")
    return module[2] if module[:2] == ["metalab", "algorithms"] else ""


def test_the_same_learners_are_registered_in_the_metric_and_model_families():
    saved_families = ("metric", "model")
    assert sorted(name for name in learner_names() if family_of(name) in saved_families) == sorted(EXPECTED["options"])


@pytest.mark.parametrize("name", sorted(EXPECTED["options"]))
def test_options_keep_their_fields_and_defaults(name):
    assert asdict(learner_class(name).Options()) == EXPECTED["options"][name]


@pytest.mark.parametrize("entry", EXPECTED["state_dicts"], ids=lambda entry: entry["cases"][0])
def test_state_dict_keeps_its_keys_and_shapes(entry):
    cls = learner_class(entry["learner"])
    learner = cls(cls.Options(name=entry["learner"], **entry["options"]), tuple(entry["input_shape"]))
    built = {key: list(value.shape) for key, value in learner.state_dict().items()}
    assert list(built) == list(entry["state_dict"]), f"state_dict keys changed for {entry['cases']}"
    assert built == entry["state_dict"], f"state_dict shapes changed for {entry['cases']}"
