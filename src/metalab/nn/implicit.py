"""Tools for meta-gradients by implicit differentiation: Hessian-vector products and conjugate gradients.

iMAML (Rajeswaran et al. 2019, eq. 7) needs (I + H / lambda)^-1 g for each task, H the Hessian of the
task's support loss at its adapted parameters, without forming H: :func:`hessian_vector_product` gives
H v by one double-backward pass (Pearlmutter 1994), and :func:`conjugate_gradient` solves A x = b from
products A v alone. Both work on T tasks at once: parameters carry a leading task dimension [T, ...] and
a sum of per-task losses has a block-diagonal Hessian, so each task's block acts on its own slice.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import cast

import torch
from torch import Tensor

Params = dict[str, Tensor]


def hessian_operator(loss: Callable[[Params], Tensor], params: Mapping[str, Tensor],
                     create_graph: bool = False) -> Callable[[Mapping[str, Tensor]], Params]:
    """v -> H v, H the Hessian of the scalar ``loss(params)`` w.r.t. ``params`` (detached from any graph).

    The gradient's graph is built once and kept: each product is one backward pass through it (a conjugate
    gradient solve calls the operator once per iteration). ``create_graph``: keep the graph of each product.
    """
    leaves = {name: value.detach().requires_grad_() for name, value in params.items()}
    grads = torch.autograd.grad(loss(leaves), list(leaves.values()), create_graph=True)

    def matvec(vector: Mapping[str, Tensor]) -> Params:
        # builtins.sum is typed Tensor | Literal[0] (its start, for no terms); there is a term per parameter
        dot = cast(Tensor, sum((grad * vector[name]).sum() for name, grad in zip(leaves, grads)))
        products = torch.autograd.grad(dot, list(leaves.values()), retain_graph=True, create_graph=create_graph,
                                       allow_unused=True)
        return {name: torch.zeros_like(leaf) if product is None else product
                for (name, leaf), product in zip(leaves.items(), products)}

    return matvec


def hessian_vector_product(loss: Callable[[Params], Tensor], params: Mapping[str, Tensor],
                           vector: Mapping[str, Tensor], create_graph: bool = False) -> Params:
    """H v, H the Hessian of the scalar ``loss(params)`` w.r.t. ``params``, for ``vector`` shaped like them.

    ``create_graph``: keep the graph of the product (to differentiate it again).
    """
    return hessian_operator(loss, params, create_graph)(vector)


def task_dot(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> Tensor:
    """Per-task inner products [T] of two sets of tensors [T, ...] with the same names."""
    return cast(Tensor, sum((a[name] * b[name]).flatten(1).sum(1) for name in a))  # as in hessian_vector_product


def conjugate_gradient(matvec: Callable[[Params], Params], b: Mapping[str, Tensor], steps: int,
                       tolerance: float = 1e-10) -> Params:
    """x with A x = b for a symmetric positive definite A given by ``matvec`` (Hestenes & Stiefel 1952).

    Per task: tensors are [T, ...] and every task runs its own recurrence (a block-diagonal A), starting
    from x = 0, for at most ``steps`` iterations; a task whose squared residual norm is below ``tolerance``
    stops moving. A task whose search direction meets non-positive curvature (d^T A d <= 0: its A is not
    positive definite, e.g. iMAML's I + H / lambda away from the inner minimum) stops there too, as truncated
    CG does in Hessian-free optimisation (Martens 2010), keeping its last iterate, or b if that happens at the
    first iteration (the steepest-descent direction, rather than 0).
    """
    x = {name: torch.zeros_like(value) for name, value in b.items()}
    residual = {name: value.clone() for name, value in b.items()}
    direction = {name: value.clone() for name, value in b.items()}
    squared = task_dot(residual, residual)
    active = squared > tolerance
    for iteration in range(steps):
        if not bool(active.any()):
            break
        product = matvec(direction)
        curvature = task_dot(direction, product)
        if iteration == 0:
            x = {name: _where_tasks(curvature <= 0, value, x[name]) for name, value in b.items()}
        active = active & (curvature > 0)
        alpha = torch.where(active, squared / curvature.clamp_min(torch.finfo(curvature.dtype).tiny), 0)
        for name in x:
            x[name] = x[name] + per_task(alpha, x[name]) * direction[name]
            residual[name] = residual[name] - per_task(alpha, x[name]) * product[name]
        new_squared = task_dot(residual, residual)
        beta = torch.where(active, new_squared / squared.clamp_min(torch.finfo(squared.dtype).tiny), 0)
        for name in x:
            direction[name] = residual[name] + per_task(beta, x[name]) * direction[name]
        squared = new_squared
        active = active & (squared > tolerance)
    return x


def per_task(values: Tensor, like: Tensor) -> Tensor:
    """Per-task scalars [T] shaped to broadcast over ``like`` [T, ...]."""
    return values.view((-1,) + (1,) * (like.dim() - 1))


def _where_tasks(condition: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """a for the tasks where ``condition`` [T] holds, else b (tensors [T, ...])."""
    return torch.where(per_task(condition, a), a, b)
