"""The reference path: T tasks' forward passes in plain PyTorch (``torch.func``), each with its own weights.

This is the specification of :func:`task_forward`. The speed backend (:mod:`metalab.accel`) computes the
same function faster for the networks it recognises, and tests hold it to this one in float64.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from metalab.nn.batch_norm import NORMS, Record, record_key


def task_forward(module: nn.Module, params: Mapping[str, Tensor], x: Tensor, per_task: Iterable[str] = (),
                 statistics: str = "batch", record: Record | None = None) -> Tensor:
    """Run ``module`` on T tasks, task t with ``params[name][t]`` for the names in ``per_task``.

    Args:
        module: an ordinary ``nn.Module``; its parameters are replaced by ``params`` (all of them, by
            qualified name; shared ones as they are, per-task ones with a leading task dimension [T, ...]).
        x: inputs [T, N, ...].
        statistics: BatchNorm layers normalise with the statistics of the set given ("batch"; each task
            its own) or with their running estimates ("running"); the module's buffers never change.
        record: when a dict, every BatchNorm layer's batch statistics, averaged over the tasks, are
            stored in it (detached), to update running estimates with.
    Returns:
        outputs [T, N, ...].
    """
    per_task = set(per_task)
    buffers = {name: value.clone() for name, value in module.named_buffers()}  # in-place updates land here

    def run(task_params: Mapping[str, Tensor], task_x: Tensor) -> Tensor:
        return functional_call(module, ({**params, **task_params}, buffers), (task_x,))

    norms = [m for m in module.modules() if isinstance(m, NORMS)]
    with _batch_norm_statistics(norms, statistics), _recording(module, record, x.shape[0]):
        own = {name: params[name] for name in per_task}
        if not norms:  # no layer with state: one vectorised call
            return vmap(run, randomness="different")(own, x)
        return torch.stack([run({name: value[t] for name, value in own.items()}, x[t]) for t in range(x.shape[0])])


@contextmanager
def _batch_norm_statistics(norms: Sequence[nn.Module], statistics: str) -> Iterator[None]:
    """BatchNorm layers in training mode (batch statistics) or evaluation mode (running estimates) for a while."""
    if statistics not in ("batch", "running"):
        raise ValueError(f"statistics must be 'batch' or 'running', got {statistics!r}")
    modes = [norm.training for norm in norms]
    for norm in norms:
        if statistics == "running" and not norm.track_running_stats:
            raise ValueError("bn_mode 'running' needs running statistics, but a BatchNorm layer was built with "
                             "track_running_stats=False; use bn_mode: transductive")
        norm.train(statistics == "batch")
    try:
        yield
    finally:
        for norm, mode in zip(norms, modes):
            norm.train(mode)


@contextmanager
def _recording(module: nn.Module, record: Record | None, tasks: int) -> Iterator[None]:
    """Store each BatchNorm layer's per-channel batch mean and unbiased variance, averaged over the tasks."""
    if record is None:
        yield
        return
    sums: dict[str, list[Tensor]] = {}

    def hook(prefix: str):
        def store(layer: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            key = record_key(prefix, layer)  # per-step layers: the set in use
            x = inputs[0].detach()
            x = x.to(torch.promote_types(x.dtype, torch.float32))  # bf16 activations: float32 statistics
            dims = [0] + list(range(2, x.dim()))
            mean, var = x.mean(dims), x.var(dims, unbiased=True)
            total = sums.setdefault(key, [torch.zeros_like(mean), torch.zeros_like(var)])
            total[0] += mean / tasks
            total[1] += var / tasks
        return store

    handles = [layer.register_forward_pre_hook(hook(f"{name}." if name else ""))
               for name, layer in module.named_modules() if isinstance(layer, NORMS)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
    record.update({prefix: (mean, var) for prefix, (mean, var) in sums.items()})
