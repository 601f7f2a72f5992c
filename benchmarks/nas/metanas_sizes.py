"""Sizes and architecture of a trained MetaNAS run: the one-shot network's weights and alpha entries, the derived
meta-architecture and its weights (the classifier on the derived cells, search-style BatchNorm, as MetaNAS's
pruning keeps them), and the range of each cell's operation weights softmax(alpha) at temperature 1.

    python benchmarks/nas/metanas_sizes.py runs/nas-bench/metanas-5w1s-12min
"""
from __future__ import annotations

import argparse
import json
from typing import cast

import torch

from metalab.algorithms.gradient.metanas import MetaNAS
from metalab.nas.space import alpha_names, derived_classifier
from metalab.train.build import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    args = parser.parse_args()
    loaded, config, state = load_run(args.run)
    if not isinstance(loaded, MetaNAS):
        raise SystemExit(f"{args.run} is a {type(loaded).__name__} run, not MetaNAS")
    learner = cast(MetaNAS, loaded)
    network = learner.network
    alphas = set(alpha_names(network))
    params = dict(network.named_parameters())
    genotype = learner.genotype()
    body = learner.body
    derived = derived_classifier(genotype, body.space, tuple(state["input_shape"]), int(config.learner.ways),
                                 affine=False)
    ranges = {kind: [round(float(w.min()), 4), round(float(w.max()), 4)]
              for kind, w in (("normal", torch.softmax(body.alpha_normal.detach(), -1)),
                              ("reduce", torch.softmax(body.alpha_reduce.detach(), -1)))}
    print(json.dumps({
        "one_shot_weights": sum(p.numel() for n, p in params.items() if n not in alphas),
        "alpha_entries": sum(params[n].numel() for n in alphas),
        "derived_weights": sum(p.numel() for p in derived.parameters()),
        "operation_weight_range": ranges,
        "genotype": str(genotype)}, indent=1))


if __name__ == "__main__":
    main()
