"""Meta-RL through the CLI as a user runs it: train a tiny 2D-navigation run, eval it, plot it, resume exactly."""
from __future__ import annotations

import json

import torch

from metalab.config import load_recipe
from metalab.train.trainer import Trainer
from test_cli import metalab

TINY = ["task.meta_batch=2", "task.shots=2", "task.queries=2", "eval.shots=2", "eval.queries=2", "eval.episodes=3",
        "eval.val_episodes=2", "train.val_every=2", "train.ckpt_every=2", "train.log_every=1", "data.horizon=10",
        "train.progress=false", "run.tensorboard=false", "speed.threads=1"]


def test_train_eval_plot_maml_rl_on_navigation(tmp_path):
    run = tmp_path / "nav"
    metalab("train", "navigation2d-maml-rl", *TINY, "train.steps=3", "learner.hidden=[8]", "learner.eval_steps=2",
            f"run.dir={run}")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 3 and all("return" in r and "return_pre" in r and r["kl"] <= 0.01 for r in train)
    assert {"return", "ci95", "return_0", "return_1"} <= set(next(r for r in records if r["kind"] == "val"))
    results = json.loads((run / "results.json").read_text())
    assert results["test"]["metric"] == "return" and results["test"]["episodes"] == 3
    scored = json.loads(metalab("eval", str(run), "--episodes", "4", "--threads", "1", "--json").stdout)
    assert scored["metric"] == "return" and scored["episodes"] == 4 and set(scored["stages"]) == {"return_0",
                                                                                                 "return_1"}
    again = json.loads(metalab("eval", str(run), "--episodes", "4", "--threads", "1", "--json").stdout)
    assert again["mean"] == scored["mean"]  # fixed tasks, seeded rollouts: the same score
    assert metalab("plot", str(run)).stdout.strip() == str(run / "trajectories.png")
    assert (run / "trajectories.png").stat().st_size > 0


def test_an_rl2_run_resumes_exactly(tmp_path):
    """In process (the trainer the CLI runs): 4 steps straight, and 2 steps then --resume to 4, give equal weights."""
    common = [*TINY, "task.queries=1", "eval.queries=1", "eval.val_episodes=0", "learner.hidden_size=8"]
    Trainer(load_recipe("navigation2d-rl2", [*common, "train.steps=4", f"run.dir={tmp_path / 'straight'}"])).fit()
    Trainer(load_recipe("navigation2d-rl2", [*common, "train.steps=2", f"run.dir={tmp_path / 'resumed'}"])).fit()
    Trainer(load_recipe("navigation2d-rl2", [*common, "train.steps=4", f"run.dir={tmp_path / 'resumed'}"]),
            resume=True).fit()
    straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=False)["model"]
    resumed = torch.load(tmp_path / "resumed" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_a_meta_rl_learner_on_a_data_set_is_refused(tmp_path):
    result = metalab("train", "navigation2d-maml-rl", "data.dataset=sinusoid", f"run.dir={tmp_path}", check=False)
    assert result.returncode == 1 and "acts in environments" in result.stderr
