"""(Re)build a zoo entry from a run that benchmarks/zoo/train.sh trained and scored: the checkpoint's weights and
resolved config, their SHA-256 and size, the 1000-episode score and the training budget, into the zoo's manifest
(written atomically; the other models are kept).

Usage (from the project root):
    python benchmarks/zoo/build_entry.py runs/zoo/omniglot-protonet-5w1s-10min omniglot-protonet-5w1s \
        --command "MINUTES=10 bash benchmarks/zoo/train.sh omniglot-protonet-5w1s"
    # weights too large for the package: --url https://host/path/NAME.pt (then upload zoo/to-publish/NAME.pt there)
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import yaml

from metalab.zoo.build import build_entry

PACKAGED = Path(__file__).resolve().parents[2] / "src" / "metalab" / "zoo" / "weights"
DATA = {"omniglot": "Omniglot (Vinyals split)"}


def budget(run: Path) -> dict[str, object]:
    """Wall and CPU seconds of training and evaluation, and the load before each, from RUN/budget.txt."""
    text = (run / "budget.txt").read_text()
    found: dict[str, object] = {}
    for phase in ("train", "eval"):
        match = re.search(rf"^{phase}: ([\d.]+) s wall, ([\d.]+) s user \+ ([\d.]+) s system CPU", text, re.M)
        if match:
            found[f"{phase}_wall_s"] = float(match[1])
            found[f"{phase}_cpu_s"] = round(float(match[2]) + float(match[3]), 2)
        load = re.search(rf"^uptime before {phase}[^:]*:.*load average: ([\d., ]+)$", text, re.M)
        if load:
            found[f"load_before_{phase}"] = load[1].strip()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run directory (scored: RUN/eval-1000.json, RUN/budget.txt)")
    parser.add_argument("name", help="the model's name in the zoo")
    parser.add_argument("--zoo", type=Path, default=PACKAGED, help="zoo folder (default: the package's)")
    parser.add_argument("--command", required=True, help="the command that trained and scored the run")
    parser.add_argument("--url", help="where the weights will be downloaded from (not package data)")
    parser.add_argument("--zoo-version", type=int, help="the zoo's version (default: one more than the manifest's)")
    args = parser.parse_args()
    evaluation = json.loads((args.run / "eval-1000.json").read_text())
    results = json.loads((args.run / "results.json").read_text())
    config = yaml.safe_load((args.run / "config.yaml").read_text())
    details = {
        "data": DATA.get(config["data"]["dataset"], config["data"]["dataset"]),
        "training": {"steps": results["steps"], "of_recipe_steps": config["train"]["steps"],
                     "checkpoint_step": evaluation["step"], "stopped_by_budget": results["stopped_by_budget"],
                     "command": args.command, "eval_command": "metalab eval RUN --episodes 1000 --seed 0 --json",
                     "overrides": "train.max_minutes, train.val_every, eval.val_episodes, eval.episodes (the "
                                  "trainer's own test), train.progress, run.tensorboard, run.dir",
                     **budget(args.run), "machine": "2 shared CPU cores (other jobs running)"},
    }
    record = build_entry(args.run, args.name, args.zoo, evaluation, details, url=args.url,
                         zoo_version=args.zoo_version)
    print(json.dumps({args.name: record}, indent=2))


if __name__ == "__main__":
    main()
