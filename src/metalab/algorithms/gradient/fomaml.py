"""First-order MAML (Finn et al. 2017, section 5.2): MAML without the second-order terms.

The inner gradients are treated as constants, so the meta-gradient is the query-loss gradient at the
adapted weights, grad_phi L_query_t(phi_t), summed over tasks: MAML's meta-step with no backward pass
through the inner loop.
"""
from __future__ import annotations

from dataclasses import dataclass

from metalab.algorithms.gradient.base import GradientOptions
from metalab.algorithms.gradient.maml import MAML
from metalab.algorithms.registry import register
from metalab.nn.execution import SpeedOptions


@dataclass
class FOMAMLOptions(GradientOptions):
    first_order: bool = True


@register("fomaml")
class FirstOrderMAML(MAML):
    options: FOMAMLOptions

    def __init__(self, options: FOMAMLOptions, input_shape: tuple[int, ...], speed: SpeedOptions | None = None) -> None:
        if not options.first_order:
            raise ValueError("fomaml is first order by definition; use learner.name=maml for second order")
        super().__init__(options, input_shape, speed)
