"""Re-score sinusoid runs on their 1000 fixed test tasks with 1 and with 10 inner steps at test (not a test).

    python benchmarks/gradient/rescore_test_steps.py RUN_DIR [RUN_DIR ...]

The same as `metalab eval RUN_DIR learner.inner_steps_test=STEPS --episodes 1000 --batch 100`, plus the
largest single-task MSE (which exposes a diverging inner loop).
"""
from __future__ import annotations

import sys

from metalab.data.sources import task_source
from metalab.train.build import load_run
from metalab.train.evaluate import evaluate


def main(run_dirs: list[str]) -> None:
    for run_dir in run_dirs:
        for test_steps in (1, 10):
            learner, config, _ = load_run(run_dir, overrides=[f"learner.inner_steps_test={test_steps}"])
            tasks = task_source(config, config.data.test_split, None, config.eval.shots, config.eval.queries,
                                seed=config.eval.seed).fixed(1000)
            result = evaluate(learner, tasks, 100)
            print(run_dir, "test steps", test_steps, result, "max task MSE", max(result.scores))


if __name__ == "__main__":
    main(sys.argv[1:])
