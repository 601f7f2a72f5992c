"""Runs training and evaluation jobs on every rank of one ``torchrun`` launch (for test_distributed.py).

    python -m torch.distributed.run --nproc_per_node 2 ... tests/train/distributed_jobs.py JOBS.json

JOBS.json is a list of jobs, run in order in one process group (one launch, many runs):

* ``{"kind": "train", "config": {...}, "out": DIR, "resume": false, "kill": [rank, step], "expect_error": false}``
  runs ``Trainer(config).fit()``; each rank writes ``DIR/rank<r>.pt`` (its learner's state and
  results); with ``kill``, that rank SIGKILLs itself when it starts that (0-based) step; with
  ``expect_error``, the exception is written to ``DIR/error-rank<r>.txt`` instead of raised.
* ``{"kind": "evaluate", "episodes": N, "batch": B, "out": DIR}`` scores a seeded ProtoNet on N fixed
  synthetic episodes split across the ranks; each rank writes ``DIR/eval-rank<r>.json``.
"""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import distributed_learners  # noqa: F401  (registers the test-only learners)
from metalab.algorithms.metric.protonet import ProtoNet, ProtoNetOptions
from metalab.config import compose
from metalab.data.episodes import EpisodeSampler
from metalab.train.distributed import Ranks, distributed_session, evaluate_distributed
from metalab.train.trainer import Trainer
from testdata import make_class_dataset


def train(job: dict, ranks: Ranks, out: Path) -> None:
    trainer = Trainer(compose(job["config"]), resume=job.get("resume", False))
    if job.get("kill"):
        kill_rank, kill_step = job["kill"]
        original = trainer.train_step

        def train_step(step: int):
            if ranks.rank == kill_rank and step == kill_step:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(step)

        trainer.train_step = train_step
    results = trainer.fit()
    torch.save({"model": trainer.learner.state_dict(), "results": results}, out / f"rank{ranks.rank}.pt")


def evaluate(job: dict, ranks: Ranks, out: Path) -> None:
    torch.manual_seed(0)
    learner = ProtoNet(ProtoNetOptions(name="protonet", hidden=8), (1, 28, 28))
    episodes = EpisodeSampler(make_class_dataset(), ways=5, shots=1, queries=3, seed=2).fixed(job["episodes"])
    result = evaluate_distributed(learner, episodes, job["batch"], "cpu", ranks)
    (out / f"eval-rank{ranks.rank}.json").write_text(json.dumps(result.as_dict(with_scores=True)))


def main(jobs_file: str) -> None:
    jobs = json.loads(Path(jobs_file).read_text())
    with distributed_session("cpu") as ranks:
        for index, job in enumerate(jobs):
            out = Path(job["out"])
            out.mkdir(parents=True, exist_ok=True)
            try:
                (train if job["kind"] == "train" else evaluate)(job, ranks, out)
            except Exception as error:
                if not job.get("expect_error"):
                    raise
                (out / f"error-rank{ranks.rank}.txt").write_text(f"{type(error).__name__}: {error}")
            # where a launch that fails stopped: after which job, or at exit
            print(f"rank {ranks.rank}: job {index} ({job['kind']} {out.name}) done", flush=True)
    print(f"rank {ranks.rank}: left the process group", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
