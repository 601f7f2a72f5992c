"""Meta-training the LSTM optimizer by truncated back-propagation through unrolled optimisation
(Andrychowicz et al. 2016, section 2 and 3).

The meta-objective of a trajectory is L(phi) = E_f [ sum_t w_t f(theta_t) ] with w_t = 1 (eq. 2). It is
unrolled in truncations of ``unroll`` steps (20 in the paper) over a ``horizon`` (100): each truncation
back-propagates the sum of its steps' losses f(theta_{t+1}) into phi, one Adam step follows, and theta and the
LSTM state go on into the next truncation as constants. As in the paper (section 2.1), the gradients
grad_t = grad f(theta_t) fed to the optimizer are constants of the meta-graph ("we drop the second derivatives",
d grad_t / d phi = 0) unless ``second_order``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from metalab.optimizers.lstm import Hidden, LSTMOptimizerNet
from metalab.optimizers.problems import Problems


@dataclass
class Trajectory:
    """Where B problems' optimisation stands: theta [B, N], the LSTM state, and the step reached."""

    theta: Tensor
    hidden: Hidden | None
    step: int = 0

    def detached(self) -> Trajectory:
        return Trajectory(self.theta.detach(), None if self.hidden is None else self.hidden.detach(), self.step)


def unroll(net: LSTMOptimizerNet, problems: Problems, start: Trajectory, steps: int,
           second_order: bool = False) -> tuple[Tensor, Trajectory]:
    """``steps`` optimizer steps from ``start``: the losses f(theta_{t+1}) [steps, B] (in the graph of phi) and
    where the trajectory ends (still in the graph: detach it to truncate)."""
    theta = start.theta if start.theta.requires_grad else start.theta.detach().requires_grad_()
    hidden = start.hidden
    loss = problems.loss(theta, start.step)
    losses = []
    for t in range(start.step, start.step + steps):
        (grad,) = torch.autograd.grad(loss.sum(), theta, create_graph=second_order, retain_graph=True)
        if not second_order:
            grad = grad.detach()  # d grad_t / d phi = 0 (section 2.1)
        update, hidden = net(grad, hidden)
        theta = theta + update
        loss = problems.loss(theta, t + 1)
        losses.append(loss)
    return torch.stack(losses), Trajectory(theta, hidden, start.step + steps)


def optimize(net: LSTMOptimizerNet, problems: Problems, steps: int) -> Tensor:
    """Run the optimizer ``steps`` steps on fresh problems without a meta-graph: losses [steps + 1, B]
    (f(theta_0) first)."""
    theta = problems.initial().requires_grad_()
    hidden = None
    losses = []
    for t in range(steps + 1):
        loss = problems.loss(theta, t)
        losses.append(loss.detach())
        if t == steps:
            break
        (grad,) = torch.autograd.grad(loss.sum(), theta)
        with torch.no_grad():
            update, hidden = net(grad, hidden)
        theta = (theta.detach() + update).requires_grad_()
    return torch.stack(losses)


def meta_loss(losses: Tensor) -> Tensor:
    """sum_t w_t f(theta_t) with w_t = 1, averaged over the batch's problems (and over the steps, which only
    scales it): the truncation's objective."""
    return losses.mean()
