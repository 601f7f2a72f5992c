"""Learners by name. Each algorithm module registers itself with :func:`register`."""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable

from metalab.algorithms.base import MetaLearner

_LEARNERS: dict[str, type[MetaLearner]] = {}
_FAMILIES = ("metric", "gradient", "model", "bayesian", "rl")
_discovered = False


def register(name: str) -> Callable[[type[MetaLearner]], type[MetaLearner]]:
    """Class decorator: make a learner available to recipes as ``learner.name: <name>``."""

    def decorate(cls: type[MetaLearner]) -> type[MetaLearner]:
        if name in _LEARNERS and _LEARNERS[name] is not cls:
            raise ValueError(f"two learners are registered as {name!r}: {_LEARNERS[name]} and {cls}")
        _LEARNERS[name] = cls
        return cls

    return decorate


def _discover() -> None:
    """Import every module of the algorithm families once, so that their learners register.

    Sub-packages of a family (its ``components/``) hold building blocks, not learners: they are not
    imported here, only by the algorithm modules that use them.
    """
    global _discovered
    if _discovered:
        return
    for family in _FAMILIES:
        package = importlib.import_module(f"metalab.algorithms.{family}")
        for module in pkgutil.iter_modules(package.__path__):
            if not module.ispkg:
                importlib.import_module(f"{package.__name__}.{module.name}")
    _discovered = True


def learner_names() -> list[str]:
    _discover()
    return sorted(_LEARNERS)


def learner_class(name: str) -> type[MetaLearner]:
    """The learner registered as ``name``; an unknown name is an error naming the nearest ones."""
    _discover()
    try:
        return _LEARNERS[name]
    except KeyError:
        near = difflib.get_close_matches(name, _LEARNERS, n=3)
        hint = f" Did you mean {', '.join(near)}?" if near else ""
        raise ValueError(f"unknown learner {name!r}.{hint} Known learners: {', '.join(sorted(_LEARNERS))}") from None
