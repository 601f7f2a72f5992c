"""The inner loop of the gradient-based learners: each task's own gradient steps, with extension points.

For T tasks at once, starting from the shared parameters theta, ``k`` steps of

    g_t   = grad_phi  objective_t(phi_t)               (the per-task objective; it sees the parameters)
    g_t   = clip(g_t)                                  (optional: each task's gradient to an L2 norm)
    phi_t = rule(phi_t, g_t)                           (the gradient transform: SGD, learned rates, Adam, ...)

over the ``adapted`` parameters (all of them for MAML, the head for ANIL), first order (the gradients are
constants of the meta-graph) or second order (``create_graph``). Extension points, for the algorithms
that build on it:

* ``objective(params, outputs, targets) -> [T]``: the support objective of each task. Default: the loss;
  a proximal term (iMAML) or a prior (Bayesian learners) adds a function of the parameters.
* :class:`UpdateRule`: how a task's gradient becomes its step. :class:`SGD` (MAML), :class:`LearnedRates`
  (Meta-SGD), :class:`Adam` (Reptile); a preconditioner (Meta-Curvature, WarpGrad) or a learned update
  (Meta-LSTM) is another rule. A rule's meta-learned tensors (:meth:`UpdateRule.tensors`) receive
  meta-gradients.
* the adapted set, first or second order, and :mod:`metalab.nn.implicit` (Hessian-vector products,
  conjugate gradients) for meta-gradients by implicit differentiation.

How the forward passes run (reference or speed backend) is the caller's ``forward``; this module is only
the mathematics.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import torch
from torch import Tensor

from metalab.nn.losses import LossFn

Params = dict[str, Tensor]
#: (parameters by name, inputs [T, N, ...]) -> outputs [T, N, ...]
TaskForward = Callable[[Mapping[str, Tensor], Tensor], Tensor]
#: (parameters by name, outputs [T, N, ...], targets [T, N(, D)]) -> per-task objective [T]
Objective = Callable[[Mapping[str, Tensor], Tensor, Tensor], Tensor]
#: the checkpointed unroll of the speed backend (see :meth:`InnerLoop.adapt`)
Unroll = Callable[..., Params]
#: (step k, the parameters before step k) -> None: sees each point of the trajectory (see :meth:`InnerLoop.adapt`)
Visit = Callable[[int, Params], None]


def task_loss(loss_fn: LossFn) -> Objective:
    """The default support objective: the loss of the outputs, nothing of the parameters."""
    def objective(params: Mapping[str, Tensor], outputs: Tensor, targets: Tensor) -> Tensor:
        return loss_fn(outputs, targets)
    return objective


# ------------------------------------------------------------------------------------- update rules
class UpdateRule:
    """The gradient transform between a task's gradient and its step (subclass it for a new rule).

    ``step`` maps the adapted parameters [T, ...] and their gradients [T, ...] to the parameters after the
    step. ``tensors`` are the rule's meta-learned tensors (learned rates, preconditioners): ``step`` reads them
    from its ``tensors`` argument, not from the object, so that a recomputation can substitute them.
    """

    #: whether a step depends on nothing carried from the previous steps (the state is None): only such
    #: rules can be recomputed step by step (``speed.checkpoint_inner_loop``).
    stateless: bool = True

    def tensors(self) -> dict[str, Tensor]:
        return {}

    def init(self, fast: Mapping[str, Tensor], adapted: Sequence[str]) -> Any:
        """The state before the first step (None for a stateless rule)."""
        return None

    def observe(self, state: Any, objective: Tensor) -> Any:
        """The state once the rule has seen each task's support objective [T] at the current parameters,
        just before the step (detached: the rule treats it as an input). Default: the state unchanged; a rule
        that reads the loss (Meta-LSTM) keeps it in its state."""
        return state

    def step(self, fast: Mapping[str, Tensor], grads: Mapping[str, Tensor], state: Any, k: int,
             tensors: Mapping[str, Tensor]) -> tuple[Params, Any]:
        """Parameters after step ``k`` (0-based) and the new state."""
        raise NotImplementedError


@dataclass
class SGD(UpdateRule):
    """phi <- phi - lr * g (MAML's inner step)."""

    lr: float

    def step(self, fast, grads, state, k, tensors):
        # a fixed rate as sub's alpha: one operator (and backward node) fewer per tensor and step than lr * g
        return {**fast, **{name: torch.sub(fast[name], grad, alpha=self.lr) for name, grad in grads.items()}}, None


@dataclass
class LearnedRates(UpdateRule):
    """phi <- phi - alpha (.) g with meta-learned rates alpha, one tensor per adapted parameter (Meta-SGD)."""

    rates: Mapping[str, Tensor]

    def tensors(self) -> dict[str, Tensor]:
        return dict(self.rates)

    def step(self, fast, grads, state, k, tensors):
        return {**fast, **{name: fast[name] - tensors[name] * grad for name, grad in grads.items()}}, None


@dataclass
class AdamState:
    """Adam's moments by adapted parameter name (each broadcastable to the parameter's [T, ...]; a name without
    moments starts from zero) and the Adam steps taken before (the bias correction goes on from them)."""

    first: dict[str, Tensor] = field(default_factory=dict)
    second: dict[str, Tensor] = field(default_factory=dict)
    steps: int = 0


@dataclass
class Adam(UpdateRule):
    """Adam's step (Kingma & Ba 2015, Algorithm 1) on each task's gradient:
    phi <- phi - lr * m_hat / (sqrt(v_hat) + eps).

    ``start``: the moments to begin from (Reptile carries them from task to task); None: zero, Adam's usual
    fresh start. The final state (an :class:`AdamState` of [T, ...] moments) comes back from
    :meth:`InnerLoop.adapt` with ``return_state=True``.
    """

    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    start: AdamState | None = None
    stateless = False

    def init(self, fast, adapted):
        start = self.start or AdamState()
        return AdamState(
            first={n: start.first[n].expand_as(fast[n]) if n in start.first else torch.zeros_like(fast[n])
                   for n in adapted},
            second={n: start.second[n].expand_as(fast[n]) if n in start.second else torch.zeros_like(fast[n])
                    for n in adapted},
            steps=start.steps)

    def step(self, fast, grads, state: AdamState, k, tensors):
        beta1, beta2 = self.betas
        count = state.steps + 1
        stepped, first, second = dict(fast), {}, {}
        for name, grad in grads.items():
            first[name] = beta1 * state.first[name] + (1 - beta1) * grad
            second[name] = beta2 * state.second[name] + (1 - beta2) * grad * grad
            first_hat = first[name] / (1 - beta1 ** count)
            second_hat = second[name] / (1 - beta2 ** count)
            stepped[name] = fast[name] - self.lr * (first_hat / (second_hat.sqrt() + self.eps))
        return stepped, AdamState(first, second, count)


# ---------------------------------------------------------------------------------------- the loop
@dataclass
class InnerLoop:
    """``steps`` gradient steps of every task on its support set (see the module docstring).

    Attributes:
        steps: gradient steps in meta-training (a call may ask for another number, e.g. at test time).
        rule: the update rule (gradient transform).
        first_order: drop the second-order terms (the inner gradients are constants of the meta-graph).
        grad_clip: the largest L2 norm of one task's gradient over its adapted parameters (0 = no limit); a
            longer one is scaled down to it before the rule sees it, as ``torch.nn.utils.clip_grad_norm_``
            would on that task alone (and differentiated through, in second order).
    """

    steps: int = 1
    rule: UpdateRule = field(default_factory=lambda: SGD(0.4))
    first_order: bool = False
    grad_clip: float = 0.0

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"inner steps must be >= 0, got {self.steps}")
        if not self.grad_clip >= 0:
            raise ValueError(f"the inner gradient clip must be >= 0 (0 = no limit), got {self.grad_clip}")

    @overload
    def adapt(self, forward: TaskForward, params: Mapping[str, Tensor], adapted: Iterable[str], support_x: Tensor,
              support_y: Tensor, objective: Objective, *, steps: int | None = None, create_graph: bool | None = None,
              indices: Sequence[Tensor] | None = None, unroll: Unroll | None = None, start: Params | None = None,
              forward_at: Callable[[int], TaskForward] | None = None,
              return_state: Literal[False] = False, visit: Visit | None = None) -> Params: ...

    @overload
    def adapt(self, forward: TaskForward, params: Mapping[str, Tensor], adapted: Iterable[str], support_x: Tensor,
              support_y: Tensor, objective: Objective, *, steps: int | None = None, create_graph: bool | None = None,
              indices: Sequence[Tensor] | None = None, unroll: Unroll | None = None, start: Params | None = None,
              forward_at: Callable[[int], TaskForward] | None = None,
              return_state: Literal[True], visit: Visit | None = None) -> tuple[Params, Any]: ...

    def adapt(self, forward: TaskForward, params: Mapping[str, Tensor], adapted: Iterable[str], support_x: Tensor,
              support_y: Tensor, objective: Objective, *, steps: int | None = None, create_graph: bool | None = None,
              indices: Sequence[Tensor] | None = None, unroll: Unroll | None = None, start: Params | None = None,
              forward_at: Callable[[int], TaskForward] | None = None,
              return_state: bool = False, visit: Visit | None = None) -> Params | tuple[Params, Any]:
        """The adapted parameters of T tasks.

        Args:
            forward: runs the network with given parameters on [T, N, ...] inputs.
            params: the meta-parameters by name (shared by the tasks).
            adapted: the names that adapt; they come back with a leading task dimension [T, ...].
            support_x: [T, S, ...]; support_y: [T, S] labels or [T, S, D] targets.
            objective: each task's support objective [T] (see :func:`task_loss`).
            steps: number of steps (default ``self.steps``).
            create_graph: keep the graph of the steps for a second-order meta-gradient (default: not
                ``first_order``); False in evaluation.
            indices: per step, the support examples each task uses, [T, B] positions into S (minibatch
                steps); None: the whole support set.
            unroll: the speed backend's checkpointed unroll, used for a second-order loop when given
                (same result, memory of one step's graph).
            start: each task's own starting point [T, ...] for the adapted names (e.g. HSML's cluster-gated
                initialisation); None: theta for every task. Runs without ``unroll``.
            return_state: also return the rule's final state (e.g. Adam's moments).
            forward_at: the forward of inner step k, when it depends on k (per-step BatchNorm); None:
                ``forward`` at every step.
            visit: called as ``visit(k, phi_k)`` with the parameters before step k, for k = 0..steps (k = steps:
                the adapted ones), e.g. to sample points of the trajectory (WarpGrad); not with ``unroll``.
        """
        adapted = list(adapted)
        steps = self.steps if steps is None else steps
        create_graph = (not self.first_order) if create_graph is None else create_graph
        tensors = self.rule.tensors()

        def step(fast: Params, x_all: Tensor, k: int, rule_tensors: Mapping[str, Tensor], state: Any,
                 create_graph: bool) -> tuple[Params, Any]:
            x, y = select_support(x_all, support_y, None if indices is None else indices[k])
            values, grads = self.objective_and_gradients(forward if forward_at is None else forward_at(k), fast, x,
                                                         y, adapted, objective, create_graph)
            state = self.rule.observe(state, values.detach())
            return self.rule.step(fast, dict(zip(adapted, grads)), state, k, rule_tensors)

        if unroll is not None and create_graph and steps > 0 and start is None:
            if visit is not None:
                raise ValueError("the checkpointed unroll visits no intermediate parameters; pass visit or unroll")
            if not self.rule.stateless:
                raise ValueError(f"speed.checkpoint_inner_loop recomputes inner steps one at a time; the update "
                                 f"rule {type(self.rule).__name__} carries a state across steps: set "
                                 f"speed.checkpoint_inner_loop=false")
            fast = unroll(lambda fast, x, k, rule_tensors, create_graph: step(fast, x, k, rule_tensors, None,
                                                                              create_graph)[0],
                          params, adapted, support_x, steps, tensors)
            return (fast, None) if return_state else fast
        fast = expand_for_tasks(params, adapted, support_x.shape[0]) if start is None else {**params, **start}
        state = self.rule.init(fast, adapted)
        for k in range(steps):
            if visit is not None:
                visit(k, fast)
            fast, state = step(fast, support_x, k, tensors, state, create_graph)
        if visit is not None:
            visit(steps, fast)
        return (fast, state) if return_state else fast

    def gradients(self, forward: TaskForward, fast: Mapping[str, Tensor], x: Tensor, y: Tensor, adapted: list[str],
                  objective: Objective, create_graph: bool) -> tuple[Tensor, ...]:
        """Each task's objective gradient w.r.t. its ``adapted`` parameters [T, ...] (detached unless
        ``create_graph``), clipped to ``grad_clip``."""
        return self.objective_and_gradients(forward, fast, x, y, adapted, objective, create_graph)[1]

    def objective_and_gradients(self, forward: TaskForward, fast: Mapping[str, Tensor], x: Tensor, y: Tensor,
                                adapted: list[str], objective: Objective,
                                create_graph: bool) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Each task's objective [T] and :meth:`gradients`."""
        values = objective(fast, forward(fast, x), y)
        # the sum of per-task objectives: its gradient w.r.t. task t's parameters is task t's own gradient
        grads = torch.autograd.grad(values.sum(), [fast[n] for n in adapted], create_graph=create_graph)
        if not create_graph:
            grads = tuple(grad.detach() for grad in grads)
        return values, clip_task_gradients(grads, self.grad_clip) if self.grad_clip > 0 else grads


def expand_for_tasks(params: Mapping[str, Tensor], names: Iterable[str], tasks: int) -> Params:
    """Give ``names`` a leading task dimension (a view: gradients flow back summed to the originals)."""
    chosen = set(names)
    return {n: (p.unsqueeze(0).expand(tasks, *p.shape) if n in chosen else p) for n, p in params.items()}


def select_support(x: Tensor, y: Tensor, index: Tensor | None) -> tuple[Tensor, Tensor]:
    """Each task's examples at positions ``index`` [T, B] of its support set x [T, S, ...], y [T, S(, D)]."""
    if index is None:
        return x, y
    rows = torch.arange(x.shape[0], device=x.device).unsqueeze(1)
    return x[rows, index], y[rows, index]


def support_minibatches(tasks: int, size: int, batch: int, steps: int,
                        generator: torch.Generator | None = None) -> list[Tensor]:
    """Per step, ``batch`` support positions of each task [T, batch]: passes over each task's own random
    permutation of its ``size`` examples, redrawn after every pass (Reptile's inner minibatches)."""
    per_pass = max(1, size // batch) if batch <= size else 1
    width = min(batch, size)
    passes = -(-steps // per_pass)
    orders = [torch.rand(tasks, size, generator=generator).argsort(1) for _ in range(passes)]
    return [orders[k // per_pass][:, (k % per_pass) * width:(k % per_pass + 1) * width] for k in range(steps)]


def task_gradient_norms(grads: Sequence[Tensor]) -> Tensor:
    """Each task's gradient L2 norm [T] over all its tensors [T, ...].

    A norm of per-tensor norms, as ``clip_grad_norm_`` computes it: ``vector_norm``'s backward is 0, not NaN (0/0),
    where a task's gradient is exactly zero.
    """
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(grad.flatten(1), dim=1) for grad in grads]),
                                    dim=0)


def clip_task_gradients(grads: Sequence[Tensor], max_norm: float) -> tuple[Tensor, ...]:
    """Scale each task's gradients (tensors [T, ...], one per parameter) to L2 norm <= ``max_norm`` jointly.

    Task t's factor is min(1, max_norm / (norm_t + 1e-6)), ``torch.nn.utils.clip_grad_norm_``'s; it is part of
    the graph, so a second-order meta-gradient differentiates through the clipping too.
    """
    factor = (max_norm / (task_gradient_norms(grads) + 1e-6)).clamp(max=1.0)
    return tuple(grad * factor.view(-1, *([1] * (grad.dim() - 1))) for grad in grads)
