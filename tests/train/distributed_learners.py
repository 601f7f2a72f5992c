"""Test-only ProtoNet variants that pin down what distributed ProtoNet training must equal.

ProtoNet embeds all tasks of its meta-batch in one backbone pass, so in training mode BatchNorm
normalises with statistics over every task's images; on W ranks each rank's statistics cover only
its B/W tasks. Hence two references:

* ProtoNet with ``per_task_statistics`` (a real option, not defined here): the backbone sees one
  task at a time. Its meta-gradient is a plain mean over tasks, so W ranks x B/W tasks must equal
  1 process x B tasks.
* ``protonet-sharded``: real ProtoNet, one process, whose meta-step does by hand what W ranks do:
  meta-step on each shard of B/W tasks, then average the gradients and the BatchNorm running
  estimates. Distributed ProtoNet must equal it (shard-wise statistics, as DDP without SyncBatchNorm).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor

from metalab.algorithms.metric.protonet import ProtoNet, ProtoNetOptions
from metalab.algorithms.registry import learner_names, register
from metalab.data.task import Task

if "protonet-sharded" not in learner_names():

    @dataclass
    class ShardedOptions(ProtoNetOptions):
        #: how many equal shards of the meta-batch to meta-step on separately (the world size to imitate).
        shards: int = 2

    @register("protonet-sharded")
    class ShardedProtoNet(ProtoNet):
        """ProtoNet whose meta-step averages the meta-steps of ``shards`` equal shards of the meta-batch."""

        Options = ShardedOptions

        def meta_step(self, batch: Task) -> dict[str, Tensor]:
            size = len(batch) // self.options.shards
            buffers = list(self.buffers())
            start = [b.clone() for b in buffers]
            grads, new_buffers, metrics = [], [], []
            for shard in range(self.options.shards):
                for b, b0 in zip(buffers, start):
                    b.copy_(b0)
                for p in self.parameters():
                    p.grad = None
                metrics.append(super().meta_step(batch[shard * size : (shard + 1) * size]))
                grads.append([p.grad.clone() for p in self.parameters()])
                new_buffers.append([b.clone() for b in buffers])
            # the arithmetic of the all-reduce: a sum over the shards, then a division by their number
            for i, p in enumerate(self.parameters()):
                p.grad = sum(g[i] for g in grads) / self.options.shards
            for i, b in enumerate(buffers):  # every shard counts the same batches; running estimates are averaged
                if b.is_floating_point():
                    b.copy_(sum(nb[i].to(torch.float64) for nb in new_buffers) / self.options.shards)
                else:
                    b.copy_(new_buffers[0][i])
            return {k: sum(m[k] for m in metrics) / len(metrics) for k in metrics[0]}

    @register("protonet-diverging")
    class DivergingProtoNet(ProtoNet):
        """A broken learner: besides its gradient, it moves a weight by itself, differently on each rank."""

        def meta_step(self, batch: Task) -> dict[str, Tensor]:
            metrics = super().meta_step(batch)
            with torch.no_grad():
                next(self.parameters()).add_(1e-3 * int(os.environ.get("RANK", "0")))
            return metrics
