"""A learner declares its options once, as the annotation ``options: NameOptions``; ``Options`` follows."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from metalab.algorithms.base import LearnerOptions, MetaLearner
from metalab.algorithms.registry import learner_class, learner_names


@dataclass
class WidthOptions(LearnerOptions):
    width: int = 3


class WidthLearner(MetaLearner):
    options: WidthOptions


class InheritingLearner(WidthLearner):
    pass


def test_the_annotation_sets_options_and_subclasses_inherit_it():
    assert WidthLearner.Options is WidthOptions and InheritingLearner.Options is WidthOptions
    assert MetaLearner.Options is LearnerOptions


def test_every_learner_of_the_package_builds_its_declared_options():
    for name in learner_names():
        cls = learner_class(name)
        if not cls.__module__.startswith("metalab."):
            continue  # a test's learner may set Options itself
        assert issubclass(cls.Options, LearnerOptions), name
        annotated = [vars(k)["__annotations__"]["options"] for k in cls.__mro__
                     if "options" in vars(k).get("__annotations__", {})]
        assert annotated and annotated[0] in (cls.Options.__name__, cls.Options), (name, annotated)


def test_an_annotation_that_is_no_options_dataclass_is_refused():
    with pytest.raises(TypeError, match="must be annotated with a dataclass extending LearnerOptions"):
        class Wrong(MetaLearner):
            options: int
    with pytest.raises(TypeError, match="define the options class at module level"):
        def local() -> None:
            @dataclass
            class LocalOptions(LearnerOptions):
                pass

            class Local(MetaLearner):
                options: LocalOptions
        local()
