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


def hessian_vector_product(loss: Callable[[Params], Tensor], params: Mapping[str, Tensor],
                           vector: Mapping[str, Tensor], create_graph: bool = False) -> Params:
    """H v, H the Hessian of the scalar ``loss(params)`` w.r.t. ``params``, for ``vector`` shaped like them.

    ``create_graph``: keep the graph of the product (to differentiate it again).
    """
    leaves = {name: value.detach().requires_grad_() for name, value in params.items()}
    grads = torch.autograd.grad(loss(leaves), list(leaves.values()), create_graph=True)
    # builtins.sum is typed Tensor | Literal[0] (its start, for no terms); there is a term per parameter
    dot = cast(Tensor, sum((grad * vector[name]).sum() for name, grad in zip(leaves, grads)))
    products = torch.autograd.grad(dot, list(leaves.values()), create_graph=create_graph, allow_unused=True)
    return {name: torch.zeros_like(leaf) if product is None else product
            for (name, leaf), product in zip(leaves.items(), products)}


def task_dot(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> Tensor:
    """Per-task inner products [T] of two sets of tensors [T, ...] with the same names."""
    return cast(Tensor, sum((a[name] * b[name]).flatten(1).sum(1) for name in a))  # as in hessian_vector_product


def conjugate_gradient(matvec: Callable[[Params], Params], b: Mapping[str, Tensor], steps: int,
                       tolerance: float = 1e-10) -> Params:
    """x with A x = b for a symmetric positive definite A given by ``matvec`` (Hestenes & Stiefel 1952).

    Per task: tensors are [T, ...] and every task runs its own recurrence (a block-diagonal A), starting
    from x = 0, for at most ``steps`` iterations; a task whose squared residual norm is below ``tolerance``
    stops moving.
    """
    x = {name: torch.zeros_like(value) for name, value in b.items()}
    residual = {name: value.clone() for name, value in b.items()}
    direction = {name: value.clone() for name, value in b.items()}
    squared = task_dot(residual, residual)
    for _ in range(steps):
        if bool((squared <= tolerance).all()):
            break
        product = matvec(direction)
        curvature = task_dot(direction, product)
        alpha = torch.where(squared > tolerance, squared / curvature.clamp_min(torch.finfo(curvature.dtype).tiny), 0)
        for name in x:
            shape = (-1,) + (1,) * (x[name].dim() - 1)
            x[name] = x[name] + alpha.view(shape) * direction[name]
            residual[name] = residual[name] - alpha.view(shape) * product[name]
        new_squared = task_dot(residual, residual)
        beta = torch.where(squared > tolerance, new_squared / squared.clamp_min(torch.finfo(squared.dtype).tiny), 0)
        for name in x:
            direction[name] = residual[name] + beta.view((-1,) + (1,) * (x[name].dim() - 1)) * direction[name]
        squared = new_squared
    return x
