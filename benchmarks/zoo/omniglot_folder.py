"""Write a 5-way 5-shot support folder and a query folder of Omniglot test characters (Vinyals test split), as a user's
own drawings would be laid out, for benchmarks/zoo/first_prediction.sh. Needs only the standard library.

Usage: python benchmarks/zoo/omniglot_folder.py DATA_ROOT OUT [--ways 5 --shots 5 --queries 2 --seed 0]
writes OUT/support/<alphabet>_<character>/*.png and OUT/queries/<alphabet>_<character>/*.png (the query folder's
sub-folders name the true class, so the predictions can be checked by eye).
"""
from __future__ import annotations

import argparse
import random
import zipfile
from pathlib import Path

SPLIT = Path(__file__).resolve().parents[2] / "src" / "metalab" / "splits" / "omniglot" / "vinyals" / "test.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_root", type=Path, help="the data root holding omniglot/images_*.zip")
    parser.add_argument("out", type=Path, help="folder to write support/ and queries/ into")
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--queries", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    characters = sorted({line.rsplit("/", 1)[0] for line in SPLIT.read_text().split() if line.endswith("rot000")})
    chosen = random.Random(args.seed).sample(characters, args.ways)
    for name in ("images_background.zip", "images_evaluation.zip"):
        with zipfile.ZipFile(args.data_root / "omniglot" / name) as archive:
            for character in chosen:
                files = sorted(n for n in archive.namelist() if n.endswith(".png") and f"/{character}/" in n)
                for i, member in enumerate(files[:args.shots + args.queries]):
                    folder = "support" if i < args.shots else "queries"
                    target = args.out / folder / character.replace("/", "_") / Path(member).name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(archive.read(member))
    print(args.out)


if __name__ == "__main__":
    main()
