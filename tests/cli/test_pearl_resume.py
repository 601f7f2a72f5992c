"""PEARL on the trainer: a tiny 2D-navigation run resumes exactly (weights, optimiser moments, replay buffers), and
its test scores the return after 0, 1, ... episodes of context."""
from __future__ import annotations

import json

import torch

from metalab.config import load_recipe
from metalab.train.trainer import Trainer

TINY = ["task.meta_batch=2", "eval.queries=1", "eval.episodes=3", "eval.val_episodes=0", "train.val_every=0",
        "train.ckpt_every=1", "train.log_every=1", "data.horizon=8", "data.task_pool=3", "train.progress=false",
        "run.tensorboard=false", "speed.threads=1", "learner.hidden=[8]", "learner.encoder_hidden=[8]",
        "learner.latent_size=2", "learner.batch_size=4", "learner.context_batch=3", "learner.train_meta_batch=2",
        "learner.updates_per_step=2", "learner.initial_episodes=1", "learner.replay_capacity=20"]


def equal(a, b) -> bool:
    """Nested checkpoint contents (tensors, dicts, lists, numbers) are equal."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    return a == b


def test_a_pearl_run_resumes_exactly_with_its_replay_buffers(tmp_path):
    """3 steps straight, and 2 steps then --resume to 3: equal weights, Adam moments, replay buffers (capacity 20,
    so they wrap) and generator."""
    Trainer(load_recipe("navigation2d-pearl", [*TINY, "train.steps=3", f"run.dir={tmp_path / 'straight'}"])).fit()
    Trainer(load_recipe("navigation2d-pearl", [*TINY, "train.steps=2", f"run.dir={tmp_path / 'resumed'}"])).fit()
    Trainer(load_recipe("navigation2d-pearl", [*TINY, "train.steps=3", f"run.dir={tmp_path / 'resumed'}"]),
            resume=True).fit()
    straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=False)["model"]
    resumed = torch.load(tmp_path / "resumed" / "last.pt", weights_only=False)["model"]
    assert straight["_extra_state"]["rl_buffer"]["tasks"] and straight["_extra_state"]["rounds"] > 0
    assert equal(straight, resumed)
    test = json.loads((tmp_path / "resumed" / "results.json").read_text())["test"]  # the evaluator's protocol
    assert test["metric"] == "return" and test["episodes"] == 3 and set(test["stages"]) == {"return_0", "return_1"}

