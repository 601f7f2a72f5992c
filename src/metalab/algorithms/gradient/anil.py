"""ANIL (Raghu et al. 2020), "almost no inner loop": only the head adapts; the body is meta-learned.

MAML's meta-step with the inner loop restricted to the head (section 4): the body's features of a task's
support and query images do not change within the task, so they are computed once, and the inner steps
run on the head alone, much less work than MAML's. The meta-gradient reaches the body through the features.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from metalab.algorithms.gradient.base import GradientOptions
from metalab.algorithms.gradient.maml import MAML
from metalab.algorithms.registry import register
from metalab.nn.batch_norm import Record, statistics_for
from metalab.nn.inner_loop import Params


@register("anil")
class ANIL(MAML):
    options: GradientOptions
    #: per_step BatchNorm would need the body's statistics per inner step, which ANIL computes once
    bn_modes = ("transductive", "running")

    def adapted_names(self) -> list[str]:
        return [f"head.{name}" for name, _ in self.network.get_submodule("head").named_parameters()]

    def body_features(self, x: Tensor, training: bool, record: Record | None = None) -> Tensor:
        """Body features [T, N, D] of inputs [T, N, ...] with the shared (meta-learned) body."""
        body = self.network.get_submodule("body")
        return self.execution.forward(body, dict(body.named_parameters()), x,
                                      statistics=statistics_for(self.options.bn_mode, training),
                                      record=None if record is None else _Prefixed(record, "body."))

    def head_forward(self, params: Mapping[str, Tensor], features: Tensor, inner: bool = False,
                     differentiated_twice: bool = False) -> Tensor:
        """The head on features [T, N, D], with the head's parameters in ``params`` (names ``head.*``)."""
        head = {name: params[name] for name in self.adapted_names()}
        return self.execution.forward(_Head(self.network.get_submodule("head")), head, features, self.adapted_names(),
                                      inner=inner, differentiated_twice=differentiated_twice)

    def adapt_tasks(self, support_x: Tensor, support_y: Tensor, training: bool,
                    indices: list[Tensor] | None = None) -> Params:
        create_graph = not self.options.first_order if training else False
        features = self.body_features(support_x, training)

        def forward(params: Mapping[str, Tensor], x: Tensor) -> Tensor:
            return self.head_forward(params, x, inner=True, differentiated_twice=create_graph)

        head = {name: value for name, value in self.parameters_by_name().items() if name in self.adapted_names()}
        adapted = self.inner_loop(training).adapt(
            forward, head, self.adapted_names(), features, support_y, self.support_objective(),
            create_graph=create_graph, indices=indices, unroll=self.execution.unroll if training else None)
        return {**self.parameters_by_name(), **adapted}

    def query_outputs(self, fast: Params, query_x: Tensor, training: bool, record: Record | None = None) -> Tensor:
        return self.head_forward(fast, self.body_features(query_x, training, record))


def _Head(head: nn.Module) -> nn.Sequential:
    """The head under the name ``head``, so that parameter names match the full network's."""
    return nn.Sequential(OrderedDict(head=head))


class _Prefixed(dict):
    """A record dict that stores the body's statistics under the full network's layer names."""

    def __init__(self, target: Record, prefix: str) -> None:
        super().__init__()
        self.target, self.prefix = target, prefix

    def __setitem__(self, key: str, value: tuple[Tensor, Tensor]) -> None:
        self.target[self.prefix + key] = value

    def update(self, other: Any = (), /, **kwargs: Any) -> None:  # positional-only, as dict.update's
        for key, value in dict(other, **kwargs).items():
            self[key] = value
