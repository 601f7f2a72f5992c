"""Merge the lodo.jsonl rows of benchmark runs split over processes (``lodo.py --out DIR --skip N
--methods ...``) into one directory, keeping the first row of each (task, method, seed), and
redraw its figure and summary.

    python benchmarks/automl/merge_rows.py benchmarks/automl/lodo benchmarks/automl/lodo-a ...
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from metalab.automl.report import report_benchmark
from metalab.utils.io import atomic_write_text


def main(out: str, *sources: str) -> int:
    seen, lines = set(), []
    for source in sources:
        for line in (Path(source) / "lodo.jsonl").read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            key = (row["task"], row["method"], row["seed"])
            if key not in seen:
                seen.add(key)
                lines.append(line)
    atomic_write_text(Path(out) / "lodo.jsonl", "\n".join(lines) + "\n")
    print(f"{len(lines)} rows -> {out}")
    for path in report_benchmark(Path(out)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
