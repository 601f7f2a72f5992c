"""Re-score sinusoid runs on their 1000 test tasks with 1 and 10 inner steps at test.

    python benchmarks/gradient/rescore_test_steps.py RUN_DIR [RUN_DIR ...]
"""
import sys
from metalab.train.build import load_run
from metalab.train.evaluate import evaluate
from metalab.data.sources import task_source
for run in sys.argv[1:]:
    learner, config, _ = load_run(run)
    for steps in (1, 10):
        learner.options.inner_steps_test = steps
        eps = task_source(config, config.data.test_split, None, config.eval.shots, config.eval.queries, seed=config.eval.seed).fixed(1000)
        r = evaluate(learner, eps, 100)
        print(run, 'test steps', steps, r, 'max task MSE', max(r.scores))
