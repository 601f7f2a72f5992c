"""A second-order inner loop that keeps one step's graph at a time (gradient checkpointing of the unroll).

A second-order inner loop of K steps normally holds the graph of every step (each support forward and
its backward, built with ``create_graph=True``) until the meta-backward: memory grows with K. Here the
forward pass runs the K steps without keeping their graphs and stores only the parameters each step
starts from, theta_0 .. theta_{K-1}. The meta-backward then walks the steps in reverse: it rebuilds step
k's graph from theta_k (support forward and backward, ``create_graph=True``), back-propagates
dL/dtheta_{k+1} through theta_{k+1} = theta_k - rate * grad_k(theta_k), and frees that graph before the
next. By the chain rule the result is the meta-gradient of the unrolled loop (tests compare it with
``higher`` in float64). The last step's graph is built in the forward pass and kept, so K steps cost
K - 1 more support forward+backward passes, and what is held at any time is one step's graph plus the
K starting points (for Conv-4, less than a step's activations as soon as a support set has more than a
few images).

Why not ``torch.utils.checkpoint`` around each step's forward: the non-reentrant checkpoint recomputes a
forward when its saved tensors are first unpacked, and the double backward of a second-order loop unpacks
them in a graph that the recomputation does not see; it gave wrong meta-gradients against ``higher``
(benchmarks/gradient/RESULTS.md). Recomputing whole steps inside a custom backward avoids that.

What the meta-gradient reaches: the meta-parameters (adapted ones through theta_0 = the parameters
repeated per task; shared ones, such as ANIL's body or any parameter that is not adapted, through
every step's support forward), the update rule's meta-learned tensors (Meta-SGD's rates) and support
inputs that carry a graph (ANIL's body features).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

#: inner step k: (parameters by name, support x, k, the rule's tensors by name, create_graph) -> parameters
#: after the step (see :meth:`metalab.nn.inner_loop.InnerLoop.adapt`)
Step = Callable[[dict[str, Tensor], Tensor, int, Mapping[str, Tensor], bool], dict[str, Tensor]]


def checkpointed_inner_loop(step: Step, params: Mapping[str, Tensor], adapted: Sequence[str], support_x: Tensor,
                            steps: int, tensors: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """The adapted parameters after ``steps`` calls of ``step``, differentiable once (see module doc).

    Args:
        step: one inner step (it selects its own support examples and targets).
        params: the meta-parameters by name (shared by the tasks).
        adapted: names that adapt; they come back with a leading task dimension [T, ...].
        support_x: [T, S, ...] (an input of the recomputation: it may carry a graph, e.g. ANIL's features).
        tensors: the update rule's meta-learned tensors by name (Meta-SGD's rates), or None.
    Returns:
        ``params`` with the adapted names replaced by their adapted values [T, ...].
    """
    adapted = list(adapted)
    names = list(params)
    tensors = tensors or {}
    rate_names = list(tensors)
    inputs = [params[n] for n in names] + [tensors[n] for n in rate_names] + [support_x]
    unrolled = _CheckpointedUnroll.apply(_Unroll(step, names, adapted, rate_names, steps), *inputs)
    return {**params, **dict(zip(adapted, unrolled))}


class _Unroll:
    """What :class:`_CheckpointedUnroll` needs besides its tensor inputs."""

    def __init__(self, step: Step, names: list[str], adapted: list[str], rate_names: list[str], steps: int) -> None:
        self.step, self.names, self.adapted, self.rate_names, self.steps = step, names, adapted, rate_names, steps

    def split(self, inputs: Sequence[Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor]:
        """The Function's inputs as (parameters by name, rule tensors by name, support x)."""
        count = len(self.names)
        params = dict(zip(self.names, inputs[:count]))
        rates = dict(zip(self.rate_names, inputs[count:count + len(self.rate_names)]))
        return params, rates, inputs[-1]

    def run(self, fast: dict[str, Tensor], support_x: Tensor, rates: dict[str, Tensor], k: int,
            create_graph: bool) -> dict[str, Tensor]:
        return self.step(fast, support_x, k, rates, create_graph)


class _CheckpointedUnroll(torch.autograd.Function):
    """inputs: the parameters, the rates, support x -> the adapted parameters (``adapted`` order), [T, ...].

    The last step's graph is built in the forward and kept (the meta-backward needs it first, and holding one
    step's graph is the bound anyway), so K steps cost K - 1 recomputations; one step costs none.
    """

    @staticmethod
    def forward(ctx, unroll: _Unroll, *inputs: Tensor) -> tuple[Tensor, ...]:
        # leaves for everything a step reads besides its starting point; the meta-backward differentiates the
        # rebuilt steps with respect to them, and their gradients add up over the steps
        leaves = [value.detach().requires_grad_(needs) for value, needs in zip(inputs, ctx.needs_input_grad[1:])]
        params, rates, support_x = unroll.split(leaves)
        tasks, steps = support_x.shape[0], unroll.steps
        fast = {n: (v.unsqueeze(0).expand(tasks, *v.shape) if n in unroll.adapted else v) for n, v in params.items()}
        starts: list[list[Tensor] | None] = []  # per step, its starting point (None once back-propagated)
        with torch.enable_grad():
            for k in range(steps):
                start = [fast[n].detach().requires_grad_() for n in unroll.adapted]
                starts.append(start)
                fast = unroll.run({**fast, **dict(zip(unroll.adapted, start))}, support_x, rates, k,
                                  create_graph=k == steps - 1)
        ctx.unroll, ctx.leaves, ctx.starts = unroll, leaves, starts
        ctx.last = [fast[n] for n in unroll.adapted]  # the last step's graph
        return tuple(value.detach() for value in ctx.last)

    @staticmethod
    def backward(ctx, *grad_adapted: Tensor):
        unroll: _Unroll = ctx.unroll
        leaves: list[Tensor] = ctx.leaves
        params, rates, support_x = unroll.split(leaves)
        wrt = [leaf for leaf in leaves if leaf.requires_grad]
        totals: list[Tensor | None] = [None] * len(wrt)
        upstream = [g if g is not None else torch.zeros_like(s) for g, s in zip(grad_adapted, ctx.last)]
        for k in reversed(range(len(ctx.starts))):
            start = ctx.starts[k]
            with torch.enable_grad():
                if k == len(ctx.starts) - 1:
                    stepped, ctx.last = ctx.last, None
                else:  # rebuild step k's graph from its starting point
                    rebuilt = unroll.run({**params, **dict(zip(unroll.adapted, start))}, support_x, rates, k,
                                         create_graph=True)
                    stepped = [rebuilt[n] for n in unroll.adapted]
                grads = torch.autograd.grad(stepped, start + wrt, upstream, allow_unused=True)
            upstream = [g if g is not None else torch.zeros_like(s) for g, s in zip(grads[:len(start)], start)]
            for i, grad in enumerate(grads[len(start):]):
                if grad is not None:
                    totals[i] = grad if totals[i] is None else totals[i] + grad
            del stepped, grads
            ctx.starts[k] = None  # free theta_k and step k's graph before the step below is rebuilt
        # theta_0 is each adapted parameter repeated over the tasks: its gradient is the sum over tasks
        by_leaf = {id(leaf): total for leaf, total in zip(wrt, totals)}
        for name, grad in zip(unroll.adapted, upstream):
            leaf = params[name]
            if leaf.requires_grad:
                total = by_leaf.get(id(leaf))
                by_leaf[id(leaf)] = grad.sum(0) if total is None else total + grad.sum(0)
        ctx.leaves = None
        return (None, *(by_leaf.get(id(leaf)) if leaf.requires_grad else None for leaf in leaves))
