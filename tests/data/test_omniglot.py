"""Omniglot from the official archives: layout, preprocessing, cache, splits, errors."""
from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path

import pytest
import torch

from metalab.data.omniglot import SPLITS, load_omniglot
from metalab.data.store import DataNotFoundError, split_list
from testdata import damage_stored_tensor

SMALL = "images_background_small1"


def _zip_layout(path: Path, top: str) -> dict[str, int]:
    """character ('Alphabet/characterNN') -> number of PNGs, read straight from the zip."""
    counts: dict[str, int] = {}
    for name in zipfile.ZipFile(path).namelist():
        parts = name.split("/")
        if len(parts) == 4 and parts[0] == top and parts[3].endswith(".png"):
            counts[f"{parts[1]}/{parts[2]}"] = counts.get(f"{parts[1]}/{parts[2]}", 0) + 1
    return counts


@pytest.mark.usefixtures("isolated_cache")
def test_small_archive_contents(real_root: Path) -> None:
    data = load_omniglot("lake-background-small1", real_root)
    layout = _zip_layout(real_root / "omniglot" / f"{SMALL}.zip", SMALL)
    assert data.class_names == sorted(layout)
    assert all(data.items_in(c) == 20 for c in range(data.num_classes))
    assert set(layout.values()) == {20}
    assert data.images.shape == (20 * len(layout), 1, 28, 28) and data.images.dtype == torch.uint8
    assert data.groups == [name.split("/")[0] for name in data.class_names]
    assert len(set(data.groups)) == 5
    assert data.name == "omniglot/lake-background-small1"
    # strokes bright (255) on a black background: most pixels dark, the strokes saturate
    assert data.images.max() == 255
    assert data.images.float().mean() < 60
    assert (data.images == 0).float().mean() > 0.5


def test_second_load_is_cached(real_root: Path, isolated_cache: Path) -> None:
    first = load_omniglot("lake-background-small1", real_root)
    cache_files = list(isolated_cache.glob("omniglot-*.pt"))
    assert len(cache_files) == 1 and "28px" in cache_files[0].name
    start = time.perf_counter()
    second = load_omniglot("lake-background-small1", real_root)
    assert time.perf_counter() - start < 1.0
    assert torch.equal(first.images, second.images) and first.class_names == second.class_names
    assert torch.load(cache_files[0], weights_only=True)["images"].shape == first.images.shape


@pytest.mark.usefixtures("isolated_cache")
def test_image_size(real_root: Path) -> None:
    data = load_omniglot("lake-background-small1", real_root, image_size=14)
    assert data.image_shape == (1, 14, 14)


def test_changed_source_invalidates_cache(tmp_path: Path, isolated_cache: Path, make_zip) -> None:
    archive = make_zip(tmp_path / "root" / "omniglot" / "images_background.zip")
    first = load_omniglot("lake-background", tmp_path / "root")
    assert first.num_classes == 4 and first.images.shape == (12, 1, 28, 28)
    make_zip(archive, alphabets=("Alpha", "Beta", "Gamma"))
    os.utime(archive, ns=(time.time_ns(), time.time_ns() + 10**9))
    second = load_omniglot("lake-background", tmp_path / "root")
    assert second.num_classes == 6 and set(second.groups) == {"Alpha", "Beta", "Gamma"}
    assert len(list(isolated_cache.glob("omniglot-images_background-28px-*.pt"))) == 2


def test_a_damaged_cache_is_rebuilt_with_a_one_line_message(tmp_path: Path, isolated_cache: Path, make_zip,
                                                            capsys: pytest.CaptureFixture) -> None:
    make_zip(tmp_path / "root" / "omniglot" / "images_evaluation.zip", top="images_evaluation",
             alphabets=("Alpha", "Beta", "Gamma"), characters=20, drawings=5)  # 235 kB of images
    first = load_omniglot("lake-evaluation", tmp_path / "root")
    [cache] = isolated_cache.glob("omniglot-images_evaluation-28px-*.pt")
    damage_stored_tensor(cache, first.images, size=200_000, fill=b"\0")  # zeros in the middle of the images
    assert not torch.equal(torch.load(cache, weights_only=True)["images"], first.images)
    capsys.readouterr()
    second = load_omniglot("lake-evaluation", tmp_path / "root")
    lines = capsys.readouterr().err.splitlines()  # the rebuild, then (when the CLI's logging is on) what it decodes
    assert lines[0].startswith(f"metalab: rebuilding a cache file: {cache} is damaged")
    assert not [line for line in lines[1:] if line.startswith("metalab: rebuilding")]  # said once
    assert torch.equal(second.images, first.images)  # decoded again from the archive
    load_omniglot("lake-evaluation", tmp_path / "root")
    assert capsys.readouterr().err == ""  # the rebuilt cache checks out


def test_a_cache_without_checksum_is_rebuilt(tmp_path: Path, isolated_cache: Path, make_zip,
                                             capsys: pytest.CaptureFixture) -> None:
    make_zip(tmp_path / "root" / "omniglot" / "images_background.zip")
    first = load_omniglot("lake-background", tmp_path / "root")
    [cache] = isolated_cache.glob("omniglot-*.pt")
    payload = torch.load(cache, weights_only=True)
    payload["images"] = torch.zeros_like(payload["images"])
    torch.save(payload, cache)  # as an earlier metalab wrote caches: no checksum
    capsys.readouterr()
    assert torch.equal(load_omniglot("lake-background", tmp_path / "root").images, first.images)
    assert "carries no checksum (written by an earlier metalab)" in capsys.readouterr().err


@pytest.mark.usefixtures("isolated_cache")
def test_extracted_folder_matches_zip(real_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    with zipfile.ZipFile(real_root / "omniglot" / f"{SMALL}.zip") as zipped:
        zipped.extractall(root / "omniglot")
    assert (root / "omniglot" / SMALL).is_dir() and not (root / "omniglot" / f"{SMALL}.zip").exists()
    from_folder = load_omniglot("lake-background-small1", root)
    from_zip = load_omniglot("lake-background-small1", real_root)
    assert from_folder.class_names == from_zip.class_names and from_folder.groups == from_zip.groups
    assert torch.equal(from_folder.images, from_zip.images)


@pytest.mark.usefixtures("full_cache")
def test_lake_split_sizes(full_root: Path) -> None:
    background = load_omniglot("lake-background", full_root)
    evaluation = load_omniglot("lake-evaluation", full_root)
    assert background.num_classes == 964 and evaluation.num_classes == 659
    assert background.images.shape == (964 * 20, 1, 28, 28)
    assert len(set(background.groups)) == 30 and len(set(evaluation.groups)) == 20


@pytest.mark.usefixtures("full_cache")
@pytest.mark.parametrize("split,size", [("train", 4112), ("val", 688), ("test", 1692), ("trainval", 4800)])
def test_vinyals_split_sizes(full_root: Path, split: str, size: int) -> None:
    data = load_omniglot(f"vinyals-{split}", full_root)
    assert data.num_classes == size
    assert data.class_names == split_list("omniglot", "vinyals", f"{split}.txt")
    assert all(data.items_in(c) == 20 for c in range(data.num_classes))
    assert data.groups == [name.split("/")[0] for name in data.class_names]


@pytest.mark.usefixtures("full_cache")
def test_vinyals_rotations_and_disjointness(full_root: Path) -> None:
    train = load_omniglot("vinyals-train", full_root)
    test = load_omniglot("vinyals-test", full_root)
    upright = train.class_index("Angelic/character01/rot000")
    turned = train.class_index("Angelic/character01/rot090")
    assert torch.equal(train.get(turned, [0]), torch.rot90(train.get(upright, [0]), 1, dims=(2, 3)))
    assert not set(train.class_names) & set(test.class_names)
    evaluation = load_omniglot("lake-evaluation", full_root)  # Angelic is an evaluation alphabet
    assert torch.equal(train.get(upright, range(20)),
                       evaluation.get(evaluation.class_index("Angelic/character01"), range(20)))


def test_missing_root(tmp_path: Path, isolated_cache: Path) -> None:
    with pytest.raises(DataNotFoundError) as error:
        load_omniglot("lake-background", tmp_path / "nowhere")
    message = str(error.value)
    assert str(tmp_path / "nowhere" / "omniglot" / "images_background.zip") in message
    assert "metalab data --download omniglot" in message and "METALAB_DATA" in message
    assert not list(isolated_cache.glob("*.pt"))


def test_vinyals_needs_both_archives(tmp_path: Path, make_zip, isolated_cache: Path) -> None:
    make_zip(tmp_path / "omniglot" / "images_background.zip")
    with pytest.raises(DataNotFoundError, match="images_evaluation"):
        load_omniglot("vinyals-train", tmp_path)


def test_corrupt_zip(tmp_path: Path, isolated_cache: Path) -> None:
    archive = tmp_path / "omniglot" / "images_background.zip"
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"this is not a zip archive" * 100)
    with pytest.raises(ValueError) as error:
        load_omniglot("lake-background", tmp_path)
    assert str(archive) in str(error.value) and "re-download" in str(error.value)
    assert not list(isolated_cache.glob("*.pt"))


def test_corrupt_png_in_zip(tmp_path: Path, make_zip, isolated_cache: Path) -> None:
    archive = make_zip(tmp_path / "omniglot" / "images_background.zip")
    with zipfile.ZipFile(archive, "a") as zipped:
        zipped.writestr("images_background/Beta/character09/0999_01.png", b"\x89PNG garbage")
    with pytest.raises(ValueError, match="0999_01.png"):
        load_omniglot("lake-background", tmp_path)
    assert not list(isolated_cache.glob("*.pt"))


def test_corrupt_png_in_folder(real_root: Path, tmp_path: Path, isolated_cache: Path) -> None:
    with zipfile.ZipFile(real_root / "omniglot" / f"{SMALL}.zip") as zipped:
        zipped.extractall(tmp_path / "omniglot")
    victim = sorted((tmp_path / "omniglot" / SMALL).glob("*/character01/*.png"))[3]
    victim.write_bytes(b"not a png at all")
    with pytest.raises(ValueError) as error:
        load_omniglot("lake-background-small1", tmp_path)
    assert str(victim) in str(error.value) and "corrupt" in str(error.value)
    assert not list(isolated_cache.glob("*.pt"))


def test_wrong_layout_zip(tmp_path: Path, make_zip, isolated_cache: Path) -> None:
    make_zip(tmp_path / "omniglot" / "images_background.zip", top="something_else")
    with pytest.raises(ValueError, match="expected layout"):
        load_omniglot("lake-background", tmp_path)


def test_unknown_split(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as error:
        load_omniglot("vinyals-training", tmp_path)
    assert "vinyals-training" in str(error.value)
    assert all(split in str(error.value) for split in SPLITS)


def test_zip_preferred_over_folder(tmp_path: Path, make_zip, isolated_cache: Path) -> None:
    make_zip(tmp_path / "omniglot" / "images_background.zip")
    (tmp_path / "omniglot" / "images_background").mkdir()  # e.g. a half-finished extraction
    assert load_omniglot("lake-background", tmp_path).num_classes == 4


def test_the_first_load_says_it_decodes_once(tmp_path: Path, isolated_cache: Path, make_zip, caplog) -> None:
    """The first run was silent for a minute and a half while the archives were decoded."""
    import logging

    make_zip(tmp_path / "root" / "omniglot" / "images_background.zip")
    caplog.set_level(logging.INFO, logger="metalab")
    load_omniglot("lake-background", tmp_path / "root")
    assert [r.getMessage() for r in caplog.records] == [
        f"preparing Omniglot images_background (once): decoding its drawings at 28x28 px into {isolated_cache}; "
        f"later runs read the cache"]
    caplog.clear()
    load_omniglot("lake-background", tmp_path / "root")
    assert caplog.records == []
