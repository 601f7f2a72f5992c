"""Closed-form heads against independent computations: ridge vs normal equations / lstsq;
SVM dual vs KKT conditions, SciPy's SLSQP, and finite-difference gradients."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
import torch
import torch.nn.functional as F

from metalab.algorithms.metric.components.heads import project_rows, ridge_head, svm_head


def test_ridge_head_equals_normal_equations_and_lstsq():
    torch.manual_seed(0)
    support = torch.randn(3, 10, 7, dtype=torch.float64)
    targets = F.one_hot(torch.randint(0, 4, (3, 10)), 4).double()
    lam = 0.7
    weights = ridge_head(support, targets, lam)
    eye = torch.eye(7, dtype=torch.float64)
    normal = torch.linalg.solve(support.transpose(1, 2) @ support + lam * eye, support.transpose(1, 2) @ targets)
    torch.testing.assert_close(weights, normal)
    augmented_x = torch.cat([support, lam**0.5 * eye.expand(3, -1, -1)], 1)
    augmented_y = torch.cat([targets, torch.zeros(3, 7, 4, dtype=torch.float64)], 1)
    torch.testing.assert_close(weights, torch.linalg.lstsq(augmented_x, augmented_y).solution)


def test_projection_is_the_closest_feasible_point():
    torch.manual_seed(1)
    z = torch.randn(50, 5, dtype=torch.float64) * 2
    upper = 0.3 * F.one_hot(torch.randint(0, 5, (50,)), 5).double()
    v = project_rows(z, upper)
    assert torch.all(v <= upper + 1e-12) and torch.allclose(v.sum(-1), torch.zeros(50, dtype=torch.float64), atol=1e-12)
    for row in range(50):  # against SciPy on the same small QP
        target = z[row].numpy()
        result = scipy.optimize.minimize(
            lambda x, target=target: 0.5 * np.sum((x - target) ** 2), np.zeros(5),
            jac=lambda x, target=target: x - target,
            method="SLSQP", constraints=[{"type": "eq", "fun": np.sum}],
            bounds=[(None, float(u)) for u in upper[row]], options={"ftol": 1e-14, "maxiter": 500},
        )
        np.testing.assert_allclose(v[row].numpy(), result.x, atol=1e-6)


def _svm_problem(seed, n=8, ways=3, dim=5, tasks=2):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(tasks, n, dim, generator=generator, dtype=torch.float64)
    labels = torch.arange(ways).repeat(n // ways + 1)[:n].expand(tasks, -1).contiguous()
    return features, labels


def _svm_reference(kernel, labels, ways, c, eps):
    """The same dual QP with SciPy's SLSQP."""
    n = kernel.shape[0]
    targets = np.eye(ways)[labels]
    hessian = np.kron(kernel, np.eye(ways)) + eps * np.eye(n * ways)
    objective = lambda x: 0.5 * x @ hessian @ x - targets.ravel() @ x  # noqa: E731
    constraints = [{"type": "eq", "fun": lambda x, i=i: x[i * ways:(i + 1) * ways].sum()} for i in range(n)]
    result = scipy.optimize.minimize(
        objective, np.zeros(n * ways), jac=lambda x: hessian @ x - targets.ravel(), method="SLSQP",
        bounds=[(None, c * t) for t in targets.ravel()], constraints=constraints,
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    assert result.success, result.message
    return result.x.reshape(n, ways)


@pytest.mark.parametrize("c,eps", [(0.1, 1.0), (1.0, 0.1)])
def test_svm_head_satisfies_kkt_and_matches_scipy(c, eps):
    features, labels = _svm_problem(0)
    kernel = features @ features.transpose(1, 2)
    alpha = svm_head(kernel, labels, 3, c=c, eps=eps)
    targets = F.one_hot(labels, 3).double()
    # primal feasibility
    assert torch.all(alpha <= c * targets + 1e-9)
    torch.testing.assert_close(alpha.sum(-1), torch.zeros(2, 8, dtype=torch.float64), atol=1e-9, rtol=0)
    # stationarity + dual feasibility: per row, free entries share the gradient value -nu_i and
    # active (bound) entries have gradient <= that value (a non-negative bound multiplier).
    gradient = kernel @ alpha + eps * alpha - targets
    free = alpha < c * targets - 1e-7
    for t in range(2):
        for i in range(8):
            g, f = gradient[t, i], free[t, i]
            assert f.any()
            nu = -g[f].mean()
            torch.testing.assert_close(g[f], -nu.expand(int(f.sum())), atol=1e-6, rtol=0)
            assert torch.all(g[~f] <= -nu + 1e-6)
    for t in range(2):
        reference = _svm_reference(kernel[t].numpy(), labels[t].numpy(), 3, c, eps)
        np.testing.assert_allclose(alpha[t].numpy(), reference, atol=1e-5)


def test_svm_head_gradient_matches_finite_differences():
    features, labels = _svm_problem(3, n=6, ways=3, dim=4, tasks=2)
    query = torch.randn(2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    features.requires_grad_(True)

    def logits(x):
        alpha = svm_head(x @ x.transpose(1, 2), labels, 3, c=0.5, eps=0.5, tol=1e-9)
        return (query @ x.transpose(1, 2)) @ alpha

    assert torch.autograd.gradcheck(logits, (features,), eps=1e-6, atol=1e-5)


def test_svm_head_without_autograd_equals_polished_solution():
    features, labels = _svm_problem(5)
    kernel = features @ features.transpose(1, 2)
    with torch.no_grad():
        plain = svm_head(kernel, labels, 3)
    polished = svm_head(kernel.requires_grad_(True), labels, 3)
    torch.testing.assert_close(plain, polished.detach(), atol=1e-6, rtol=0)
