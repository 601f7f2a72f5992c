"""External memory with content-based reads and least-recently-used-access (LRUA) writes.

Santoro et al. 2016, "Meta-Learning with Memory-Augmented Neural Networks", section 3.1.
Per step, with read/write keys k_t^h from the controller (h = 1..H heads):

    w_r_t^h(i) = softmax_i(cosine(k_t^h, M_{t-1}(i)))            (addressed before this step's write)
    w_lu_{t-1}(i) = 1 if w_u_{t-1}(i) is among the H smallest usages, else 0
    M_{t-1}(argmin_i w_u_{t-1}(i)) <- 0                          (the least-used slot is erased)
    w_w_t^h = sigmoid(alpha^h) w_r_{t-1}^h + (1 - sigmoid(alpha^h)) w_lu_{t-1}
    M_t(i) = M_{t-1}(i) + sum_h w_w_t^h(i) a_t^h                   (a_t^h: the written vector)
    r_t^h = sum_i w_r_t^h(i) M_t(i)
    w_u_t = gamma w_u_{t-1} + sum_h (w_r_t^h + w_w_t^h)

The read weights are addressed on the memory as it was before this step's write, as in the
public implementations of the paper. Addressing after the write (a literal reading of the
paper's "M_t") makes every key find its own fresh copy (cosine 1), so a read returns mostly the
key just written instead of what earlier steps stored: the memory cannot bind an input to a label.
The paper writes the key itself (a_t = k_t); the public implementations write a separate vector
a_t from the controller. ``MANN`` offers both (``learner.write_keys``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class MemoryState:
    """memory [B, N, M] (N slots of size M), usage [B, N], read_weights [B, H, N], reads [B, H, M]."""

    memory: Tensor
    usage: Tensor
    read_weights: Tensor
    reads: Tensor

    @staticmethod
    def initial(batch: int, slots: int, size: int, heads: int, device=None, dtype=torch.float32) -> MemoryState:
        # A tiny constant memory keeps the cosine similarity defined before anything is written.
        return MemoryState(
            memory=torch.full((batch, slots, size), 1e-6, device=device, dtype=dtype),
            usage=torch.zeros(batch, slots, device=device, dtype=dtype),
            read_weights=torch.zeros(batch, heads, slots, device=device, dtype=dtype),
            reads=torch.zeros(batch, heads, size, device=device, dtype=dtype),
        )

    def repeat_interleave(self, repeats: int) -> MemoryState:
        """Each batch row copied ``repeats`` times (row b -> rows b * repeats .. b * repeats + repeats - 1)."""
        return MemoryState(*(t.repeat_interleave(repeats, dim=0) for t in
                             (self.memory, self.usage, self.read_weights, self.reads)))


def least_used_weights(usage: Tensor, count: int) -> Tensor:
    """usage [B, N] -> [B, N] with 1 at the ``count`` least-used slots and 0 elsewhere."""
    smallest = usage.topk(count, dim=-1, largest=False).indices
    return torch.zeros_like(usage).scatter(-1, smallest, 1.0)


def content_weights(keys: Tensor, memory: Tensor) -> Tensor:
    """Softmax over slots of the cosine similarity: keys [B, H, M], memory [B, N, M] -> [B, H, N]."""
    similarity = F.normalize(keys, dim=-1, eps=1e-8) @ F.normalize(memory, dim=-1, eps=1e-8).transpose(1, 2)
    return similarity.softmax(dim=-1)


def lrua_step(state: MemoryState, keys: Tensor, write_gate: Tensor, gamma: float,
              written: Tensor | None = None) -> tuple[MemoryState, Tensor]:
    """One step: address the reads on the old memory, erase, write, read the new memory.

    keys [B, H, M], write_gate [B, H] (logits of sigmoid(alpha)), written [B, H, M] (the vectors
    added to memory; the keys when None). Returns the new state and the read vectors [B, H, M].
    """
    heads = keys.shape[1]
    read_weights = content_weights(keys, state.memory)  # [B, H, N], before the write: see the module docstring
    least_used = least_used_weights(state.usage, heads)  # [B, N]
    erase = F.one_hot(state.usage.argmin(dim=-1), state.usage.shape[-1]).to(keys.dtype)  # [B, N]
    memory = state.memory * (1.0 - erase).unsqueeze(-1)
    gate = torch.sigmoid(write_gate).unsqueeze(-1)  # [B, H, 1]
    write_weights = gate * state.read_weights + (1.0 - gate) * least_used.unsqueeze(1)  # [B, H, N]
    memory = memory + write_weights.transpose(1, 2) @ (keys if written is None else written)  # [B, N, M]
    reads = read_weights @ memory  # [B, H, M]
    usage = gamma * state.usage + read_weights.sum(1) + write_weights.sum(1)
    return MemoryState(memory, usage, read_weights, reads), reads
