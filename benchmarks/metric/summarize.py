"""Print benchmarks/metric/results.jsonl (written by run.sh) as a Markdown table."""
from __future__ import annotations

import json
import sys
from pathlib import Path

#: Omniglot accuracies (%) reported by the papers, (5-way 1-shot, 20-way 1-shot).
PAPER = {
    "matching": (98.1, 93.8), "relation": (99.6, 97.6), "siamese": (97.3, 88.1), "gnn": (99.2, 97.4),
    "protonet": (98.8, 96.0),
}


def main(path: str = str(Path(__file__).with_name("results.jsonl"))) -> None:
    print("| recipe | train steps (overrides) | train + 5w1s test wall | eval | accuracy % (episodes) | paper % | eval wall |")
    print("|---|---|---|---|---|---|---|")
    for line in Path(path).read_text().splitlines():
        row = json.loads(line)
        algorithm = row["recipe"].split("-")[1]
        paper = PAPER.get(algorithm)
        paper_value = "-" if paper is None else f"{paper[0 if row['eval'].startswith('5w') else 1]:.1f}"
        wall = f"{row['train_wall_s']} s" if "train_wall_s" in row else "(same run)"
        print(f"| {row['recipe']} | {row['steps']} ({row['overrides'] or 'none'}) | {wall} | {row['eval']} | "
              f"{100 * row['accuracy']:.2f} +- {100 * row['ci95']:.2f} ({row['episodes']}) | {paper_value} | {row['eval_wall_s']} s |")


if __name__ == "__main__":
    main(*sys.argv[1:])
