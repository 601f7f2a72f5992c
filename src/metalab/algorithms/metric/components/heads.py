"""Differentiable closed-form classifier heads fitted on a task's support embeddings.

* :func:`ridge_head` (R2-D2, Bertinetto et al. 2019): ridge regression onto one-hot targets in its
  Woodbury form, so the solve is [S, S] (support size) rather than [D, D] (embedding size).
* :func:`svm_head` (MetaOptNet, Lee et al. 2019): the Crammer-Singer multi-class SVM, solved in its
  dual for a batch of tasks and differentiated through its optimality (KKT) conditions.

The SVM dual (one task; n support items, W ways, kernel K = X X^T, one-hot targets Y [n, W])::

    minimise   1/2 sum_m a_m^T K a_m  +  eps/2 ||A||^2  -  <Y, A>        over A [n, W]
    subject to A <= C Y   (elementwise)      and      A 1 = 0   (each row sums to zero)

with class weights w_m = sum_i A[i, m] x_i, so query logits are K(query, support) @ A. ``eps`` is
MetaOptNet's identity added to the block kernel. The solver runs an accelerated projected
gradient method (the feasible set is a product of per-row sets with an exact projection) to
find the active bounds, then solves the KKT system of that active set with ``torch.linalg.solve``:
its value is the (polished) QP solution and autograd through the solve is the implicit gradient.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


# ------------------------------------------------------------------------------------ ridge (R2-D2)
def ridge_head(support: Tensor, targets: Tensor, lam: Tensor | float) -> Tensor:
    """Ridge-regression weights from support embeddings [T, S, D] onto targets [T, S, W] -> [T, D, W].

    W = X^T (X X^T + lam I)^{-1} Y, equal to (X^T X + lam I)^{-1} X^T Y (the normal equations)
    but with an [S, S] solve: the cost grows with the support size, not the embedding size.
    """
    size = support.shape[1]
    gram = support @ support.transpose(1, 2)
    eye = torch.eye(size, dtype=support.dtype, device=support.device)
    return support.transpose(1, 2) @ torch.linalg.solve(gram + lam * eye, targets)


# ---------------------------------------------------------------------------------- SVM (MetaOptNet)
def project_rows(z: Tensor, upper: Tensor) -> Tensor:
    """Euclidean projection of each row of z [..., W] onto {v : v <= upper, sum(v) = 0}.

    The projection is v = min(z - tau, upper) with tau the root of sum(v) = 0, found exactly: with
    the breakpoints b = z - upper sorted ascending, if the k smallest are the unclamped entries then
    tau_k = (sum of their z + sum of the other uppers) / k, valid when b_(k) < tau_k <= b_(k+1).
    Needs sum(upper) >= 0 (true for the SVM's C * one-hot bounds).
    """
    breaks, order = torch.sort(z - upper, dim=-1)
    z_sorted, upper_sorted = z.gather(-1, order), upper.gather(-1, order)
    ways = z.shape[-1]
    count = torch.arange(1, ways + 1, dtype=z.dtype, device=z.device)
    upper_rest = upper_sorted.sum(-1, keepdim=True) - upper_sorted.cumsum(-1)
    tau = (z_sorted.cumsum(-1) + upper_rest) / count
    next_break = torch.cat([breaks[..., 1:], torch.full_like(breaks[..., :1], math.inf)], -1)
    valid = (tau > breaks) & (tau <= next_break)
    first_valid = valid.to(torch.int8).argmax(-1, keepdim=True)
    chosen = tau.gather(-1, first_valid)
    return torch.minimum(z - chosen, upper)


@torch.no_grad()
def _solve_svm_dual(kernel: Tensor, targets: Tensor, c: float, eps: float, max_iter: int, tol: float) -> Tensor:
    """Accelerated projected gradient on the SVM dual (no autograd): kernel [T, n, n] -> A [T, n, W]."""
    eigenvalues = torch.linalg.eigvalsh(kernel)
    lipschitz = (eigenvalues[:, -1].clamp_min(0) + eps).view(-1, 1, 1)
    strong = (eigenvalues[:, 0].clamp_min(0) + eps).view(-1, 1, 1)
    momentum = (lipschitz.sqrt() - strong.sqrt()) / (lipschitz.sqrt() + strong.sqrt())
    upper = c * targets
    x = torch.zeros_like(targets)
    y = x
    for step in range(max_iter):
        gradient = kernel @ y + eps * y - targets
        x_next = project_rows(y - gradient / lipschitz, upper)
        y = x_next + momentum * (x_next - x)
        change = (x_next - x).abs().amax()
        x = x_next
        if step % 10 == 9 and change <= tol * max(c, 1.0):
            break
    return x


def svm_head(
    kernel: Tensor, support_y: Tensor, ways: int, c: float = 0.1, eps: float = 1.0,
    max_iter: int = 2000, tol: float = 1e-7,
) -> Tensor:
    """Crammer-Singer SVM dual solution A [T, n, W] for kernel [T, n, n] and labels [T, n].

    Differentiable w.r.t. ``kernel``: when autograd is on, the active set of the numerical solution
    fixes the KKT system (stationarity on free variables, active bounds, row sums), whose solve
    gives A and, through ``torch.linalg.solve``, the implicit gradient.
    """
    targets = F.one_hot(support_y, ways).to(kernel.dtype)  # [T, n, W]
    alpha = _solve_svm_dual(kernel.detach(), targets, c, eps, max_iter, tol)
    if not (torch.is_grad_enabled() and kernel.requires_grad):
        return alpha
    return _kkt_solve(kernel, targets, alpha, c, eps)


def _kkt_solve(kernel: Tensor, targets: Tensor, alpha: Tensor, c: float, eps: float) -> Tensor:
    """Solve the equality-constrained KKT system of the active set of ``alpha`` (differentiably).

    Variables x = vec(A) (row-major, n*W) and one multiplier per row-sum constraint (n):
      free j:    (K kron I + eps I)_j x + nu_{row(j)} = y_j
      active j:  x_j = C y_j
      row i:     sum_m x_{i,m} = 0
    """
    tasks, n, ways = targets.shape
    size = n * ways
    upper = (c * targets).flatten(1)  # [T, nW]
    active = (alpha.flatten(1) >= upper - 1e-9 * max(c, 1.0))  # [T, nW]
    eye_w = torch.eye(ways, dtype=kernel.dtype, device=kernel.device)
    hessian = torch.einsum("tij,mk->timjk", kernel, eye_w).reshape(tasks, size, size)
    hessian = hessian + eps * torch.eye(size, dtype=kernel.dtype, device=kernel.device)
    row_sum = torch.kron(torch.eye(n, dtype=kernel.dtype, device=kernel.device),
                         torch.ones(1, ways, dtype=kernel.dtype, device=kernel.device))  # [n, nW]
    identity = torch.eye(size, dtype=kernel.dtype, device=kernel.device).expand(tasks, -1, -1)
    top_left = torch.where(active.unsqueeze(-1), identity, hessian)
    zero = torch.zeros((), dtype=kernel.dtype, device=kernel.device)
    top_right = torch.where(active.unsqueeze(-1), zero, row_sum.t().expand(tasks, -1, -1))
    bottom = torch.cat([row_sum, torch.zeros(n, n, dtype=kernel.dtype, device=kernel.device)], 1).expand(tasks, -1, -1)
    system = torch.cat([torch.cat([top_left, top_right], 2), bottom], 1)
    rhs_top = torch.where(active, upper, targets.flatten(1))
    rhs = torch.cat([rhs_top, torch.zeros(tasks, n, dtype=kernel.dtype, device=kernel.device)], 1)
    solution = torch.linalg.solve(system, rhs.unsqueeze(-1)).squeeze(-1)
    return solution[:, :size].view(tasks, n, ways)


# ----------------------------------------------------------------- logistic regression (Baseline/RFS)
def logistic_regression_head(
    support: Tensor, support_y: Tensor, ways: int, c: float = 1.0, max_iter: int = 100, tol: float = 1e-6,
) -> tuple[Tensor, Tensor]:
    """Multinomial logistic regression fitted on frozen support embeddings [T, S, D], labels [T, S].

    Minimises, for each task, sum_i CE(x_i W + b, y_i) + ||W||^2 / (2C) (scikit-learn's objective;
    the bias is not penalised) with its own L-BFGS: one L-BFGS over a batch's summed objective would
    share its line search and stopping tests between tasks, so a task's answer would depend on the
    tasks it was batched with (and so on ``speed.eval_batch``).
    Returns weights [T, D, W] and biases [T, W] (detached: the embeddings are frozen).
    """
    support = support.detach()
    fitted = [_fit_one_task(support[t:t + 1], support_y[t:t + 1], ways, c, max_iter, tol)
              for t in range(support.shape[0])]
    return torch.cat([w for w, _ in fitted]), torch.cat([b for _, b in fitted])


def _fit_one_task(support: Tensor, support_y: Tensor, ways: int, c: float, max_iter: int,
                  tol: float) -> tuple[Tensor, Tensor]:
    """:func:`logistic_regression_head` for one task: support [1, S, D] -> weights [1, D, W], biases [1, W]."""
    weights = torch.zeros(1, support.shape[-1], ways, dtype=support.dtype, device=support.device,
                          requires_grad=True)
    biases = torch.zeros(1, ways, dtype=support.dtype, device=support.device, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights, biases], lr=1, max_iter=max_iter, tolerance_grad=tol,
                                  tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def objective() -> Tensor:
        optimizer.zero_grad()
        value = logistic_objective(support, support_y, weights, biases, c).sum()
        value.backward()
        return value

    with torch.enable_grad():
        optimizer.step(objective)
    return weights.detach(), biases.detach()


def logistic_objective(support: Tensor, support_y: Tensor, weights: Tensor, biases: Tensor, c: float) -> Tensor:
    """Per-task objective [T]: summed cross-entropy + ||W||^2 / (2C)."""
    logits = support @ weights + biases.unsqueeze(1)
    cross_entropy = F.cross_entropy(logits.transpose(1, 2), support_y, reduction="none").sum(1)
    return cross_entropy + weights.pow(2).sum((1, 2)) / (2 * c)
