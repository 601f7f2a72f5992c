"""The execution options (``speed.*`` in recipes): how a computation runs, never what it computes."""
from __future__ import annotations

from dataclasses import dataclass

ENGINES = ("accel", "reference")
PRECISIONS = ("fp32", "bf16")


@dataclass
class SpeedOptions:
    """Every execution knob of metalab, in one group.

    The contract: each option changes time or memory, never the result, up to float rounding where a
    knob says so (a different order of summation or another convolution algorithm in float32, bf16).
    Tests hold every combination to the reference path (``engine: reference``) in float64.
    """

    #: "accel" (the speed backend: folded multi-task kernels, fused operators, task slices, two-stage
    #: meta-backward) or "reference" (plain PyTorch, task by task with ``torch.func``: the specification).
    engine: str = "accel"
    #: tasks per inner-loop slice of a gradient learner (1 = task by task: least memory; 0 = the whole
    #: meta-batch folded into grouped kernels; null = by support size, :func:`metalab.accel.slicing.auto_task_chunk`).
    task_chunk: int | None = None
    #: tasks per query forward+backward (1 = each task's queries alone: ordinary kernels, least memory).
    query_chunk: int = 1
    #: recompute the query pass's block activations in its backward (less memory).
    checkpoint: bool = False
    #: second order: keep one inner step's graph at a time and rebuild it in the meta-backward
    #: (:mod:`metalab.accel.checkpointed_unroll`; memory of one step instead of all, one more support
    #: forward+backward per step but the last). Plain gradient steps only.
    checkpoint_inner_loop: bool = False
    #: channels-last memory format for the query pass's convolutions.
    channels_last: bool = True
    #: the inner loop's layout when it should differ from the query pass's (null = ``channels_last``).
    inner_channels_last: bool | None = False
    #: a thin-input convolution + BatchNorm as one matmul of normalised weights (:mod:`metalab.accel.conv_norm`).
    fold_conv_norm: bool = True
    #: metalab's compiled CPU kernels (:mod:`metalab.accel.native`; the PyTorch path where they cannot be built).
    native_kernels: bool = True
    #: 3x3 convolutions differentiated once by NNPACK's fast transforms (:mod:`metalab.accel.nnpack_conv`;
    #: float32 rounding differs from the direct convolution's); null = where it pays on this CPU.
    winograd: bool | None = None
    #: "fp32" or "bf16" (autocast of the forward passes: bf16 rounding; slow on CPUs without bf16 units).
    precision: str = "fp32"
    #: torch intra-op threads (null = PyTorch's default; float sums may round differently with another count).
    threads: int | None = None
    #: keep freed tensor memory in the process for reuse (:mod:`metalab.accel.allocator`): faster CPU
    #: training, at the price of a resident size that stays at its peak. It tunes glibc's ``malloc`` for the
    #: whole process, so only the ``metalab train`` and ``metalab eval`` commands apply it; a program using
    #: :class:`~metalab.train.trainer.Trainer` keeps its allocator unless it calls
    #: :func:`metalab.accel.allocator.reuse_freed_memory` itself.
    reuse_freed_memory: bool = True
    #: episodes per forward batch in evaluation (at most; see ``eval_images``).
    eval_batch: int = 20
    #: images (support + query) per forward batch in evaluation: fewer episodes per batch where ``eval_batch``
    #: of them would hold more (at least one episode). Bounds evaluation memory at 20 ways as at 5.
    eval_images: int = 1600

    def __post_init__(self) -> None:
        check_speed_options(self)


#: option -> its allowed values
_CHOICES = {"engine": ENGINES, "precision": PRECISIONS}
#: option -> (smallest value, what it counts; null allowed where the option is Optional)
_AT_LEAST = {
    "task_chunk": (0, "tasks per inner-loop slice; 0 = all tasks at once, null = automatic"),
    "query_chunk": (1, "tasks per query pass"),
    "threads": (1, "torch threads; null = PyTorch's default"),
    "eval_batch": (1, "episodes per evaluation batch"),
    "eval_images": (1, "images per evaluation batch"),
}


def check_speed_options(speed: SpeedOptions) -> None:
    """Refuse values that cannot work, naming the key and its range."""
    for key, allowed in _CHOICES.items():
        if getattr(speed, key) not in allowed:
            raise ValueError(f"speed.{key} must be one of {', '.join(allowed)}, got {getattr(speed, key)!r}")
    for key, (low, meaning) in _AT_LEAST.items():
        value = getattr(speed, key)
        if value is not None and value < low:
            raise ValueError(f"speed.{key} must be >= {low} ({meaning}), got {value}")
