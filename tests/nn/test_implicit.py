"""Hessian-vector products against the Hessian torch.autograd.functional forms, and per-task conjugate
gradients against torch.linalg.solve (float64, see conftest.py)."""
from __future__ import annotations

import torch

from metalab.nn.implicit import conjugate_gradient, hessian_vector_product


def cubic_loss(params: dict[str, torch.Tensor]) -> torch.Tensor:
    """A non-quadratic function of two tensors, so that the Hessian depends on the point."""
    a, b = params["a"], params["b"]
    return (a.pow(3).sum() * b.sum()) + (a.sin() * b[:3]).sum() + b.pow(4).sum()


def test_hessian_vector_product_equals_the_full_hessian_times_the_vector():
    generator = torch.Generator().manual_seed(0)
    params = {"a": torch.randn(3, generator=generator), "b": torch.randn(4, generator=generator)}
    vector = {"a": torch.randn(3, generator=generator), "b": torch.randn(4, generator=generator)}
    flat = torch.cat([params["a"], params["b"]])
    hessian = torch.autograd.functional.hessian(lambda z: cubic_loss({"a": z[:3], "b": z[3:]}), flat)
    expected = hessian @ torch.cat([vector["a"], vector["b"]])
    ours = hessian_vector_product(cubic_loss, params, vector)
    assert torch.allclose(torch.cat([ours["a"], ours["b"]]), expected, atol=1e-12)


def test_conjugate_gradient_solves_each_task_s_system():
    """T tasks with their own SPD matrices (iMAML's I + H / lambda): x_t = A_t^-1 b_t, tensors split in two."""
    generator = torch.Generator().manual_seed(1)
    tasks, size = 3, 7
    factors = torch.randn(tasks, size, size, generator=generator)
    matrices = factors @ factors.transpose(1, 2) / size + torch.eye(size)
    b = torch.randn(tasks, size, generator=generator)

    def matvec(v: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        product = (matrices @ torch.cat([v["u"], v["w"].flatten(1)], 1).unsqueeze(-1)).squeeze(-1)
        return {"u": product[:, :3], "w": product[:, 3:].view(tasks, 2, 2)}

    x = conjugate_gradient(matvec, {"u": b[:, :3], "w": b[:, 3:].view(tasks, 2, 2)}, steps=size)
    ours = torch.cat([x["u"], x["w"].flatten(1)], 1)
    assert torch.allclose(ours, torch.linalg.solve(matrices, b), atol=1e-9)


def test_conjugate_gradient_with_few_steps_reduces_the_residual_and_stops_solved_tasks():
    generator = torch.Generator().manual_seed(2)
    matrices = torch.stack([torch.eye(5), torch.diag(torch.arange(1.0, 6.0))])
    b = torch.randn(2, 5, generator=generator)

    def matvec(v):
        return {"x": (matrices @ v["x"].unsqueeze(-1)).squeeze(-1)}

    one = conjugate_gradient(matvec, {"x": b}, steps=1)["x"]
    assert torch.allclose(one[0], b[0], atol=1e-12)  # the identity is solved in one step, then stays put
    three = conjugate_gradient(matvec, {"x": b}, steps=3)["x"]
    residual = lambda x: (matrices[1] @ x[1] - b[1]).norm()  # noqa: E731
    assert residual(three) < residual(one) < b[1].norm()
    assert torch.allclose(three[0], b[0], atol=1e-12)


def test_conjugate_gradient_stops_a_task_at_non_positive_curvature():
    """Truncated CG: an indefinite task stops (b if at the first iteration) while a definite one is solved."""
    matrices = torch.stack([torch.diag(torch.tensor([1.0, -1.0])), torch.diag(torch.tensor([2.0, -3.0])),
                            torch.diag(torch.tensor([2.0, 4.0]))]).double()
    b = torch.tensor([[1.0, 1.0], [1.0, 0.1], [1.0, 1.0]], dtype=torch.float64)

    def matvec(v):
        return {"x": (matrices @ v["x"].unsqueeze(-1)).squeeze(-1)}

    x = conjugate_gradient(matvec, {"x": b}, steps=5)["x"]
    assert torch.equal(x[0], b[0])  # b^T A b = 0 at once: the steepest-descent direction
    first_step = (b[1] @ b[1]) / (b[1] @ matrices[1] @ b[1]) * b[1]  # positive curvature first, negative next
    assert torch.allclose(x[1], first_step, atol=1e-12)
    assert torch.allclose(x[2], torch.tensor([0.5, 0.25], dtype=torch.float64), atol=1e-12)
