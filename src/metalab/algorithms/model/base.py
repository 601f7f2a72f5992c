"""What the model-based classifiers share: the image encoder (:class:`EncoderOptions`,
:func:`build_encoder`, one pass per batch with :func:`embed_batch`), the bound on the ways of
learners with fixed-size label inputs (:func:`check_ways`) and the train/predict/adapt plumbing
around a learner's batched ``logits`` (:class:`EpisodicClassifier`; :class:`EmbeddingClassifier`
when the logits come from the embeddings).

A model-based classifier reads a whole task at once, so it only has to implement
``logits(support_x [T, S, ...], support_y [T, S], query_x [T, Q, ...], ways) -> [T, Q, ways]``.
Support labels may come in any order and with unequal shots per class (user data).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalab.algorithms.base import (
    LearnerOptions,
    MetaLearner,
    check_support_labels,
    classification_metrics,
    embed_batch,
    ways_of,
)
from metalab.data.task import Task
from metalab.nn.backbones import build_backbone, embedding_dim
from metalab.nn.execution import SpeedOptions

__all__ = ["EmbeddingClassifier", "EncoderOptions", "EpisodicClassifier", "build_encoder", "check_support_labels",
           "check_ways", "embed_batch"]


@dataclass
class EncoderOptions(LearnerOptions):
    """Options of the classifiers' image encoder (:func:`build_encoder`)."""

    #: image encoder: "conv4" or "pixels" (raw pixels, as in the MANN paper)
    encoder: str = "conv4"
    #: width of the Conv-4 encoder (channels of each block)
    hidden: int = 64


def build_encoder(name: str, input_shape: tuple[int, ...], hidden: int) -> tuple[nn.Module, int]:
    """An image encoder and its output size: "pixels" (flattened raw pixels) or a backbone of
    :func:`~metalab.nn.backbones.build_backbone`: "conv4" (the few-shot Conv-4, ``hidden`` channels)
    or "resnet12" (ResNet-12 with its published widths, 640 features)."""
    if name == "pixels":
        encoder: nn.Module = nn.Flatten()
    else:
        encoder = build_backbone(name, input_shape, hidden)
    return encoder, embedding_dim(encoder, input_shape)


def check_ways(ways: int, max_ways: int | None) -> None:
    """Learners with a fixed-size label input/output handle at most ``learner.max_ways`` classes."""
    if max_ways is not None and ways > max_ways:
        raise ValueError(
            f"this learner was built for at most {max_ways} ways (learner.max_ways) but the task has {ways}; "
            f"evaluate with --ways <= {max_ways} or retrain with learner.max_ways={ways}"
        )


class EpisodicClassifier(MetaLearner):
    """A classifier that maps a whole batch of tasks to query logits; subclasses implement ``logits``.

    ``max_ways`` (None when the learner handles any number of classes) bounds the label space of
    learners with one-hot label inputs or fixed output layers.
    """

    task_kind = "classification"

    def max_ways(self) -> int | None:
        return getattr(self.options, "max_ways", None)

    def logits(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int) -> Tensor:
        """Query logits [T, Q, ways] from support [T, S, ...] with labels [T, S] and queries [T, Q, ...]."""
        raise NotImplementedError

    def _logits(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        ways = ways_of(support_y)
        check_ways(ways, self.max_ways())
        return self.logits(support_x, support_y, query_x, ways)

    def meta_step(self, batch: Task) -> dict[str, Tensor]:
        logits = self._logits(batch.support_x, batch.support_y, batch.query_x)
        loss = F.cross_entropy(logits.flatten(0, 1), batch.query_y.flatten())
        loss.backward()
        return classification_metrics(logits, batch.query_y, loss)

    @torch.no_grad()
    def predict(self, batch: Task) -> Tensor:
        return self._logits(batch.support_x, batch.support_y, batch.query_x)

    def adapt(self, support_x: Tensor, support_y: Tensor) -> Callable[[Tensor], Tensor]:
        check_ways(check_support_labels(support_y), self.max_ways())

        @torch.no_grad()
        def classify(query_x: Tensor) -> Tensor:
            return self._logits(support_x.unsqueeze(0), support_y.unsqueeze(0), query_x.unsqueeze(0))[0]

        return classify


class EmbeddingClassifier(EpisodicClassifier):
    """An :class:`EpisodicClassifier` that embeds every image of a batch in one pass of its encoder
    and classifies from the embeddings: subclasses implement :meth:`head`.

    Builds ``self.encoder`` from :class:`EncoderOptions` before anything else of the learner, and
    sets ``self.embedding_size``, the size of one image's embedding.
    """

    def __init__(self, options: EncoderOptions, input_shape: tuple[int, ...],
                 speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        self.encoder, self.embedding_size = build_encoder(options.encoder, input_shape, options.hidden)

    def head(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        """Query logits [T, Q, ways] from support embeddings [T, S, D], labels [T, S] and query embeddings [T, Q, D]."""
        raise NotImplementedError

    def logits(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int) -> Tensor:
        support, query = embed_batch(self.encoder, support_x, query_x)
        return self.head(support, support_y, query, ways)
