"""Neural-process predictive log-likelihood and MSE on fixed test tasks, next to the exact GP oracle.

Per task: mean per-point log-likelihood of the query targets given the context (the support
points), and the MSE of the predictive mean; mean +- 95% CI over tasks. For the GP family the
exact GP posterior with the true kernel is the upper reference.

    python benchmarks/model/np_likelihood.py RUN_DIR --tasks 1000 [--plot out.png]
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from torch.distributions import Normal

from metalab.data.gp import GaussianProcessFamily
from metalab.data.sources import task_source
from metalab.train.build import load_run
from metalab.train.evaluate import mean_ci95


def gp_oracle(family: GaussianProcessFamily, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact per-task log-likelihood and MSE of the GP posterior: [T] each."""
    likelihoods, errors = [], []
    for task in (batch[i] for i in range(len(batch))):
        mean, std = family.posterior(task.support_x.double().numpy(), task.support_y.double().numpy(),
                                     task.query_x.double().numpy())
        mean, std = torch.from_numpy(mean), torch.from_numpy(std)
        likelihoods.append(Normal(mean, std).log_prob(task.query_y.double()).mean())
        errors.append((mean - task.query_y.double()).pow(2).mean())
    return torch.stack(likelihoods), torch.stack(errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--shots", type=int)
    parser.add_argument("--queries", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--plot", help="also write the predictive-mean +- 2 std plot of the first test tasks here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    learner, config, state = load_run(args.run)
    shots = args.shots or config.eval.shots
    queries = args.queries or config.eval.queries
    source = task_source(config, config.data.test_split, 0, shots, queries, seed=args.seed)
    scores = {"log_likelihood": [], "mse": [], "oracle_log_likelihood": [], "oracle_mse": []}
    start = time.perf_counter()
    learner.eval()
    for batch in source.fixed(args.tasks).batches(args.batch):
        scores["log_likelihood"].append(learner.log_likelihood(batch))
        scores["mse"].append((learner.predict(batch) - batch.query_y).pow(2).flatten(1).mean(1))
        if isinstance(source.family, GaussianProcessFamily):
            likelihood, error = gp_oracle(source.family, batch)
            scores["oracle_log_likelihood"].append(likelihood)
            scores["oracle_mse"].append(error)
    seconds = time.perf_counter() - start
    summary = {k: dict(zip(("mean", "ci95"), mean_ci95(torch.cat(v)))) for k, v in scores.items() if v}
    print(json.dumps({"run": args.run, "learner": config.learner.name, "family": config.data.dataset,
                      "step": state["step"], "shots": shots, "queries": queries, "tasks": args.tasks,
                      "seconds": seconds, **summary}))
    if args.plot:
        from metalab.train.plots import plot_predictions

        plot_predictions(learner, source, range(4), args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
