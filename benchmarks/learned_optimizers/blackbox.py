"""Black-box benchmark of RESULTS.md: the RNN optimizer of Chen et al. 2017 (meta-trained on GP-prior functions)
against random search and Optuna's TPE and GP samplers on held-out GP functions of dimension 2, 4 and 6: median
simple regret vs number of evaluations, at equal evaluations.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/learned_optimizers/blackbox.py --out DIR
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import optuna
import torch

from metalab.optimizers.blackbox import (
    GPFunctions,
    meta_train_search,
    random_search,
    sample_gp_functions,
    simple_regret,
)


def optuna_values(f: GPFunctions, index: int, steps: int, sampler: optuna.samplers.BaseSampler) -> list[float]:
    """The values of ``steps`` trials of ``sampler`` on function ``index`` of ``f``, in trial order."""
    one = GPFunctions(f.omega[index:index + 1], f.phase[index:index + 1], f.weight[index:index + 1])

    def objective(trial: optuna.Trial) -> float:
        x = torch.tensor([[trial.suggest_float(f"x{i}", 0.0, 1.0) for i in range(f.dim)]], dtype=f.omega.dtype)
        with torch.no_grad():
            return float(one(x)[0])

    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=steps)
    return [trial.value for trial in study.trials]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 4, 6])
    parser.add_argument("--steps", type=int, default=30, help="evaluations per search")
    parser.add_argument("--iterations", type=int, default=150, help="meta-training iterations per dimension")
    parser.add_argument("--functions", type=int, default=50, help="held-out functions per dimension")
    parser.add_argument("--gp-functions", type=int, default=3, help="of them, scored with Optuna's GP sampler")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for dim in args.dims:
        start = time.perf_counter()
        net, history = meta_train_search(dim, steps=args.steps, iterations=args.iterations, hidden=32)
        train_seconds = time.perf_counter() - start
        held_out = sample_gp_functions(args.functions, dim, seed=10_000 + dim)
        minimum = held_out.minimum()
        with torch.no_grad():
            _, rnn = net(held_out, len(held_out), args.steps, black_box=True)
        values = {"rnn": rnn, "random": random_search(held_out, args.steps, seed=dim)}
        values["optuna-tpe"] = torch.tensor([optuna_values(held_out, b, args.steps,
                                                           optuna.samplers.TPESampler(seed=b))
                                             for b in range(args.functions)])
        gp_count = min(args.gp_functions, args.functions)
        values["optuna-gp"] = torch.tensor([optuna_values(held_out, b, args.steps, optuna.samplers.GPSampler(seed=b))
                                            for b in range(gp_count)])
        results[dim] = {"train_seconds": round(train_seconds, 1), "first_loss": history[0],
                        "last_loss_mean10": sum(history[-10:]) / 10, "seconds": round(time.perf_counter() - start, 1),
                        "median_regret": {name: simple_regret(v, minimum[: len(v)]).median(0).values.tolist()
                                          for name, v in values.items()},
                        "functions": {name: len(v) for name, v in values.items()}}
        print(dim, {name: [round(r[t - 1], 3) for t in (5, 10, 20, args.steps)]
                    for name, r in results[dim]["median_regret"].items()}, results[dim]["seconds"], flush=True)
    (args.out / "blackbox.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, args.out / "blackbox_regret.png")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 3.4), squeeze=False)
    for axis, (dim, result) in zip(axes[0], results.items()):
        for name, regret in result["median_regret"].items():
            axis.plot(range(1, len(regret) + 1), regret, label=f"{name} ({result['functions'][name]} f)")
        axis.set_yscale("log")
        axis.set_title(f"GP functions, d = {dim}")
        axis.set_xlabel("evaluations")
        axis.set_ylabel("median simple regret")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
