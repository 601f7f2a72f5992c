"""The documentation runs: every fenced ``python`` block of README.md and docs/ is executed, and the site
(mkdocs.yml: docs/ and the API reference from the docstrings) builds with warnings as errors.

A page's blocks run in order in one fresh Python process, sharing their names as in a notebook, in a temporary
working directory that holds small generated data the pages use as a reader's own files would be:
``my_dataset/{train,val,test}/`` (folders of 10 grey-scale classes of 20 images, one sub-folder per class),
``my_symbols/`` (5 classes of 2 images: a support set) and ``queries/`` (3 images). Real Omniglot is read from
``$METALAB_DATA`` (``../shared/data`` beside the checkout).

An HTML comment on the lines just above a fence (invisible on the rendered page) changes how the block runs;
these are the only ones, and each is for a block that could not run here as written:

* ``<!-- doc-test: replace OLD => NEW -->``: run the block with the text OLD replaced by NEW (OLD must occur in it),
  e.g. a cheap variant of a long training run (``train.steps=2``); several may stand one above the other;
* ``<!-- doc-test: needs omniglot -->``: skip the page's blocks from this one on where the real Omniglot
  archives are not found;
* ``<!-- doc-test: skip REASON -->``: do not run the block at all, for REASON (only where running it is impossible
  here, e.g. it needs a GPU).
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from testdata import SHARED_DATA, make_class_dataset, write_image_folder

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
DIRECTIVE = re.compile(r"^<!--\s*doc-test:\s*(.*?)\s*-->[ \t]*$")
HAS_OMNIGLOT = all((SHARED_DATA / "omniglot" / f"images_{part}.zip").is_file() for part in ("background", "evaluation"))


@dataclass
class Block:
    page: Path
    line: int
    code: str
    skip: str | None = None
    needs: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The page's python blocks, with their doc-test directives applied."""
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        block = Block(page, line, match.group(1))
        above = text[: match.start()].splitlines()
        while above and (directive := DIRECTIVE.match(above[-1])):
            above.pop()
            verb, _, rest = directive.group(1).partition(" ")
            if verb == "replace":
                old, arrow, new = (part.strip() for part in rest.partition(" => "))
                assert arrow, f"{block}: a doc-test replace reads 'replace OLD => NEW'"
                assert old in block.code, f"{block}: the doc-test replace {old!r} is not in the block"
                block.code = block.code.replace(old, new)
            elif verb == "skip":
                assert rest.strip(), f"{block}: a doc-test skip names its reason"
                block.skip = rest.strip()
            elif verb == "needs" and rest == "omniglot":
                block.needs.append(rest)
            else:
                raise AssertionError(f"{block}: unknown doc-test directive {directive.group(1)!r}")
        found.append(block)
    return found


#: runs the blocks given as JSON on stdin in one namespace; names the block that fails
RUNNER = """
import json, sys, traceback
namespace = {"__name__": "__main__"}
for where, code in json.load(sys.stdin):
    try:
        exec(compile(code, where, "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        sys.exit(f"the block at {where} failed")
"""


@pytest.fixture(scope="module")
def reader_files(tmp_path_factory) -> Path:
    """What a reader's working directory holds in the pages' examples (see the module docstring)."""
    root = tmp_path_factory.mktemp("reader-files")
    for seed, split in enumerate(("train", "val", "test")):
        write_image_folder(root / "my_dataset" / split, make_class_dataset(classes=10, items=20, seed=seed))
    write_image_folder(root / "my_symbols", make_class_dataset(classes=5, items=2, seed=7))
    queries = write_image_folder(root / "query-classes", make_class_dataset(classes=3, items=1, seed=8))
    (root / "queries").mkdir()
    for number, image in enumerate(sorted(queries.rglob("*.png"))):
        shutil.copy(image, root / "queries" / f"{'abc'[number]}.png")
    shutil.rmtree(queries)
    return root


def pages_with_code() -> list[Path]:
    return [page for page in PAGES if blocks(page)]


@pytest.mark.parametrize("page", pages_with_code(), ids=lambda page: str(page.relative_to(ROOT)))
def test_the_pages_python_blocks_run(page, reader_files, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(reader_files, work)
    runnable = []
    for block in blocks(page):
        if block.needs and not HAS_OMNIGLOT:
            break  # and the blocks after it, which may use its names
        if block.skip is None:
            runnable.append((str(block), block.code))
    if not runnable:
        pytest.skip(f"{page.name}: its blocks need the real Omniglot archives, not found under {SHARED_DATA}")
    env = {**os.environ, "METALAB_DATA": str(SHARED_DATA), "PYTHONUNBUFFERED": "1"}
    result = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(runnable), capture_output=True, text=True,
                            cwd=work, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]


def test_the_directives_are_few_and_the_skips_give_reasons():
    skipped = [f"{block}: {block.skip}" for page in PAGES for block in blocks(page) if block.skip]
    assert len(skipped) <= 2, f"blocks left out of the doc tests: {skipped}"


def test_the_site_builds_with_warnings_as_errors(tmp_path):
    if importlib.util.find_spec("mkdocs") is None:
        if os.environ.get("CI"):
            pytest.fail("mkdocs is not installed: scripts/setup.sh installs the docs extra (pip install -e '.[docs]')")
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "api" / "index.html").is_file()

