"""ANIL (Raghu et al. 2020), "almost no inner loop": only the head adapts; the body is meta-learned.

Since the body does not change within a task, its features are computed once per task (support and
queries), and the inner loop runs on the head alone: much less work than MAML per step.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from metalab.algorithms.gradient.common import GradientLearner, GradientOptions
from metalab.algorithms.registry import register
from metalab.nn.functional import inner_loop, task_forward


@register("anil")
class ANIL(GradientLearner):
    Options = GradientOptions

    def adapted_names(self) -> list[str]:
        return [f"head.{name}" for name, _ in self.network.head.named_parameters()]

    def body_features(self, x: Tensor, training: bool, record: dict | None = None) -> Tensor:
        """Body features [T, N, D] of inputs [T, N, ...] with the shared (meta-learned) body."""
        params = {f"{n}": p for n, p in self.network.body.named_parameters()}
        settings = self.loop.settings(training, None if record is None else _Prefixed(record, "body."))
        return task_forward(self.network.body, params, x, (), settings)

    def head_params(self) -> dict[str, Tensor]:
        return {f"head.{n}": p for n, p in self.network.head.named_parameters()}

    def adapt_tasks(self, support_x: Tensor, support_y: Tensor, training: bool) -> dict[str, Tensor]:
        steps = self.inner_steps(training)
        features = self.body_features(support_x, training)
        head = inner_loop(
            _Head(self.network.head), self.head_params(), self.adapted_names(), features, support_y, self.loss_fn,
            self.loop, steps=steps, lrs=self.learning_rates(), training=training,
            create_graph=None if training else False,
        )
        return {**self.parameters_by_name(), **head}

    def query_outputs(self, fast: dict[str, Tensor], query_x: Tensor, training: bool,
                      record: dict | None = None) -> Tensor:
        features = self.body_features(query_x, training, record)
        head = {n: fast[n] for n in self.adapted_names()}
        return task_forward(_Head(self.network.head), head, features, self.adapted_names(),
                            self.loop.settings(training))


def _Head(head: nn.Module) -> nn.Sequential:
    """The head under the name ``head``, so that parameter names match the full network's."""
    return nn.Sequential(OrderedDict(head=head))


class _Prefixed(dict):
    """A record dict that stores the body's statistics under the full network's layer names."""

    def __init__(self, target: dict, prefix: str) -> None:
        super().__init__()
        self.target, self.prefix = target, prefix

    def __setitem__(self, key, value) -> None:
        self.target[self.prefix + key] = value
