"""The meta-backward in two stages: a query forward+backward at the adapted weights, then through the inner loop."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor


def backward_through_adaptation(
    fast: Mapping[str, Tensor],
    adapted: Iterable[str],
    query_loss: Callable[[dict[str, Tensor], int, int], tuple[Tensor, Tensor]],
    tasks: int,
    chunk: int = 1,
) -> Tensor:
    """Back-propagate the query loss at the adapted weights to the meta-parameters, in two stages.

    1. Query stage: for each slice of ``chunk`` tasks, the adapted weights are taken as fresh leaves
       and ``query_loss(params, start, stop)`` (the slice's loss and outputs) is back-propagated:
       a plain first-order forward+backward that yields dL/dtheta'_t (shared, non-adapted
       parameters such as ANIL's body receive their gradient directly).
    2. Adaptation stage: ``torch.autograd.backward(theta', dL/dtheta')`` carries these gradients
       through the inner loop's graph (theta'_t as a function of the meta-parameters and learned rates).

    By the chain rule this equals back-propagating through one joint graph (tests compare it with
    the reference path in float64), but the query stage holds one slice's activations at a time and runs
    ordinary (ungrouped) kernels on each task's queries, the cache-sized work the CPU does best.

    Args:
        fast: parameters by name; ``adapted`` names carry a leading task dimension [T, ...].
        query_loss: ``(params, start, stop) -> (loss, outputs)`` for tasks ``start:stop``, where
            ``params`` holds the slice's adapted leaves [stop - start, ...] and the shared parameters.
        tasks: T; chunk: tasks per query stage slice (>= 1).
    Returns:
        the detached query outputs of all tasks, concatenated [T, Q, ...].
    """
    adapted = list(adapted)
    if chunk < 1:
        raise ValueError(f"query chunk must be >= 1 task, got {chunk}")
    grads: dict[str, list[Tensor]] = {name: [] for name in adapted}
    outputs = []
    for start in range(0, tasks, chunk):
        stop = min(start + chunk, tasks)
        leaves = {name: fast[name][start:stop].detach().requires_grad_() for name in adapted}
        loss, slice_outputs = query_loss({**fast, **leaves}, start, stop)
        loss.backward()
        for name, leaf in leaves.items():
            grads[name].append(torch.zeros_like(leaf) if leaf.grad is None else leaf.grad)
        outputs.append(slice_outputs.detach())
    connected = [name for name in adapted if fast[name].requires_grad]
    if connected:
        torch.autograd.backward([fast[name] for name in connected], [torch.cat(grads[name]) for name in connected])
    return torch.cat(outputs)
