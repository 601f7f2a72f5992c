"""MAML (Finn et al. 2017): meta-learn an initialisation from which a few gradient steps solve a task.

The meta-gradient is the gradient of the query loss at the adapted weights with respect to the
initial weights, through the inner gradient steps (second order). All the work is the shared inner
loop (:func:`metalab.nn.functional.inner_loop`); see :class:`GradientLearner.meta_step`.
"""
from __future__ import annotations

from metalab.algorithms.gradient.common import GradientLearner, GradientOptions
from metalab.algorithms.registry import register


@register("maml")
class MAML(GradientLearner):
    """Second-order MAML by default (``first_order: true`` gives first-order MAML)."""

    Options = GradientOptions
