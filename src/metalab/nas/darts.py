"""DARTS's architecture gradient, first and second order (Liu et al. 2019, section 2.3).

The bilevel problem (eq. 3-4): min_alpha L_val(w*(alpha), alpha) s.t. w*(alpha) = argmin_w L_train(w, alpha).
One step of the search updates alpha with

    first order (xi = 0):   grad_alpha L_val(w, alpha)
    second order (eq. 6-8): grad_alpha L_val(w', alpha) - xi * grad2_{alpha,w} L_train(w, alpha) . v,
                            v = grad_w' L_val(w', alpha),  w' = w - xi * grad_w L_train(w, alpha)
                            (the virtual step is the weights' optimiser's step, momentum and weight decay
                            included, as in the paper's code)

and the Hessian-vector product by central finite differences (eq. 8),

    grad2_{alpha,w} L_train(w, alpha) . v  ~  [grad_alpha L_train(w+, alpha) - grad_alpha L_train(w-, alpha)] / (2 eps),
    w+- = w +- eps v,  eps = 0.01 / ||v||,

whose error is O(eps^2) (a central difference of the smooth gradient; the third derivative sets the constant).
Then the weights take their SGD step on a training batch (:mod:`metalab.nas.search` runs the alternation).
Everything here is functional (``torch.func.functional_call`` on a dict of parameters), so it is testable on
any network with named parameters.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

Batch = tuple[Tensor, Tensor]


def batch_loss(model: nn.Module, params: Mapping[str, Tensor], batch: Batch) -> Tensor:
    """Cross-entropy of ``model`` with ``params`` (any subset of its parameters; the rest as they are)."""
    x, y = batch
    return F.cross_entropy(functional_call(model, dict(params), (x,)), y)


def architecture_gradient_first_order(model: nn.Module, alphas: list[str], val: Batch) -> list[Tensor]:
    """grad_alpha L_val(w, alpha), one tensor per name in ``alphas``."""
    params = dict(model.named_parameters())
    return list(torch.autograd.grad(batch_loss(model, params, val), [params[n] for n in alphas]))


def finite_difference_hvp(model: nn.Module, params: Mapping[str, Tensor], alphas: list[str], weights: list[str],
                          vector: list[Tensor], batch: Batch, r: float = 0.01) -> list[Tensor]:
    """grad2_{alpha,w} L(w, alpha) . v by a central difference of grad_alpha L along v (DARTS eq. 8).

    ``params``: every parameter by name; ``vector``: v, one tensor per name in ``weights``; eps = r / ||v||.
    Returns one tensor per name in ``alphas``.
    """
    norm = torch.sqrt(sum((v.detach() ** 2).sum() for v in vector))  # type: ignore[arg-type]  # a sum of tensors
    eps = r / float(norm) if float(norm) > 0 else 0.0
    if eps == 0.0:
        return [torch.zeros_like(params[n]) for n in alphas]

    def alpha_gradient(sign: float) -> tuple[Tensor, ...]:
        shifted = {**params, **{n: (params[n] + sign * eps * v).detach() for n, v in zip(weights, vector)}}
        arch = {n: params[n].detach().requires_grad_() for n in alphas}
        return torch.autograd.grad(batch_loss(model, {**shifted, **arch}, batch), [arch[n] for n in alphas])

    plus, minus = alpha_gradient(1.0), alpha_gradient(-1.0)
    return [(p - m) / (2 * eps) for p, m in zip(plus, minus)]


def virtual_step(params: Mapping[str, Tensor], weights: list[str], grads: list[Tensor], xi: float,
                 momentum: float = 0.0, momentum_buffers: Mapping[str, Tensor] | None = None,
                 weight_decay: float = 0.0) -> dict[str, Tensor]:
    """w' = w - xi * (momentum * buffer + grad + weight_decay * w): one step of the weights' SGD (detached)."""
    buffers = momentum_buffers or {}
    out = {}
    for name, grad in zip(weights, grads):
        w = params[name].detach()
        moment = momentum * buffers[name] if name in buffers else torch.zeros_like(w)
        out[name] = w - xi * (moment + grad.detach() + weight_decay * w)
    return out


def architecture_gradient_second_order(model: nn.Module, alphas: list[str], weights: list[str], train: Batch,
                                       val: Batch, xi: float, momentum: float = 0.0,
                                       momentum_buffers: Mapping[str, Tensor] | None = None,
                                       weight_decay: float = 0.0, r: float = 0.01) -> list[Tensor]:
    """The unrolled architecture gradient (eq. 7) with the finite-difference Hessian-vector product (eq. 8).

    ``xi``: the virtual step's rate (the paper uses the weights' current learning rate); ``momentum``,
    ``momentum_buffers`` and ``weight_decay``: the weights' optimiser, for the virtual step.
    """
    params = dict(model.named_parameters())
    # w' = w - xi * grad_w L_train(w, alpha)
    grads = torch.autograd.grad(batch_loss(model, params, train), [params[n] for n in weights])
    stepped = virtual_step(params, weights, list(grads), xi, momentum, momentum_buffers, weight_decay)
    # grad_alpha L_val(w', alpha) and v = grad_w' L_val(w', alpha)
    unrolled = {**params, **{n: stepped[n].requires_grad_() for n in weights}}
    val_loss = batch_loss(model, unrolled, val)
    found = torch.autograd.grad(val_loss, [unrolled[n] for n in alphas] + [unrolled[n] for n in weights])
    d_alpha, d_weights = list(found[: len(alphas)]), list(found[len(alphas):])
    hessian = finite_difference_hvp(model, params, alphas, weights, d_weights, train, r)
    return [d - xi * h for d, h in zip(d_alpha, hessian)]
