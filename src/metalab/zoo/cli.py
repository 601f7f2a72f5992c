"""``metalab zoo list`` and ``metalab zoo show NAME``: the models of the zoo (:mod:`metalab.zoo.registry`)."""
from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the registry imports torch: only when a zoo command runs
    from metalab.zoo.registry import Zoo, ZooEntry


def size_text(size: int) -> str:
    """A file size in KB or MB (1000-based, as ``ls -h --si``)."""
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} KB"


def where_text(zoo: Zoo, entry: ZooEntry) -> str:
    """Where the weights are: in the package, or downloaded (and cached or not yet)."""
    if entry.url is None:
        return "packaged"
    return "downloaded" if zoo.local_path(entry).is_file() else "download on first use"


def cmd_list(args: argparse.Namespace) -> int:
    from metalab.zoo.registry import packaged_zoo

    zoo = packaged_zoo()
    if args.json:
        print(json.dumps({"zoo_version": zoo.version, "models": {n: e.record for n, e in zoo.entries.items()}}))
        return 0
    rows = [("name", "data", "recipe", "test accuracy +- 95% CI", "size", "sha256", "weights")]
    rows += [(e.name, e.record.get("data", "-"), e.record.get("recipe", "-"), e.accuracy_text(),
              size_text(int(e.record["size"])), e.sha256[:12], where_text(zoo, e)) for e in zoo.entries.values()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(f"metalab model zoo, version {zoo.version} ({zoo.folder})")
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from metalab.zoo.registry import packaged_zoo

    zoo = packaged_zoo()
    entry = zoo.entry(args.name)
    if args.json:
        print(json.dumps({"name": entry.name, **entry.record}))
        return 0
    print(f"{entry.name}: {entry.accuracy_text()}")
    for key, value in entry.record.items():
        print(f"  {key}: {json.dumps(value) if isinstance(value, (dict, list)) or value is None else value}")
    print(f"  weights: {zoo.local_path(entry)} ({where_text(zoo, entry)})")
    print(f"  use: metalab predict --model {entry.name} --support DIR --query FILE_OR_DIR ...")
    return 0


def add_zoo_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``metalab zoo`` and its verbs on the top-level parser's sub-parsers."""
    zoo = sub.add_parser("zoo", help="the model zoo: learners trained by metalab, for `metalab predict --model NAME`",
                         description="The model zoo: learners trained by metalab, ready for `metalab predict --model "
                                     "NAME` without training ($METALAB_ZOO: another zoo's folder).")
    verbs = zoo.add_subparsers(dest="zoo_command", required=True, metavar="VERB")
    p = verbs.add_parser("list", help="each model's name, data, recipe, test accuracy +- 95%% CI (and the episodes "
                                      "it was measured on), weights size and SHA-256")
    p.add_argument("--json", action="store_true", help="print the manifest's models as one JSON object")
    p.set_defaults(func=cmd_list)
    p = verbs.add_parser("show", help="everything the manifest says about one model, and where its weights are")
    p.add_argument("name", help="model name (see `metalab zoo list`)")
    p.add_argument("--json", action="store_true", help="print the model's record as one JSON object")
    p.set_defaults(func=cmd_show)
