"""Meta-Curvature (Park & Oliva 2019): MAML whose inner gradients pass through a meta-learned curvature.

The inner step is phi <- phi - alpha * MC(g): each adapted tensor's gradient g is transformed by curvature
matrices learned with the initialisation (the paper's decomposition into a series of tensor products):

    convolution kernel G [C_out, C_in, k*k]:   MC(G) = G x_1 M_o x_2 M_i x_3 M_s
                                               vec(MC(G)) = (M_o (x) M_i (x) M_s) vec(G)     (row-major vec)
    linear weight G [out, in]:                 MC(G) = G x_1 M_o x_2 M_i = M_o G M_i^T
    biases and BatchNorm weights g:            MC(g) = m (.) g                               (elementwise)

where x_n is the mode-n product ((G x_n M)[.., a, ..] = sum_p M[a, p] G[.., p, ..]) and (x) the Kronecker
product. M_o (output channels), M_i (input channels) and M_s (the k*k kernel positions) start at the identity,
m at ones, so that the untrained learner is MAML. The matrices receive their meta-gradient through MAML's
meta-step (second order by default, ``first_order: true`` for the first-order variant; the transform is in
the graph either way).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metalab.algorithms.gradient.base import GradientOptions
from metalab.algorithms.gradient.maml import MAML
from metalab.algorithms.registry import register
from metalab.nn.execution import SpeedOptions
from metalab.nn.inner_loop import UpdateRule


def mode_products(tensor: Tensor, matrices: Sequence[Tensor]) -> Tensor:
    """``tensor`` [T, n_1, ..., n_m] x_1 matrices[0] ... x_m matrices[m-1] (each [n_j, n_j]), per task t."""
    for mode, matrix in enumerate(matrices, start=1):
        # tensordot puts the new mode first; move it back to its place
        tensor = torch.movedim(torch.tensordot(matrix, tensor, dims=([1], [mode])), 0, mode)
    return tensor


def curvature_transform(grad: Tensor, factors: Sequence[Tensor]) -> Tensor:
    """MC(g) for T tasks' gradients [T, ...] of one tensor (see the module docstring).

    ``factors``: (M_o, M_i, M_s) for a convolution kernel [T, C_out, C_in, kh, kw]; (M_o, M_i) for a linear
    weight [T, out, in]; (m,) of the tensor's own shape for anything else (elementwise).
    """
    if len(factors) == 1:
        return grad * factors[0]
    tasks, out_channels, in_channels = grad.shape[:3]
    matrix_form = grad.reshape(tasks, out_channels, in_channels, -1) if len(factors) == 3 else grad
    return mode_products(matrix_form, factors).reshape(grad.shape)


@dataclass
class CurvatureRule(UpdateRule):
    """phi <- phi - lr * MC(g), the matrices of each adapted tensor named in ``layout``."""

    lr: float
    #: adapted name -> the names (keys of ``matrices``) of its factors, in :func:`curvature_transform`'s order
    layout: Mapping[str, tuple[str, ...]]
    matrices: Mapping[str, Tensor]

    def tensors(self) -> dict[str, Tensor]:
        return dict(self.matrices)

    def step(self, fast, grads, state, k, tensors):
        return {**fast, **{name: torch.sub(fast[name], curvature_transform(grad, [tensors[f] for f in
                                                                                 self.layout[name]]), alpha=self.lr)
                           for name, grad in grads.items()}}, None


def curvature_factors(network: nn.Module, names: Sequence[str]) -> dict[str, list[Tensor]]:
    """Identity-initialised factors of each named parameter of ``network``, by the kind of layer that owns it."""
    factors: dict[str, list[Tensor]] = {}
    for name in names:
        owner_name, _, leaf = name.rpartition(".")
        owner, param = network.get_submodule(owner_name), network.get_parameter(name)
        if leaf == "weight" and isinstance(owner, nn.Conv2d):
            sizes = [param.shape[0], param.shape[1], param.shape[2] * param.shape[3]]
            factors[name] = [torch.eye(size) for size in sizes]  # M_o, M_i, M_s
        elif leaf == "weight" and isinstance(owner, nn.Linear):
            factors[name] = [torch.eye(param.shape[0]), torch.eye(param.shape[1])]  # M_o, M_i
        else:
            factors[name] = [torch.ones_like(param)]  # m
    return factors


@register("metacurvature")
class MetaCurvature(MAML):
    """MAML with the inner gradient transformed by meta-learned curvature matrices (identity at the start)."""

    options: GradientOptions

    def __init__(self, options: GradientOptions, input_shape: tuple[int, ...],
                 speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        self.curvature = nn.ParameterDict()
        layout: dict[str, tuple[str, ...]] = {}
        suffixes = {1: ("m",), 2: ("out", "in"), 3: ("out", "in", "space")}
        for name, factors in curvature_factors(self.network, self.adapted_names()).items():
            keys = tuple(f"{name.replace('.', '-')}-{suffix}" for suffix in suffixes[len(factors)])
            for key, factor in zip(keys, factors):
                self.curvature[key] = nn.Parameter(factor)
            layout[name] = keys
        #: adapted parameter name -> the keys of its curvature factors in ``self.curvature``
        self.curvature_layout = layout

    def update_rule(self, training: bool) -> UpdateRule:
        return CurvatureRule(self.options.inner_lr, self.curvature_layout, dict(self.curvature.items()))
