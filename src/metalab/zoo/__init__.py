"""The model zoo: learners trained by metalab, ready to predict without training (``metalab zoo list``,
``metalab predict --model NAME``).

A zoo is a folder with ``manifest.json`` (:mod:`metalab.zoo.registry`): the zoo's version, and for each model its
weights file, SHA-256, size, data, recipe, test accuracy and how it was trained. Small weights ship inside the package
(``metalab/zoo/weights``); larger ones are downloaded once, checksummed, into the cache. :mod:`metalab.zoo.build`
makes an entry from a trained run.
"""
from typing import Any

__all__ = ["ZOO_ENV", "Zoo", "ZooEntry", "load_model", "packaged_zoo"]


def __getattr__(name: str) -> Any:
    """The names of :mod:`metalab.zoo.registry`, imported on first use: ``metalab zoo``'s parser, built for every
    command, does not import torch."""
    if name in __all__:
        from metalab.zoo import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
