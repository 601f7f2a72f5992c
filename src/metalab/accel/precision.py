"""Reduced precision: bf16 autocast of the forward passes (``speed.precision``)."""
from __future__ import annotations

import functools
import warnings
from contextlib import AbstractContextManager, nullcontext

import torch


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """bf16 autocast on ``device`` for precision "bf16", nothing for "fp32"; warns once on a CPU without bf16 units."""
    if precision != "bf16":
        return nullcontext()
    if device.type == "cpu":
        warn_if_cpu_lacks_bf16()
    return torch.autocast(device.type, dtype=torch.bfloat16)


@functools.cache
def warn_if_cpu_lacks_bf16() -> None:
    """Warn once: without AVX512-BF16 or AMX, CPU bf16 kernels are emulated, several times slower than fp32
    (benchmarks/speed/RESULTS.md, "bf16")."""
    if not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()):
        warnings.warn(
            f"speed.precision=bf16 on a CPU without bf16 instructions (AVX512-BF16 or AMX; this one has "
            f"{torch.backends.cpu.get_cpu_capability()}): bf16 is emulated here and runs several times slower than "
            f"fp32. Use speed.precision=fp32 on this machine.", stacklevel=4)
