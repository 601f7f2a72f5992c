"""Distributed meta-training (torchrun, gloo on CPU) against one process.

Two real launches of ``torch.distributed.run`` with 2 processes on 127.0.0.1 (a free port, a
timeout that kills the whole launch): one runs every training/evaluation job below in a single
process group (see distributed_jobs.py), one is killed mid-run. References run in this process.

Tolerance of the parameter comparisons: |a - b| <= 1e-5 + 1e-4 |b| (float32). One process
back-propagates the mean loss of 16 tasks in one graph; two ranks back-propagate the mean of 8 each
and the all-reduce adds the two halves and halves the sum. Mathematically equal, the float32 sums run
in another order, so gradients differ by rounding (a few ulps, eps = 1.2e-7, of the per-task terms),
and 4 SGD steps carry that into the weights: the largest differences measured are 1.9e-7 (ProtoNet
per task), 6e-8 (MAML), 1.5e-8 (Reptile) on weights up to ~1, 50 times below the tolerance, while
changing what the ranks compute (BatchNorm statistics over 8 instead of 16 tasks) moves weights by
7e-2. Where both sides do the same float operations in the same order (the shard-wise ProtoNet
reference) the models are bit-identical. Every run is deterministic, so these comparisons are not
flaky; but they hold to rounding only while no rounding difference flips a discrete decision (a
ReLU sign, a max-pool winner), which in this tiny network moves a weight by ~1e-3: e.g. the SAME
one-process run with 2 intra-op threads instead of 1 differs by 1.5e-3. Hence both sides use one
thread (``speed.threads=1``), and a failure here after an unrelated change of a learner's float
operations should first be checked against that before suspecting the gradient averaging.

SGD (with momentum) rather than Adam: Adam divides each coordinate by its own gradient's magnitude,
so coordinates whose true gradient is zero (conv biases in front of BatchNorm, which cancels them)
take +-lr steps from rounding noise of either summation order; that is not a distributed effect.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import warnings
from dataclasses import fields
from functools import cache
from pathlib import Path

import pytest
import torch

import distributed_learners  # noqa: F401  (registers the test-only ProtoNet variants)
from metalab.algorithms.registry import learner_class, learner_names
from metalab.config import compose
from metalab.data.episodes import EpisodeSampler
from metalab.data.regression import regression_source
from metalab.train.checkpoint import load_checkpoint
from metalab.train.distributed import Ranks, episode_range, evaluation_share
from metalab.train.evaluate import evaluate
from metalab.train.trainer import Trainer
from testdata import make_class_dataset, write_image_folder

JOBS_SCRIPT = Path(__file__).resolve().parent / "distributed_jobs.py"
LAUNCH_TIMEOUT = 240  # seconds; the launch and all its processes are killed after it
RTOL, ATOL = 1e-4, 1e-5
STEPS = 4
#: runs compared between 2 ranks and 1 process: case -> (learner, learner options).
CASES = {
    "protonet-per-task": ("protonet", {"per_task_statistics": True}),
    "protonet": ("protonet", {}),
    "protonet-sharded": ("protonet-sharded", {}),  # one-process reference only
    "protonet-diverging": ("protonet-diverging", {}),  # a broken learner, launched on its own below
    "maml": ("maml", {}),
    "maml-running-bn": ("maml", {"bn_mode": "running"}),
    "reptile": ("reptile", {}),
}
LAUNCHED = [case for case in CASES if case not in ("protonet-sharded", "protonet-diverging")]
#: gradient-based learners, compared once registered (they are written alongside this).
OPTIONAL = ("maml", "maml-running-bn", "reptile")


def learner_settings(case: str) -> dict:
    """The case's learner with tiny, fast settings for whatever options it has.

    Reptile adapts with SGD here: with its default inner Adam, coordinates whose true gradient is
    zero take +-inner_lr steps from rounding noise (see the module docstring).
    """
    name, extra = CASES[case]
    known = {f.name for f in fields(learner_class(name).Options)}
    wanted = {"hidden": 8, "ways": 3, "inner_steps": 2, "inner_steps_test": 2, "inner_lr": 0.1,
              "inner_optimizer": "sgd"}
    return {"name": name, **{k: v for k, v in wanted.items() if k in known}, **extra}


def recipe(case: str, folders: dict[str, Path], run_dir: Path, **changes) -> dict:
    config = {
        "name": f"dist-{case}",
        "data": {"dataset": "folder", "train_split": str(folders["train"]), "val_split": str(folders["val"]),
                 "test_split": str(folders["test"]), "image_size": 16, "channels": 1},
        "task": {"ways": 3, "shots": 1, "queries": 2, "meta_batch": 16},
        "eval": {"ways": 3, "shots": 1, "queries": 2, "episodes": 10, "val_episodes": 6},
        "learner": learner_settings(case),
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        # one intra-op thread on both sides: see the module docstring
        "train": {"steps": STEPS, "val_every": 2, "ckpt_every": 2, "log_every": 1, "progress": False},
        "speed": {"threads": 1, "eval_batch": 4},
        "run": {"dir": str(run_dir), "tensorboard": False},
    }
    for key, value in changes.items():
        section, field_name = key.split("__")
        config[section][field_name] = value
    return config


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(jobs: list[dict], directory: Path, processes: int = 2) -> subprocess.CompletedProcess:
    """Run ``jobs`` under ``torch.distributed.run``; the launch is killed (whole process group) on timeout."""
    jobs_file = directory / "jobs.json"
    jobs_file.write_text(json.dumps(jobs))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "--max_restarts", "0",
               "--monitor_interval", "0.5", str(JOBS_SCRIPT), str(jobs_file)]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "METALAB_CACHE": str(directory / "cache")}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=LAUNCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"the distributed launch did not finish in {LAUNCH_TIMEOUT} s:\n{output[-4000:]}")
    returncode = process.returncode
    if returncode != 0 and teardown_abort_only(output, processes):
        # Every rank finished its jobs and left the process group; one then aborted in the interpreter's
        # teardown (pytorch/gloo#155 "barrier followed by context destruction causes some participants to fail", and
        # pytorch/pytorch#179291): rare, and nothing of the run is lost.
        warnings.warn(f"a rank aborted after leaving the process group (SIGABRT at exit): {output[-300:]}",
                      stacklevel=2)
        returncode = 0
    return subprocess.CompletedProcess(command, returncode, output)


def teardown_abort_only(output: str, processes: int) -> bool:
    """Whether a failed launch's only failure is a SIGABRT after every rank left the process group."""
    left = all(f"rank {rank}: left the process group" in output for rank in range(processes))
    exit_codes = re.findall(r"exitcode\s*:\s*(-?\d+)", output)
    return left and "-6" in exit_codes and set(exit_codes) <= {"-6", "-15"}


def test_only_an_abort_after_every_rank_left_is_forgiven():
    report = "  exitcode  : -6 (pid: 2)  (SIGABRT)\n  exitcode  : -15 (pid: 1)  (SIGTERM)\n"
    both_left = "rank 0: left the process group\nrank 1: left the process group\n"
    assert teardown_abort_only(both_left + report, 2)
    assert not teardown_abort_only("rank 0: left the process group\n" + report, 2)  # rank 1 aborted mid-run
    assert not teardown_abort_only(both_left + "  exitcode  : 1 (pid: 2)\n", 2)  # an error, not an abort


def fit_here(config: dict, resume: bool = False) -> dict:
    """Train in this process (one thread, as the config says), then give pytest back its thread count."""
    threads = torch.get_num_threads()
    try:
        return Trainer(compose(config), resume=resume).fit()
    finally:
        torch.set_num_threads(threads)


def available(case: str) -> bool:
    return CASES[case][0] in learner_names()


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dist-data")
    return {split: write_image_folder(root / split, make_class_dataset(classes=8, items=6, seed=seed))
            for seed, split in enumerate(("train", "val", "test"))}


@pytest.fixture(scope="module")
def single(folders, tmp_path_factory):
    """``single(name, steps)``: the state of a one-process run (meta-batch 16), run once per name."""
    root = tmp_path_factory.mktemp("single")

    @cache
    def run(name: str, steps: int = STEPS) -> dict:
        run_dir = root / f"{name}-{steps}"
        fit_here(recipe(name, folders, run_dir, train__steps=steps))
        return load_checkpoint(run_dir / "last.pt")

    return run


@pytest.fixture(scope="module")
def launched(folders, single, tmp_path_factory) -> Path:
    """One 2-process launch running every job; returns its output directory."""
    root = tmp_path_factory.mktemp("launch")
    cases = [case for case in LAUNCHED if available(case)]
    jobs = [{"kind": "train", "out": str(root / case), "config": recipe(case, folders, root / case / "run")}
            for case in cases]
    # resume into 2 processes from a checkpoint that one process wrote after half the steps
    half = root / "resume" / "run"
    fit_here(recipe("protonet-per-task", folders, half, train__steps=STEPS // 2))
    jobs.append({"kind": "train", "out": str(root / "resume"), "resume": True,
                 "config": recipe("protonet-per-task", folders, half)})
    jobs.append({"kind": "train", "out": str(root / "indivisible"), "expect_error": True,
                 "config": recipe("protonet", folders, root / "indivisible" / "run", task__meta_batch=3)})
    jobs.append({"kind": "train", "out": str(root / "exists"), "expect_error": True,
                 "config": recipe("protonet", folders, root / "protonet" / "run")})
    jobs.append({"kind": "train", "out": str(root / "diverging"), "expect_error": True,
                 "config": recipe("protonet-diverging", folders, root / "diverging" / "run", train__steps=2)})
    jobs.append({"kind": "evaluate", "out": str(root / "eval-18-by-4"), "episodes": 18, "batch": 4})
    jobs.append({"kind": "evaluate", "out": str(root / "eval-5-by-50"), "episodes": 5, "batch": 50})
    result = launch(jobs, root)
    assert result.returncode == 0, result.stdout[-6000:]
    return root


def rank_states(directory: Path) -> list[dict]:
    return [torch.load(directory / f"rank{r}.pt", weights_only=False) for r in range(2)]


def assert_models_close(actual: dict, expected: dict, parameters_only: bool = False) -> None:
    for name, tensor in expected.items():
        if parameters_only and (name.endswith(("running_mean", "running_var", "num_batches_tracked"))):
            continue
        torch.testing.assert_close(actual[name], tensor, rtol=RTOL, atol=ATOL, msg=lambda m, name=name: f"{name}: {m}")


# ------------------------------------------------------------------------------ equivalence
def test_protonet_per_task_two_ranks_equal_one_process(launched, single):
    """Statistics per task: 2 ranks x 8 tasks = 1 process x 16 tasks (parameters; running
    BatchNorm estimates are updated once per task forward, so their order differs)."""
    distributed = load_checkpoint(launched / "protonet-per-task" / "run" / "last.pt")
    assert distributed["step"] == STEPS and distributed["world_size"] == 2
    assert_models_close(distributed["model"], single("protonet-per-task")["model"], parameters_only=True)


def test_protonet_two_ranks_equal_shardwise_batchnorm_reference(launched, single):
    """Real ProtoNet (one backbone pass per meta-batch): each rank's BatchNorm statistics cover its 8
    tasks, so 2 ranks equal one process that averages the meta-steps of two 8-task shards (parameters
    and running estimates), and differ slightly from one 16-task pass."""
    distributed = load_checkpoint(launched / "protonet" / "run" / "last.pt")["model"]
    assert_models_close(distributed, single("protonet-sharded")["model"])
    plain = single("protonet")["model"]
    assert any(not torch.allclose(distributed[k], plain[k], rtol=RTOL, atol=ATOL) for k in plain), \
        "shard-wise statistics should differ from 16-task statistics; the reference would prove nothing"


@pytest.mark.parametrize("case", OPTIONAL)
def test_gradient_learner_two_ranks_equal_one_process(case, launched, single):
    """MAML, Reptile: tasks adapt (and normalise) one by one, so 2 x 8 = 1 x 16; with running BatchNorm
    estimates (mean of the tasks' statistics, averaged over the ranks) the estimates match too."""
    if not available(case):
        pytest.skip(f"learner {CASES[case][0]!r} is not registered yet")
    distributed = load_checkpoint(launched / case / "run" / "last.pt")
    assert distributed["step"] == STEPS and distributed["world_size"] == 2
    assert_models_close(distributed["model"], single(case)["model"])


def test_ranks_hold_bit_identical_models_and_results(launched):
    for job in [*[case for case in LAUNCHED if available(case)], "resume"]:
        first, second = rank_states(launched / job)
        for name, tensor in first["model"].items():
            assert torch.equal(tensor, second["model"][name]), f"{job}: {name} differs between ranks"
        assert first["results"] == second["results"]


def test_only_rank_zero_writes_and_logs_read_like_one_run(launched):
    run = launched / "protonet-per-task" / "run"
    assert {"last.pt", "best.pt", "config.yaml", "metrics.jsonl", "results.json"} <= {p.name for p in run.iterdir()}
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, STEPS + 1))  # one writer
    assert [r["step"] for r in records if r["kind"] == "val"] == [2, 4]
    results = json.loads((run / "results.json").read_text())
    assert results["test"]["episodes"] == 10


def test_resume_one_process_checkpoint_into_two_ranks(launched, single):
    resumed = load_checkpoint(launched / "resume" / "run" / "last.pt")
    assert resumed["step"] == STEPS and resumed["world_size"] == 2
    assert_models_close(resumed["model"], single("protonet-per-task")["model"], parameters_only=True)


def test_meta_batch_not_divisible_by_world_size_is_a_clear_error(launched):
    for rank in range(2):  # every rank stops with the same message, nothing is written
        message = (launched / "indivisible" / f"error-rank{rank}.txt").read_text()
        assert "task.meta_batch=3 cannot be split evenly over 2 processes" in message
    assert not (launched / "indivisible" / "run").exists()


def test_rank_zero_decisions_reach_every_rank(launched):
    """Only rank 0 looks at the run directory; its "already holds a run" stops every rank alike."""
    for rank in range(2):
        message = (launched / "exists" / f"error-rank{rank}.txt").read_text()
        assert message.startswith("RunExistsError") and "already holds a run" in message


def test_a_learner_that_updates_weights_outside_grad_is_caught(launched):
    """Ranks compare model fingerprints at every checkpoint; a learner stepping its own weights fails loudly."""
    for rank in range(2):
        message = (launched / "diverging" / f"error-rank{rank}.txt").read_text()
        assert message.startswith("RanksDivergedError") and "outside .grad" in message
    assert not (launched / "diverging" / "run" / "last.pt").exists()  # the diverged model was not saved


@pytest.mark.parametrize("episodes, batch", [(18, 4), (5, 50)])
def test_split_evaluation_scores_the_same_episodes_as_one_process(launched, episodes, batch):
    torch.manual_seed(0)
    from metalab.algorithms.metric.protonet import ProtoNet, ProtoNetOptions

    learner = ProtoNet(ProtoNetOptions(name="protonet", hidden=8), (1, 28, 28))
    fixed = EpisodeSampler(make_class_dataset(), ways=5, shots=1, queries=3, seed=2).fixed(episodes)
    expected = evaluate(learner, fixed, batch)
    for rank in range(2):
        result = json.loads((launched / f"eval-{episodes}-by-{batch}" / f"eval-rank{rank}.json").read_text())
        assert result["scores"] == expected.scores
        assert (result["accuracy"], result["ci95"], result["episodes"]) == (expected.mean, expected.ci95, episodes)
        assert result["episode_metrics"] == expected.episode_metrics  # NLL, ECE, Brier gathered in episode order
        assert expected.reliability is not None and result["ece_pooled"] == pytest.approx(expected.reliability.ece())


# ------------------------------------------------------------------------------ failure
def test_killed_rank_leaves_checkpoint_and_run_resumes(folders, single, tmp_path):
    run = tmp_path / "run"
    config = recipe("protonet-per-task", folders, run, train__ckpt_every=1)
    result = launch([{"kind": "train", "out": str(tmp_path), "config": config, "kill": [1, 3]}], tmp_path)
    assert result.returncode != 0
    assert "SIGKILL" in result.stdout or "Signal 9" in result.stdout, result.stdout[-4000:]
    state = load_checkpoint(run / "last.pt")
    assert state["step"] == 3  # steps 1-3 done, rank 1 died at the start of step 4
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    # resume in one process (a 2-process checkpoint into world size 1) and finish the run
    results = fit_here(config, resume=True)
    assert results["steps"] == STEPS
    assert_models_close(load_checkpoint(run / "last.pt")["model"], single("protonet-per-task")["model"],
                        parameters_only=True)


# ------------------------------------------------------------------------------ pieces
def test_each_rank_takes_an_equal_share_or_a_clear_error():
    assert [Ranks(rank=r, world_size=4).share(16) for r in range(4)] == [(0, 4), (4, 4), (8, 4), (12, 4)]
    with pytest.raises(ValueError, match=r"task.meta_batch=6 cannot be split evenly over 4 processes.*1, 2, 3, 6"):
        Ranks(rank=0, world_size=4).share(6)


def test_evaluation_shares_are_whole_batches_covering_every_episode_once():
    for count, batch, world in [(18, 4, 2), (5, 50, 2), (1000, 50, 3), (7, 2, 8)]:
        shares = [evaluation_share(count, batch, Ranks(rank=r, world_size=world)) for r in range(world)]
        assert shares[0][0] == 0 and shares[-1][1] == count
        assert all(a[1] == b[0] for a, b in zip(shares, shares[1:]))
        assert all(start % batch == 0 for start, stop in shares if stop > start)


def test_episode_ranges_hold_the_same_tasks(class_dataset):
    fixed = EpisodeSampler(class_dataset, ways=3, shots=1, queries=2, seed=4).fixed(9)
    whole = next(fixed.batches(9))
    part = next(episode_range(fixed, 3, 7).batches(9))
    assert torch.equal(part.support_x, whole.support_x[3:7]) and torch.equal(part.query_y, whole.query_y[3:7])
    regression = regression_source("sinusoid", "val", shots=5, queries=5, seed=1).fixed(9)
    whole = next(regression.batches(9))
    parts = list(episode_range(regression, 4, 9).batches(2))
    assert [len(p) for p in parts] == [2, 2, 1] and len(episode_range(regression, 4, 9)) == 5
    assert torch.equal(torch.cat([p.query_y for p in parts]), whole.query_y[4:9])
