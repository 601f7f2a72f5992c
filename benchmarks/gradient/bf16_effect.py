"""bf16 autocast (channels-last) vs fp32: one MAML meta-step at initialisation (not a test).

    python benchmarks/gradient/bf16_effect.py

Conv-4, 5-way 1-shot, 4 tasks of random images, 15 queries per class, one thread: prints both query
losses and the cosine similarity and relative L2 error of the bf16 meta-gradient against fp32's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from metalab.algorithms.gradient.maml import MAML
from metalab.data.task import Task
from metalab.nn.execution import SpeedOptions

TASKS, WAYS, QUERIES = 4, 5, 15


def random_tasks() -> Task:
    generator = torch.Generator().manual_seed(1)
    support_x = torch.rand(TASKS, WAYS, 1, 28, 28, generator=generator)
    query_x = torch.rand(TASKS, WAYS * QUERIES, 1, 28, 28, generator=generator)
    support_y = torch.arange(WAYS).expand(TASKS, -1).contiguous()
    query_y = torch.arange(WAYS).repeat_interleave(QUERIES).expand(TASKS, -1).contiguous()
    return Task(support_x, support_y, query_x, query_y)


def meta_gradient(tasks: Task, **speed) -> tuple[torch.Tensor, float]:
    """All meta-parameter gradients as one vector, and the query loss, for fresh weights (seed 0)."""
    torch.manual_seed(0)
    learner = MAML(MAML.Options(name="maml", ways=WAYS), (1, 28, 28), SpeedOptions(**speed))
    metrics = learner.meta_step(tasks)
    return torch.cat([p.grad.flatten() for p in learner.parameters()]), float(metrics["loss"])


def main() -> None:
    torch.set_num_threads(1)
    tasks = random_tasks()
    fp32, fp32_loss = meta_gradient(tasks)
    bf16, bf16_loss = meta_gradient(tasks, precision="bf16", channels_last=True)
    print(f"query loss: fp32 {fp32_loss:.4f}, bf16 {bf16_loss:.4f}")
    print(f"meta-gradient: cosine {float(F.cosine_similarity(fp32, bf16, dim=0)):.4f}, "
          f"relative L2 error {float((fp32 - bf16).norm() / fp32.norm()):.4f}")


if __name__ == "__main__":
    main()
