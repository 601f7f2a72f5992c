"""MANN's own protocol (Santoro et al. 2016, Table 1): accuracy by instance number within a sequence.

Each test episode is W classes x P presentations of the test split, in random order, with labels
given one step late; we report the accuracy on the 1st, 2nd, 3rd, 5th and 10th presentation of a
class (mean +- 95% CI over episodes).

    python benchmarks/model/mann_presentations.py RUN_DIR --ways 5 --presentations 10 --episodes 500 [--zero-reads]

``--zero-reads``: the same episodes with every memory read replaced by zeros (the memory is still
written; nothing comes back to the controller or the output layer): does the binding live in the
memory or in the controller's LSTM state?
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch

import metalab.algorithms.model.mann as mann_module
from metalab.algorithms.model.mann import MANN, accuracy_by_presentation
from metalab.data.episodes import EpisodeSampler
from metalab.data.sources import load_split
from metalab.train.build import load_run
from metalab.train.evaluate import mean_ci95


@contextmanager
def memory_reads_zeroed() -> Iterator[None]:
    """Within the block, MANN's memory step returns zero reads (and stores zero reads in its state)."""
    memory_step = mann_module.lrua_step

    def unread_step(*args, **kwargs):
        state, reads = memory_step(*args, **kwargs)
        state.reads = torch.zeros_like(reads)
        return state, torch.zeros_like(reads)

    mann_module.lrua_step = unread_step
    try:
        yield
    finally:
        mann_module.lrua_step = memory_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--presentations", type=int, default=10)
    parser.add_argument("--episodes", type=int, default=500)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--zero-reads", action="store_true", help="replace every memory read by zeros")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    learner, config, state = load_run(args.run)
    if not isinstance(learner, MANN):
        raise SystemExit(f"{args.run} is not a MANN run")
    sampler = EpisodeSampler(load_split(config, config.data.test_split), args.ways, args.presentations, 0,
                             seed=args.seed)
    order_generator = torch.Generator().manual_seed(args.seed)
    presentations = tuple(n for n in (1, 2, 3, 5, 10) if n <= args.presentations)
    per_episode: dict[int, list[float]] = {n: [] for n in presentations}
    start = time.perf_counter()
    with torch.no_grad(), (memory_reads_zeroed() if args.zero_reads else nullcontext()):
        for first in range(0, args.episodes, args.batch):
            batch = sampler.batch(first, min(args.batch, args.episodes - first))
            order = torch.rand(batch.support_y.shape, generator=order_generator).argsort(1)
            x = batch.support_x.gather(1, order.view(*order.shape, 1, 1, 1).expand_as(batch.support_x))
            y = batch.support_y.gather(1, order)
            logits = learner.sequence_logits(x, y)[..., : args.ways]
            for t in range(len(batch)):
                for n, accuracy in accuracy_by_presentation(logits[t : t + 1], y[t : t + 1], presentations).items():
                    per_episode[n].append(accuracy)
    seconds = time.perf_counter() - start
    summary = {f"instance_{n}": dict(zip(("mean", "ci95"), mean_ci95(v))) for n, v in per_episode.items()}
    print(json.dumps({"run": args.run, "step": state["step"], "ways": args.ways, "presentations": args.presentations,
                      "episodes": args.episodes, "zero_reads": args.zero_reads, "seconds": seconds, **summary}))


if __name__ == "__main__":
    main()
