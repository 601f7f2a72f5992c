"""DARTS's architecture gradient: the finite-difference Hessian-vector product against the exact one (float64,
autograd), its O(eps^2) error, and the second-order gradient against the exact unrolled derivative."""
from __future__ import annotations

import torch
from torch import nn

from metalab.nas.darts import (
    architecture_gradient_first_order,
    architecture_gradient_second_order,
    batch_loss,
    finite_difference_hvp,
)
from metalab.nas.space import SpaceOptions, alpha_names, search_classifier, weight_names


class SmoothMixture(nn.Module):
    """A mixed layer of smooth candidates (so that finite differences see no kink): x [B, 4] -> logits [B, 3]."""

    def __init__(self) -> None:
        super().__init__()
        self.alpha_mix = nn.Parameter(torch.randn(3))
        self.a, self.b, self.head = nn.Linear(4, 6), nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x):
        w = torch.softmax(self.alpha_mix, 0)
        return self.head(w[0] * torch.tanh(self.a(x)) + w[1] * torch.sigmoid(self.b(x)) + w[2] * self.a(x) ** 2)


def batch(seed, n=16, shape=(4,), classes=3):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(n, *shape, generator=generator, dtype=torch.float64),
            torch.randint(0, classes, (n,), generator=generator))


def exact_hvp(model, alphas, weights, vector, data):
    """grad2_{alpha,w} L . v by double backward."""
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(batch_loss(model, params, data), [params[n] for n in weights], create_graph=True)
    dot = sum((g * v).sum() for g, v in zip(grads, vector))
    return torch.autograd.grad(dot, [params[n] for n in alphas])


def relative_error(ours, exact):
    return float(torch.linalg.vector_norm(torch.cat([(a - b).flatten() for a, b in zip(ours, exact)]))
                 / torch.linalg.vector_norm(torch.cat([b.flatten() for b in exact])))


def test_finite_difference_hessian_vector_product_has_an_eps_squared_error():
    torch.manual_seed(0)
    model = SmoothMixture().double()
    alphas, weights = alpha_names(model), weight_names(model)
    params = dict(model.named_parameters())
    vector = [torch.randn_like(params[n]) for n in weights]
    data = batch(1)
    exact = exact_hvp(model, alphas, weights, vector, data)
    coarse = relative_error(finite_difference_hvp(model, params, alphas, weights, vector, data, r=0.01), exact)
    fine = relative_error(finite_difference_hvp(model, params, alphas, weights, vector, data, r=0.001), exact)
    assert coarse < 1e-4  # the paper's eps = 0.01 / ||v||
    assert 30 < coarse / fine < 300  # eps / 10 -> error / 100: O(eps^2)


def test_finite_difference_hessian_vector_product_on_a_search_network():
    torch.manual_seed(0)
    model = search_classifier(SpaceOptions(cells=2, channels=2, nodes=2, reductions=[1]), (1, 6, 6), classes=3).double()
    alphas, weights = alpha_names(model), weight_names(model)
    params = dict(model.named_parameters())
    vector = [torch.randn_like(params[n]) for n in weights]
    data = batch(2, n=8, shape=(1, 6, 6))
    exact = exact_hvp(model, alphas, weights, vector, data)
    # this 2-channel network's BatchNorm over 8 images is so curved that the paper's r = 0.01 is outside the
    # O(eps^2) regime (relative error ~1); at r = 0.001 the difference is ~1e-7 (no ReLU or max-pool kink crossed)
    ours = finite_difference_hvp(model, params, alphas, weights, vector, data, r=0.001)
    assert relative_error(ours, exact) < 1e-5


def test_second_order_gradient_is_the_unrolled_derivative():
    """grad_alpha L_val(w - xi grad_w L_train(w, alpha), alpha), differentiated exactly through the virtual step,
    against eq. 7 with the finite-difference product; xi = 0 is the first-order gradient exactly."""
    torch.manual_seed(0)
    model = SmoothMixture().double()
    alphas, weights = alpha_names(model), weight_names(model)
    train, val = batch(3), batch(4)
    xi = 0.1
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(batch_loss(model, params, train), [params[n] for n in weights], create_graph=True)
    unrolled = {**params, **{n: params[n] - xi * g for n, g in zip(weights, grads)}}
    exact = torch.autograd.grad(batch_loss(model, unrolled, val), [params[n] for n in alphas])
    ours = architecture_gradient_second_order(model, alphas, weights, train, val, xi)
    assert relative_error(ours, exact) < 1e-4
    first = architecture_gradient_first_order(model, alphas, val)
    assert relative_error(first, exact) > 1e-3  # the second-order term matters here
    zero = architecture_gradient_second_order(model, alphas, weights, train, val, xi=0.0)
    assert all(torch.equal(a, b) for a, b in zip(zero, first))
