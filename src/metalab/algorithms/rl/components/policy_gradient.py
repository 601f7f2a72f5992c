"""Policy-gradient objectives and TRPO's constrained update (Schulman et al. 2015).

* :func:`reinforce_loss`: REINFORCE with a baseline (Williams 1992), per task: -mean_t log pi(a_t|s_t) A_t;
* :func:`surrogate_loss`: the importance-weighted surrogate -mean_t pi(a_t|s_t) / pi_old(a_t|s_t) A_t, whose
  gradient at pi = pi_old is REINFORCE's;
* :func:`trpo_update`: maximise the surrogate subject to mean KL(pi_old || pi) <= delta: the natural-gradient
  direction s = F^-1 g by conjugate gradient on Fisher-vector products (the Hessian of the mean KL), the step
  sqrt(2 delta / s^T F s) s, then a backtracking line search that keeps a step only if it lowers the loss and
  respects the KL bound (Appendix C of the TRPO paper).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metalab.nn.implicit import conjugate_gradient


def masked_task_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over each task's valid steps: values, mask [T, ...] -> [T]."""
    dims = tuple(range(1, values.dim()))
    return (values * mask).sum(dims) / mask.sum(dims).clamp_min(1)


def reinforce_loss(log_probs: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    """-mean_t log pi(a_t|s_t) A_t per task: [T] (log_probs, advantages, mask [T, ...])."""
    return -masked_task_mean(log_probs * advantages, mask)


def surrogate_loss(log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    """-mean_t exp(log pi - log pi_old) A_t per task: [T]."""
    return -masked_task_mean(torch.exp(log_probs - old_log_probs) * advantages, mask)


@dataclass
class TRPO:
    """TRPO's settings (rllab's and the MAML authors' defaults)."""

    #: delta, the bound on the mean KL divergence between the old and the new policy
    max_kl: float = 0.01
    #: conjugate-gradient iterations for F^-1 g
    cg_iters: int = 10
    #: damping added to the Fisher matrix (F + damping I)
    cg_damping: float = 1e-5
    #: the line search shrinks the step by this factor at each try
    backtrack_ratio: float = 0.8
    #: tries of the line search before keeping the old parameters
    max_backtracks: int = 15


def flat(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def fisher_vector_product(kl: Tensor, params: Sequence[Tensor], damping: float) -> Callable[[Tensor], Tensor]:
    """v -> (F + damping I) v, F the Hessian of ``kl`` (built with a graph) w.r.t. ``params`` (Pearlmutter's
    double backward: the gradient of (grad kl) . v)."""
    grads = flat(torch.autograd.grad(kl, params, create_graph=True))

    def product(vector: Tensor) -> Tensor:
        hv = torch.autograd.grad(grads @ vector, params, retain_graph=True)
        return flat(hv) + damping * vector

    return product


def natural_step(gradient: Tensor, fvp: Callable[[Tensor], Tensor], max_kl: float, cg_iters: int) -> Tensor:
    """The full TRPO step for the loss gradient ``gradient``: s = F^-1 (-g), scaled so that 1/2 s^T F s = delta."""
    solution = conjugate_gradient(lambda d: {"x": fvp(d["x"][0]).unsqueeze(0)}, {"x": -gradient.unsqueeze(0)},
                                  cg_iters)["x"][0]
    curvature = 0.5 * solution @ fvp(solution)
    return solution * torch.sqrt(max_kl / curvature.clamp_min(1e-12))


def trpo_update(params: Sequence[nn.Parameter], objective: Callable[[bool], tuple[Tensor, Tensor]],
                settings: TRPO) -> dict[str, Tensor]:
    """One TRPO update of ``params`` in place.

    ``objective(graph)`` returns (loss, mean KL(pi_old || pi)) at the current values of ``params``, with graphs
    to differentiate twice when ``graph`` (the KL is 0 at the old parameters; its Hessian there is the Fisher
    matrix), without for the line search's tries. Returns the loss before
    and after, the KL of the kept step and the fraction of the full step kept (0: none was accepted).
    """
    loss, kl = objective(True)
    gradient = flat(torch.autograd.grad(loss, params, retain_graph=True))
    step = natural_step(gradient, fisher_vector_product(kl, params, settings.cg_damping), settings.max_kl,
                        settings.cg_iters)
    old = [p.detach().clone() for p in params]
    kept, new_loss, new_kl = 0.0, loss.detach(), torch.zeros(())
    for k in range(settings.max_backtracks):
        fraction = settings.backtrack_ratio**k
        with torch.no_grad():
            offset = 0
            for p, p_old in zip(params, old):
                p.copy_(p_old + fraction * step[offset:offset + p.numel()].view_as(p))
                offset += p.numel()
        trial_loss, trial_kl = (value.detach() for value in objective(False))
        if bool(trial_kl <= settings.max_kl) and bool(trial_loss < loss.detach()):
            kept, new_loss, new_kl = fraction, trial_loss, trial_kl
            break
    else:
        with torch.no_grad():
            for p, p_old in zip(params, old):
                p.copy_(p_old)
    return {"loss": loss.detach(), "loss_after": new_loss, "kl": new_kl, "step_fraction": torch.tensor(kept)}
