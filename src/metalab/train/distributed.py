"""Meta-training over several processes, GPUs or machines with ``torch.distributed``.

Launch the ordinary command with the PyTorch launcher; nothing else changes::

    torchrun --nproc_per_node 2 -m metalab train RECIPE task.meta_batch=16 ...

Each rank meta-trains on its own, disjoint share of every meta-batch (tasks are a pure function of
(seed, index), so rank r of W takes tasks ``s*B + r*B/W .. s*B + (r+1)*B/W - 1`` of step s and the
union is the single-process meta-batch). After the learner's ``meta_step`` has left its meta-gradient
in ``.grad`` (``loss.backward()``, Reptile's pseudo-gradient, an implicit gradient, ...), the
gradients are averaged across ranks, so every rank takes the same optimiser step and the parameters
stay bit-identical. Floating-point buffers (BatchNorm running estimates) are averaged after each step.

What is not the same as one process: a learner that computes statistics *across* the tasks of its
meta-batch (BatchNorm in training mode over one forward pass of all tasks, as ProtoNet does) sees
only its rank's share, as with ``DistributedDataParallel`` without SyncBatchNorm. Learners that
adapt task by task (MAML, Reptile: per-task statistics) are unaffected.

The backend follows ``train.device``: ``gloo`` on CPU, ``nccl`` on CUDA with one GPU per rank
(``cuda:LOCAL_RANK``). Without ``torchrun`` (no ``WORLD_SIZE`` above 1 in the environment) a
:class:`Ranks` of one process is used and every operation here is a no-op.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from metalab.algorithms.base import MetaLearner
from metalab.train.evaluate import EvalResult, evaluate, mean_ci95

T = TypeVar("T")


class RanksDivergedError(RuntimeError):
    """The ranks' models are no longer identical: the learner changed them outside ``.grad``."""


class RankFailedError(RuntimeError):
    """A distributed run cannot go on: another rank failed (exception, killed process, lost machine),
    or the launcher stopped this one."""


@contextmanager
def _collective(ranks: Ranks, what: str) -> Iterator[None]:
    """Turn the backend's error when a peer is gone ("Connection reset by peer", ...) into a RankFailedError."""
    try:
        yield
    except RankFailedError:
        raise
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RankFailedError(f"{ranks}: {what} failed, another rank has stopped or cannot be reached "
                              f"({reason})") from error


@dataclass(frozen=True)
class Ranks:
    """This process's place in a run: ``rank`` of ``world_size`` processes, on ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs, checkpoints and results."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def __str__(self) -> str:
        return f"rank {self.rank} of {self.world_size} ({self.device})"

    # ------------------------------------------------------------------------------ tasks
    def share(self, total: int, what: str = "task.meta_batch") -> tuple[int, int]:
        """(offset, count) of this rank's equal share of ``total`` items; ``total`` must divide evenly."""
        if total % self.world_size:
            divisors = [w for w in range(1, total + 1) if total % w == 0]
            raise ValueError(
                f"{what}={total} cannot be split evenly over {self.world_size} processes; every rank must get "
                f"the same number of tasks so that averaging their gradients gives the meta-batch's gradient. "
                f"Use a {what} that is a multiple of {self.world_size} "
                f"(e.g. {what}={self.world_size * -(-total // self.world_size)}), "
                f"or a number of processes that divides {total} ({', '.join(map(str, divisors))})"
            )
        count = total // self.world_size
        return self.rank * count, count

    # ------------------------------------------------------------------------- collectives
    def average_gradients(self, parameters: Sequence[Tensor]) -> None:
        """Replace every ``.grad`` by its mean over the ranks (same list of parameters on every rank).

        A parameter without a gradient on some rank counts as a zero gradient there (its tasks did not
        touch it); a parameter without a gradient on every rank keeps ``grad=None``.
        """
        if not self.distributed:
            return
        present = torch.tensor([p.grad is not None for p in parameters], dtype=torch.float64, device=self.device)
        with _collective(self, "averaging gradients"):
            dist.all_reduce(present)
        by_dtype: dict[torch.dtype, list[int]] = {}
        for i, p in enumerate(parameters):
            if p.grad is not None and p.grad.is_sparse:
                raise ValueError("distributed training does not support sparse gradients")
            by_dtype.setdefault(p.dtype, []).append(i)
        for indices in by_dtype.values():
            group = [parameters[i] for i in indices]
            flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in group])
            with _collective(self, "averaging gradients"):
                dist.all_reduce(flat)
            flat /= self.world_size
            for i, p, chunk in zip(indices, group, flat.split([p.numel() for p in group])):
                p.grad = chunk.view_as(p) if present[i] > 0 else None

    def average_buffers(self, module: nn.Module) -> None:
        """Average floating-point buffers (BatchNorm running estimates) so that every rank holds the same."""
        if not self.distributed:
            return
        buffers = [b for b in module.buffers() if b.is_floating_point()]
        if buffers:
            flat = torch.cat([b.reshape(-1).to(torch.float64) for b in buffers])
            with _collective(self, "averaging buffers"):
                dist.all_reduce(flat)
            flat /= self.world_size
            for b, chunk in zip(buffers, flat.split([b.numel() for b in buffers])):
                b.copy_(chunk.view_as(b))

    def average_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Mean of each scalar over the ranks (the meta-batch's loss and accuracy, as one process logs them)."""
        if not self.distributed:
            return metrics
        keys = sorted(metrics)
        values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=self.device)
        with _collective(self, "averaging metrics"):
            dist.all_reduce(values)
        return {k: float(v) / self.world_size for k, v in zip(keys, values.cpu())}

    @torch.no_grad()
    def broadcast_module(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank."""
        if not self.distributed:
            return
        with _collective(self, "broadcasting the model"):
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)

    @torch.no_grad()
    def check_identical(self, module: nn.Module) -> None:
        """Raise :class:`RanksDivergedError` unless every rank holds exactly rank 0's parameters and buffers.

        Compares a fingerprint (sum and sum of squares of every tensor, float64): cheap enough for
        every checkpoint, and any update that bypasses the gradient average changes it.
        """
        if not self.distributed:
            return
        named = [*module.named_parameters(), *module.named_buffers()]
        fingerprint = torch.stack([torch.stack([t.double().sum(), t.double().pow(2).sum()]) for _, t in named])
        gathered = [torch.empty_like(fingerprint) for _ in range(self.world_size)]
        with _collective(self, "comparing the models of the ranks"):
            dist.all_gather(gathered, fingerprint)
        for rank, other in enumerate(gathered[1:], start=1):
            differing = [name for (name, _), a, b in zip(named, gathered[0], other) if not torch.equal(a, b)]
            if differing:
                raise RanksDivergedError(
                    f"rank {rank}'s model differs from rank 0's in {', '.join(differing[:5])}"
                    f"{' ...' if len(differing) > 5 else ''}: the learner must have changed weights or buffers "
                    f"outside .grad (e.g. its own optimiser step in meta_step). Distributed training needs meta_step "
                    f"to leave its whole update in .grad (the trainer averages it across ranks); integer or "
                    f"non-statistic buffers must evolve the same on every rank")

    def on_main(self, function: Callable[[], T]) -> T:
        """Run ``function`` on rank 0 only; every rank gets its result, or raises its exception.

        For what only rank 0 may do or see (its file system: run directory, checkpoints), so that
        the ranks never disagree on whether to go on.
        """
        if not self.distributed:
            return function()
        outcome: list[Any] = [None]
        if self.is_main:
            try:
                outcome = [(True, function())]
            except Exception as error:  # handed to every rank, raised there
                outcome = [(False, error)]
        with _collective(self, "hearing from rank 0"):
            dist.broadcast_object_list(outcome, src=0, device=self._object_device())
        succeeded, value = outcome[0]
        if not succeeded:
            raise value
        return value

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value`` (any picklable object), in rank order, on every rank."""
        if not self.distributed:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        with _collective(self, "gathering results"):
            dist.all_gather_object(gathered, value)
        return gathered

    def _object_device(self) -> torch.device | None:
        return self.device if self.device.type == "cuda" else None


# ------------------------------------------------------------------------------- the session
def launched_world_size() -> int:
    """The number of processes the launcher (torchrun, or any launcher setting WORLD_SIZE) started."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number") from None


def rank_device(device: str, local_rank: int, local_world_size: int) -> torch.device:
    """The device of one rank: the CPU, or the GPU ``cuda:LOCAL_RANK`` for ``train.device=cuda``."""
    requested = torch.device(device)
    if requested.type != "cuda":
        return requested
    if not torch.cuda.is_available():
        raise ValueError(f"train.device={device} but CUDA is not available on this machine; use train.device=cpu")
    if requested.index is not None and local_world_size > 1:
        raise ValueError(f"train.device={device} names one GPU but {local_world_size} processes run on this machine; "
                         f"use train.device=cuda: each rank then takes cuda:LOCAL_RANK")
    index = requested.index if requested.index is not None else local_rank
    if index >= torch.cuda.device_count():
        raise ValueError(f"rank {local_rank} on this machine needs cuda:{index} but only {torch.cuda.device_count()} "
                         f"GPU(s) are visible; start at most {torch.cuda.device_count()} processes per machine "
                         f"(torchrun --nproc_per_node)")
    return torch.device("cuda", index)


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


@contextmanager
def distributed_session(device: str = "cpu") -> Iterator[Ranks]:
    """This process's :class:`Ranks` for the duration of a run.

    Joins the process group the launcher set up (``env://``: MASTER_ADDR, MASTER_PORT, RANK,
    WORLD_SIZE, LOCAL_RANK) and leaves it afterwards. A process group that already exists (created
    by the caller) is used as it is and left open; without a launcher this is one process.
    """
    world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else launched_world_size()
    if world_size <= 1:
        yield Ranks(device=rank_device(device, 0, 1))
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    target = rank_device(device, local_rank, local_world_size)
    if target.type == "cuda":
        torch.cuda.set_device(target)
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend=backend_for(target), init_method="env://",
                                device_id=target if target.type == "cuda" else None)
    elif dist.get_backend() != backend_for(target):
        raise ValueError(f"the existing process group uses {dist.get_backend()} but train.device={device} needs "
                         f"{backend_for(target)}")
    clean_exit = False
    try:
        yield Ranks(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=target)
        clean_exit = True
    finally:
        if created:
            if clean_exit:
                # Ranks leave together. Without it, a 2-rank gloo launch that had finished all its
                # work sometimes aborted at exit (SIGABRT, "terminate called without an active
                # exception"; 3 of ~45 launches here, 0 of ~50 with the barrier), failing torchrun.
                dist.barrier()
            dist.destroy_process_group()


@contextmanager
def sigterm_as_error(ranks: Ranks) -> Iterator[None]:
    """In a distributed run, SIGTERM raises :class:`RankFailedError` instead of ending the process silently.

    torchrun stops the other ranks with SIGTERM when one fails (as do cluster schedulers on
    preemption); the error lets the trainer say where the run stopped and how to resume it.
    Checkpoints are written atomically, so one interrupted mid-write is simply not replaced.
    """
    if not ranks.distributed or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise RankFailedError(f"{ranks}: stopped by SIGTERM (torchrun sends it to every rank when one fails, and "
                              f"its report names the rank that failed first; so do schedulers that preempt a job)")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


# ------------------------------------------------------------------------- split evaluation
def episode_range(episodes: Any, start: int, stop: int) -> Any:
    """Episodes ``start .. stop - 1`` of a fixed evaluation set (``len()``, ``batches(size)``)."""
    from metalab.data.episodes import FixedEpisodes
    from metalab.data.regression import FixedRegressionTasks

    if isinstance(episodes, FixedEpisodes):
        return FixedEpisodes(episodes.dataset, episodes.episodes[start:stop], episodes.ways, episodes.shots,
                             episodes.queries, episodes.seed)
    if isinstance(episodes, FixedRegressionTasks):
        return _RegressionRange(episodes, start, stop)
    raise TypeError(f"cannot split {type(episodes).__name__} across ranks; evaluation sets must be FixedEpisodes "
                    f"or FixedRegressionTasks")


class _RegressionRange:
    """Tasks ``start .. stop - 1`` of a :class:`FixedRegressionTasks` (same stream, same tasks)."""

    def __init__(self, tasks: Any, start: int, stop: int) -> None:
        self.stream, self.start, self.stop = tasks.stream, start, min(stop, len(tasks))
        self.ways, self.shots, self.queries, self.seed = tasks.ways, tasks.shots, tasks.queries, tasks.seed

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def batches(self, size: int):
        for begin in range(self.start, self.stop, size):
            yield self.stream.batch(begin, min(size, self.stop - begin))


def evaluation_share(count: int, batch_size: int, ranks: Ranks) -> tuple[int, int]:
    """[start, stop) of this rank's episodes: whole evaluation batches, contiguous, in rank order.

    Splitting at batch boundaries gives every episode the very batch it has in one process, so even
    a learner whose predictions depend on the other episodes of its batch scores the same.
    """
    chunks = -(-count // batch_size)
    first, last = ranks.rank * chunks // ranks.world_size, (ranks.rank + 1) * chunks // ranks.world_size
    return min(first * batch_size, count), min(last * batch_size, count)


def evaluate_distributed(learner: MetaLearner, episodes: Any, batch_size: int, device: torch.device | str,
                         ranks: Ranks, progress: bool = False) -> EvalResult:
    """:func:`~metalab.train.evaluate.evaluate` with the episodes split across ranks and the scores gathered.

    Every rank returns the same result, equal to one process scoring all the episodes. ``progress``: a bar of
    one process's episodes (as :func:`~metalab.train.evaluate.evaluate`'s).
    """
    if not ranks.distributed:
        return evaluate(learner, episodes, batch_size, device, progress=progress)
    start, stop = evaluation_share(len(episodes), batch_size, ranks)
    local = evaluate(learner, episode_range(episodes, start, stop), batch_size, device) if stop > start else None
    results = [r for r in ranks.gather(local) if r is not None]
    scores = [s for r in results for s in r.scores]
    mean, ci95 = mean_ci95(scores)
    stage_scores = {name: [s for r in results for s in r.stage_scores[name]] for name in results[0].stage_scores}
    return dataclasses.replace(results[0], mean=mean, ci95=ci95, episodes=len(scores),
                               seconds=max(r.seconds for r in results), scores=scores, stage_scores=stage_scores,
                               stages={name: list(mean_ci95(values)) for name, values in stage_scores.items()})
