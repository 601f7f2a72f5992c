"""The Laplace approximation of a network's weight posterior with Kronecker-factored curvature (K-FAC).

For a network whose outputs f(x) define the likelihood p(y | f) of each example, and a Gaussian prior
N(theta, tau^-1 I) on the weights, the Laplace approximation of the posterior at a mode phi* is

    q(phi) = N(phi*, H^-1),   H = sum_n J_n^T Lambda_n J_n + tau I,

with J_n the Jacobian of f(x_n) in the weights and Lambda_n = -d^2 log p(y | f) / df^2 (the generalised
Gauss-Newton matrix, equal to the Fisher for these likelihoods: softmax, Lambda = diag(p) - p p^T; Gaussian with
noise sigma, Lambda = I / sigma^2). K-FAC (Martens & Grosse 2015; convolutions: Grosse & Martens 2016) keeps one
block per layer l, with weights W_l [out, in] (the bias as a last column, the input a with a homogeneous 1) and
pre-activations s = W a:

    H_l ~ A_l (x) G_l + tau I,   A_l = sum_{n,t} a a^T,   G_l = mean_{n,t} sum_k g_k g_k^T,   g_k = J_s^T L[:, k],

where L L^T = Lambda (the expectation over y in closed form, no sampled labels) and t runs over the locations of a
convolution. For one linear layer with a Gaussian likelihood (Lambda constant) the factorisation is exact.
With A = U_A diag(a) U_A^T and G = U_G diag(g) U_G^T, the eigenvalues of A (x) G + tau I are a_i g_j + tau:
the log-determinant and posterior samples cost two small eigendecompositions per layer
(:class:`KroneckerFactors`).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from metalab.nn.reference import _batch_norm_statistics

#: outputs [N, C] -> L [N, C, K] with L L^T = Lambda, the likelihood's Hessian in the outputs
OutputCurvature = Callable[[Tensor], Tensor]


def softmax_curvature(logits: Tensor) -> Tensor:
    """L with L L^T = diag(p) - p p^T for p = softmax(logits [N, C]): L = diag(sqrt p) - p sqrt(p)^T, [N, C, C]."""
    p = logits.softmax(-1)
    root = p.sqrt()
    return torch.diag_embed(root) - p.unsqueeze(-1) * root.unsqueeze(-2)


def gaussian_curvature(noise_std: float) -> OutputCurvature:
    """L = I / sigma for a Gaussian likelihood N(y; f, sigma^2 I): outputs [N, D] -> [N, D, D]."""
    def curvature(outputs: Tensor) -> Tensor:
        eye = torch.eye(outputs.shape[-1], dtype=outputs.dtype, device=outputs.device)
        return (eye / noise_std).expand(outputs.shape[0], -1, -1)
    return curvature


@dataclass
class KroneckerFactors:
    """One layer's curvature A (x) G on its weights W [out, in] (bias last); a [..., in, in], g [..., out, out],
    with leading task dimensions where several tasks are held."""

    a: Tensor
    g: Tensor

    def eigenvalues(self, precision: float) -> Tensor:
        """a_i g_j + tau [..., out, in]: the eigenvalues of A (x) G + tau I (``eigvalsh``: its gradient is stable
        where eigenvalues repeat, as those of a low-rank A do; in float64, where float32's solver can fail to
        converge on the many zero eigenvalues of a few-shot A)."""
        values_g, values_a = torch.linalg.eigvalsh(self.g.double()), torch.linalg.eigvalsh(self.a.double())
        return (values_g.unsqueeze(-1) * values_a.unsqueeze(-2) + precision).to(self.a.dtype)

    def log_det(self, precision: float) -> Tensor:
        """log det(A (x) G + tau I) [...]."""
        return self.eigenvalues(precision).clamp_min(precision).log().flatten(-2).sum(-1)

    def sample(self, precision: float, count: int, generator: torch.Generator | None = None) -> Tensor:
        """``count`` draws of dW ~ N(0, (A (x) G + tau I)^-1): [count, ..., out, in].

        dW = U_G (E / sqrt(a_j g_i + tau)) U_A^T with E standard normal, in the eigenbases of G and A.
        """
        values_g, vectors_g = torch.linalg.eigh(self.g.double())
        values_a, vectors_a = torch.linalg.eigh(self.a.double())
        scale = (values_g.unsqueeze(-1) * values_a.unsqueeze(-2)).clamp_min(0) + precision  # [..., out, in]
        noise = torch.randn((count, *scale.shape), generator=generator, dtype=scale.dtype, device=scale.device)
        return (vectors_g @ (noise / scale.sqrt()) @ vectors_a.transpose(-1, -2)).to(self.a.dtype)

    def dense(self) -> Tensor:
        """The curvature as a matrix on W flattened row by row ((o, i) -> o * in + i): kron(G, A), [out*in, out*in]."""
        return torch.kron(self.g, self.a)


def weight_matrix(params: Mapping[str, Tensor], name: str, layer: nn.Module) -> Tensor:
    """W~ = [W, b] of a Linear or Conv2d ``layer`` (its qualified ``name``): [..., out, in (* kh * kw) (+ 1)], the bias
    column where it has one; leading task dimensions of the parameters are kept."""
    weight = params[f"{name}.weight"]
    matrix = weight.flatten(-3) if isinstance(layer, nn.Conv2d) else weight
    if layer.bias is None:
        return matrix
    return torch.cat([matrix, params[f"{name}.bias"].unsqueeze(-1)], -1)


def with_weight_matrix(params: Mapping[str, Tensor], name: str, layer: nn.Module, matrix: Tensor) -> dict[str, Tensor]:
    """``params`` with the layer's weight and bias read back from W~ (:func:`weight_matrix`'s layout)."""
    changed = dict(params)
    if layer.bias is not None:
        changed[f"{name}.bias"] = matrix[..., -1]
        matrix = matrix[..., :-1]
    changed[f"{name}.weight"] = matrix.reshape(params[f"{name}.weight"].shape)
    return changed


def curvature_layers(module: nn.Module, names: Sequence[str] | None = None) -> list[str]:
    """The Linear and Conv2d layers of ``module`` (qualified names), or those of ``names`` among them."""
    layers = [name for name, m in module.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return layers if names is None else [name for name in layers if name in names]


def kronecker_factors(module: nn.Module, params: Mapping[str, Tensor], x: Tensor, output_curvature: OutputCurvature,
                      layers: Sequence[str], statistics: str = "batch",
                      create_graph: bool = False) -> dict[str, KroneckerFactors]:
    """The K-FAC factors of ``layers`` (Linear or Conv2d modules of ``module``) for one set of inputs x [N, ...].

    ``params``: every parameter of ``module`` by qualified name (one task's); ``statistics``: what its BatchNorm
    layers normalise with ("batch" or "running"); ``create_graph``: keep the graph, so that the factors (and a
    log-determinant of them) can be differentiated in the parameters.
    """
    modules = dict(module.named_modules())
    inputs: dict[str, Tensor] = {}
    outputs: dict[str, Tensor] = {}

    def hook(name: str):
        def store(layer: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
            inputs[name], outputs[name] = args[0], out
        return store

    handles = [modules[name].register_forward_hook(hook(name)) for name in layers]
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    buffers = {name: value.clone() for name, value in module.named_buffers()}
    try:
        with _batch_norm_statistics(norms, statistics), torch.enable_grad():
            # constants (evaluation's detached weights) become leaves, so that the layers' outputs have a graph
            leaves = {name: value if value.requires_grad else value.detach().requires_grad_()
                      for name, value in params.items()}
            out = functional_call(module, (leaves, buffers), (x,))
    finally:
        for handle in handles:
            handle.remove()
    with torch.enable_grad():
        root = output_curvature(out)  # [N, C, K]
    factors = {}
    with torch.enable_grad():
        columns = [torch.autograd.grad(out, [outputs[name] for name in layers], root[..., k], retain_graph=True,
                                       create_graph=create_graph) for k in range(root.shape[-1])]
    for index, name in enumerate(layers):
        layer = modules[name]
        a = inputs[name]
        if isinstance(layer, nn.Conv2d):
            if isinstance(layer.padding, str):
                raise ValueError(f"K-FAC of {name}: padding={layer.padding!r} is not supported; give it in pixels")
            a = F.unfold(a, layer.kernel_size, layer.dilation, layer.padding, layer.stride)  # [N, in*kh*kw, T]
            a = a.transpose(1, 2).flatten(0, 1)  # [N*T, in*kh*kw]
        if layer.bias is not None:
            a = torch.cat([a, a.new_ones(a.shape[0], 1)], -1)
        g = torch.stack([column[index] for column in columns])  # [K, N, out(, h, w)]
        g = g.flatten(3).transpose(2, 3).flatten(1, 2) if isinstance(layer, nn.Conv2d) else g  # [K, N*T, out]
        factors[name] = KroneckerFactors(a.transpose(0, 1) @ a, torch.einsum("knp,knq->pq", g, g) / g.shape[1])
    return factors
