"""The MetaLearner interface shared by the gradient-, metric- and model-based families, and the small
functions on episodes that learners of several families use (one-pass embedding, support labels)."""
from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution

from metalab.data.task import Task
from metalab.nn.execution import SpeedOptions


@dataclass
class LearnerOptions:
    """Options every learner accepts; each learner extends this with its own fields."""

    name: str = ""


class MetaLearner(nn.Module):
    """A learner that meta-trains on batches of tasks and adapts to a new task from its support set.

    A subclass declares its options once, as the annotation ``options: NameOptions`` (a dataclass extending
    :class:`LearnerOptions`); the class attribute ``Options``, which the config and the registry read, is set
    from it. Learners are built as ``Learner(options, input_shape, speed=None)`` where ``input_shape`` is one
    input's shape without the batch dimension ((C, H, W) for images, (D,) for vectors) and ``speed`` the
    execution options (``speed.*``).
    """

    Options: ClassVar[type[LearnerOptions]] = LearnerOptions
    options: LearnerOptions
    #: "classification" (logits, scored by accuracy) or "regression" (values, scored by MSE); the gradient-based
    #: learners, which serve both, set it per instance. "reinforcement": a meta-RL learner
    #: (:mod:`metalab.algorithms.rl`), whose batches are environment tasks and which is scored by :meth:`scores`.
    task_kind: str = "classification"
    #: what else to try when meta-training goes NaN, beyond the trainer's optim.lr / optim.grad_clip
    #: (e.g. ", or lower learner.inner_lr"); appended to the trainer's error.
    divergence_hint: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = inspect.get_annotations(cls).get("options")
        if declared is None:
            return  # inherits its parent's options
        if isinstance(declared, str):  # postponed annotations: resolved where the class statement ran
            defining = sys._getframe(1)  # the class statement's frame (type.__new__ and __build_class__ are C)
            try:
                declared = eval(declared, defining.f_globals, defining.f_locals)
            except NameError as error:
                raise TypeError(f"{cls.__name__}.options is annotated with {declared!r}, which is not defined "
                                f"where the class is") from error
        if not (isinstance(declared, type) and issubclass(declared, LearnerOptions)):
            raise TypeError(f"{cls.__name__}.options must be annotated with a dataclass extending LearnerOptions, "
                            f"got {declared!r}")
        cls.Options = declared

    def __init__(self, options: LearnerOptions, input_shape: tuple[int, ...],
                 speed: SpeedOptions | None = None) -> None:
        super().__init__()
        self.options = options
        self.input_shape = tuple(input_shape)
        #: how the learner's computations run (``speed.*``: time and memory, never results)
        self.speed = speed if speed is not None else SpeedOptions()

    def meta_step(self, batch: Task) -> dict[str, Tensor]:
        """Meta-train on a batch of tasks (leading task dim T).

        Leaves the meta-gradient in the parameters' ``.grad`` (the trainer zeroes and steps) and
        returns detached scalar metrics, at least ``loss`` (and ``accuracy`` for classification). A learner whose
        outer update is not a gradient step (TRPO's constrained natural-gradient step in meta-RL) applies it here
        and leaves no gradient, so the trainer's optimiser has nothing to step.
        """
        raise NotImplementedError

    def scores(self, batch: Any) -> dict[str, Tensor]:
        """Meta-RL learners: per-task scores [T] of a batch of environment tasks, by name; ``return`` (the return
        after adaptation) is the evaluation's headline, the others (the stages of adaptation) are reported with
        it."""
        raise NotImplementedError(f"{type(self).__name__} is scored on its predictions, not by scores()")

    def adapt(self, support_x: Tensor, support_y: Tensor) -> Callable[[Tensor], Tensor]:
        """Learn one task from its support set ([S, ...] inputs, [S] labels or [S, D] targets).

        Returns a function mapping query inputs [Q, ...] to logits [Q, ways] (classification)
        or predictions [Q, D] (regression).
        """
        raise NotImplementedError

    def predict(self, batch: Task) -> Tensor:
        """Predictions for the queries of every task in a batch: [T, Q, ways] logits or [T, Q, D].

        The default adapts task by task; learners that can batch tasks override it.
        """
        return torch.stack([self.adapt(task.support_x, task.support_y)(task.query_x) for task in batch_tasks(batch)])

    def predictive_distribution(self, batch: Task) -> Distribution | None:
        """The predictive distribution of every query of a batch of tasks, batch shape [T, Q]: what the evaluator
        scores the learner's uncertainty on (NLL, calibration, coverage; :mod:`metalab.train.uncertainty`).

        Classification: a ``Categorical`` over the task's ways; by default the softmax of :meth:`predict`'s logits,
        so that every point-estimate learner is scored from its softmax. Bayesian learners override it (e.g. the
        average of the softmax over posterior samples). Regression: a distribution with event shape [D] (e.g.
        ``Independent(Normal(mean, std), 1)``, or a ``MixtureSameFamily`` over posterior samples); None (the
        default) says the learner predicts a point only, scored by its MSE alone.
        """
        if self.task_kind == "classification":
            # float64: normalising float32 logits in float32 can tie near-equal ones, and the predicted class (the
            # evaluator's accuracy) must stay predict's argmax. No validation: a diverged learner's NaN logits are
            # scored (as NaN), and the trainer then stops it naming what diverged
            return Categorical(logits=self.predict(batch).double(), validate_args=False)
        return None


def batch_tasks(batch: Task) -> list[Task]:
    return [batch[i] for i in range(len(batch))]


def classification_metrics(logits: Tensor, labels: Tensor, loss: Tensor) -> dict[str, Tensor]:
    """Detached loss and accuracy from logits [..., ways] and labels [...]."""
    return {
        "loss": loss.detach(),
        "accuracy": (logits.detach().argmax(-1) == labels).float().mean(),
    }


def embed_batch(backbone: nn.Module, support_x: Tensor, query_x: Tensor) -> tuple[Tensor, Tensor]:
    """One backbone pass over every image of T tasks.

    support_x [T, S, C, H, W], query_x [T, Q, C, H, W] -> support [T, S, *F], query [T, Q, *F],
    where F is the backbone's output shape for one image (a vector or a feature map).
    """
    tasks, support_size = support_x.shape[:2]
    query_size = query_x.shape[1]
    features = backbone(torch.cat([support_x.flatten(0, 1), query_x.flatten(0, 1)]))
    support = features[: tasks * support_size].unflatten(0, (tasks, support_size))
    query = features[tasks * support_size :].unflatten(0, (tasks, query_size))
    return support, query


def embed_task_batch(backbone: nn.Module, batch: Task) -> tuple[Tensor, Tensor]:
    """:func:`embed_batch` for a batched :class:`Task`."""
    return embed_batch(backbone, batch.support_x, batch.query_x)


def ways_of(support_y: Tensor) -> int:
    """Number of classes in support labels (0..ways-1)."""
    return int(support_y.max()) + 1


def check_support_labels(support_y: Tensor) -> int:
    """Ways of one task's support labels [S]; every label 0..ways-1 must have an example."""
    ways = ways_of(support_y)
    missing = set(range(ways)) - set(support_y.tolist())
    if missing:
        raise ValueError(f"support labels must cover 0..{ways - 1}; labels {sorted(missing)} have no examples")
    return ways
