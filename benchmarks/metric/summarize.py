"""Print benchmarks/metric/results.jsonl (written by run.sh) as a Markdown table.

Usage: python benchmarks/metric/summarize.py [results.jsonl]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

#: Omniglot accuracies (%) reported by the papers: {algorithm: {setting: accuracy}}.
PAPER = {
    "matching": {"5w1s": 98.1, "20w1s": 93.8}, "relation": {"5w1s": 99.6, "20w1s": 97.6},
    "siamese": {"5w1s": 97.3, "20w1s": 88.1}, "gnn": {"5w1s": 99.2, "20w1s": 97.4},
    "protonet": {"5w1s": 98.8, "20w1s": 96.0},
}


def row_cells(row: dict) -> list[str]:
    algorithm = row["recipe"].split("-")[1]
    paper = PAPER.get(algorithm, {}).get(row["eval"])
    if "train_wall_s" in row:
        cpu = f" / {row['train_cpu_s']:.0f} s" if "train_cpu_s" in row else ""
        train = f"{row['train_wall_s']:.0f} s{cpu}"
    else:
        train = "(same run)"
    overrides = f" ({row['overrides']})" if row.get("overrides") else ""
    how = "trainer's test" if "train_wall_s" in row else "metalab eval"
    cpu_note = f" / {row['process_cpu_s']:.0f} s" if "process_cpu_s" in row else ""
    return [f"{row['recipe']}{overrides}", str(row["steps"]), train, f"{row['eval']} ({how})",
            f"{100 * row['accuracy']:.2f} +- {100 * row['ci95']:.2f} ({row['episodes']})",
            "-" if paper is None else f"{paper:.1f}", f"{row['eval_wall_s']:.0f} s{cpu_note}"]


def main(path: str = str(Path(__file__).with_name("results.jsonl"))) -> None:
    print("| recipe (overrides) | train steps | train + test: wall / CPU | eval setting "
          "| accuracy % +- 95% CI (episodes) | paper % | eval wall (/ process CPU) |")
    print("|---|---|---|---|---|---|---|")
    for line in Path(path).read_text().splitlines():
        if line.strip():
            print("| " + " | ".join(row_cells(json.loads(line))) + " |")


if __name__ == "__main__":
    main(*sys.argv[1:])
