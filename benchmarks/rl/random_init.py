"""The "random" comparison of the MAML paper's figure 5: a policy at its random initialisation, adapted on the
test tasks by the same policy-gradient steps as MAML-RL's, scored as ``metalab eval`` scores a run.

    python benchmarks/rl/random_init.py navigation2d-maml-rl [overrides...]
"""
from __future__ import annotations

import json
import sys

import torch

from metalab.config import load_recipe
from metalab.data.sources import evaluation_episodes, input_shape
from metalab.train.build import build_learner
from metalab.train.evaluate import evaluate

if __name__ == "__main__":
    config = load_recipe(sys.argv[1], sys.argv[2:])
    torch.manual_seed(config.train.seed)  # the initialisation the trainer starts from
    learner = build_learner(config, input_shape(config))
    result = evaluate(learner, evaluation_episodes(config), config.speed.eval_batch)
    print(result)
    print(json.dumps(result.as_dict()))
