"""Meta-Curvature against MAML and against the explicit Kronecker-product matrix of its curvature."""
from __future__ import annotations

import pytest
import torch
from meta_gradients import assert_same_gradients, build, image_tasks, meta_gradient, sine_tasks

from metalab.algorithms.gradient.maml import MAML
from metalab.algorithms.gradient.metacurvature import MetaCurvature, curvature_transform


@pytest.mark.parametrize("backbone", ["conv4", "mlp"])
@pytest.mark.parametrize("first_order", [False, True])
def test_identity_curvature_is_maml(backbone, first_order):
    batch = image_tasks() if backbone == "conv4" else sine_tasks()
    options = dict(backbone=backbone, inner_steps=2, inner_lr=0.3, first_order=first_order)
    learner = build(MetaCurvature, **options)
    assert_same_gradients(meta_gradient(learner, batch), meta_gradient(build(MAML, **options), batch))
    # and the curvature itself is meta-learned: every factor receives a meta-gradient
    assert all(p.grad is not None and float(p.grad.abs().max()) > 0 for p in learner.curvature.values())


def test_a_scalar_curvature_is_maml_with_a_scaled_rate():
    """M_o = s I (kernels and weights), m = s (the rest): MC(g) = s g, i.e. MAML at rate s * alpha."""
    batch, s = image_tasks(), 0.5
    learner = build(MetaCurvature, inner_steps=2, inner_lr=0.3)
    with torch.no_grad():
        for key, factor in learner.curvature.items():
            if key.endswith("-out") or key.endswith("-m"):
                factor.mul_(s)
    maml = build(MAML, inner_steps=2, inner_lr=0.3 * s)
    assert_same_gradients(meta_gradient(learner, batch), meta_gradient(maml, batch))


def test_the_tensor_product_form_is_the_kronecker_product_matrix():
    generator = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, generator=generator, dtype=torch.float64)  # noqa: E731
    grad = rand(2, 3, 2, 2, 2)  # two tasks' gradients of a kernel [C_out=3, C_in=2, 2x2]
    m_o, m_i, m_s = rand(3, 3), rand(2, 2), rand(4, 4)
    kronecker = torch.kron(m_o, torch.kron(m_i, m_s))  # acts on the row-major vec of [C_out, C_in, k*k]
    expected = torch.stack([(kronecker @ grad[t].flatten()).view(3, 2, 2, 2) for t in range(2)])
    assert torch.allclose(curvature_transform(grad, [m_o, m_i, m_s]), expected, atol=1e-12)
    weight_grad = rand(2, 3, 5)  # a linear weight [out, in]: M_o G M_i^T
    m_o, m_i = rand(3, 3), rand(5, 5)
    assert torch.allclose(curvature_transform(weight_grad, [m_o, m_i]), m_o @ weight_grad @ m_i.T, atol=1e-12)
    bias_grad, m = rand(2, 3), rand(3)
    assert torch.equal(curvature_transform(bias_grad, [m]), bias_grad * m)


def test_factors_follow_the_layers():
    learner = build(MetaCurvature)
    shapes = {key: tuple(p.shape) for key, p in learner.curvature.items()}
    assert shapes["body-blocks-0-0-weight-out"] == (4, 4)
    assert shapes["body-blocks-0-0-weight-in"] == (1, 1)
    assert shapes["body-blocks-0-0-weight-space"] == (9, 9)
    assert shapes["body-blocks-1-0-weight-in"] == (4, 4)
    assert shapes["head-weight-out"] == (3, 3) and shapes["head-weight-in"] == (4, 4)
    assert shapes["body-blocks-0-1-weight-m"] == (4,) and shapes["head-bias-m"] == (3,)
    assert all(torch.equal(p, torch.eye(p.shape[0], dtype=p.dtype)) for key, p in learner.curvature.items()
               if not key.endswith("-m"))
