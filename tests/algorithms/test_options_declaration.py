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
    with pytest.raises(TypeError, match="which is not defined where the class is"):
        class Unknown(MetaLearner):
            options: NoSuchOptions  # type: ignore[name-defined]  # noqa: F821


def test_options_defined_in_a_function_or_an_exec_namespace_are_found():
    def local() -> type[MetaLearner]:
        @dataclass
        class LocalOptions(LearnerOptions):
            depth: int = 2

        class Local(MetaLearner):
            options: LocalOptions

        return Local

    assert local().Options.__name__ == "LocalOptions"
    namespace: dict = {"__name__": "__main__"}
    exec("from __future__ import annotations\nfrom dataclasses import dataclass\n"
         "from metalab.algorithms.base import LearnerOptions, MetaLearner\n"
         "@dataclass\nclass ExecOptions(LearnerOptions):\n    size: int = 1\n"
         "class Exec(MetaLearner):\n    options: ExecOptions\n", namespace)
    assert namespace["Exec"].Options is namespace["ExecOptions"]
