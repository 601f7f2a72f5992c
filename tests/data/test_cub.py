"""CUB-200-2011 on a generated release in the official layout: the 100/50/50 split, archive or folder, errors."""
from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from metalab.data.archives import DamagedArchiveError
from metalab.data.cub import ARCHIVE, PUBLISHED_CLASSES, load_cub
from metalab.data.datasets import download_dataset
from metalab.data.store import DataNotFoundError, split_list
from testdata import write_tar

SPECIES = sorted(name for split in ("train", "val", "test") for name in split_list("cub", f"{split}.txt"))


def jpeg(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 14), colour).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def write_release(path: Path, per_class: int = 2, species: list[str] = SPECIES) -> Path:
    """``CUB_200_2011.tgz`` in the official layout: the index files and ``images/<NNN.Species>/<file>.jpg``; the
    red channel of each image is its class number."""
    members: dict[str, bytes] = {}
    lines: dict[str, list[str]] = {"classes.txt": [], "images.txt": [], "image_class_labels.txt": [],
                                   "train_test_split.txt": []}
    serial = 0
    for name in species:
        number = int(name.split(".")[0])
        lines["classes.txt"].append(f"{number} {name}")
        for k in range(per_class):
            serial += 1
            relative = f"{name}/{name.split('.', 1)[1]}_{k:04d}.jpg"
            members[f"images/{relative}"] = jpeg((number, 40, 200))
            lines["images.txt"].append(f"{serial} {relative}")
            lines["image_class_labels.txt"].append(f"{serial} {number}")
            lines["train_test_split.txt"].append(f"{serial} {k % 2}")
    members.update({file: ("\n".join(rows) + "\n").encode() for file, rows in lines.items()})
    return write_tar(path, {f"CUB_200_2011/{member}": data for member, data in members.items()})


def test_the_packaged_split_is_the_published_one() -> None:
    splits = {s: split_list("cub", f"{s}.txt") for s in ("train", "val", "test")}
    assert {s: len(v) for s, v in splits.items()} == PUBLISHED_CLASSES
    assert len(SPECIES) == len(set(SPECIES)) == 200
    numbers = {s: [int(name[:3]) for name in v] for s, v in splits.items()}  # Chen et al.: by index modulo 4
    assert numbers["train"] == list(range(1, 201, 2))
    assert numbers["val"] == list(range(2, 201, 4)) and numbers["test"] == list(range(4, 201, 4))


@pytest.mark.usefixtures("isolated_cache")
def test_load_from_the_archive_and_the_folder(tmp_path: Path) -> None:
    archive = write_release(tmp_path / "a" / "cub" / ARCHIVE)
    val = load_cub("val", tmp_path / "a")
    assert val.num_classes == 50 and val.image_shape == (3, 84, 84) and val.name == "cub/val"
    assert val.class_names == split_list("cub", "val.txt")
    for c, name in enumerate(val.class_names):
        assert val.items_in(c) == 2
        red = val.images[val.class_items[c], 0].double().mean()
        assert abs(red - int(name[:3])) < 4  # JPEG's rounding
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "b" / "cub", filter="data")
    folder = load_cub("val", tmp_path / "b", image_size=32)
    assert folder.image_shape == (3, 32, 32) and folder.class_names == val.class_names
    assert torch.equal(load_cub("val", tmp_path / "b").images, val.images)


@pytest.mark.usefixtures("isolated_cache")
def test_a_release_without_a_split_class_or_cut_short_is_refused(tmp_path: Path) -> None:
    write_release(tmp_path / "cub" / ARCHIVE, species=SPECIES[:150])
    with pytest.raises(DamagedArchiveError, match=r"no images of 13 classes of the split \(152.Blue_headed_Vireo"):
        load_cub("test", tmp_path)
    archive = write_release(tmp_path / "cut" / "cub" / ARCHIVE)
    archive.write_bytes(archive.read_bytes()[:5000])
    with pytest.raises(DamagedArchiveError, match="truncated or corrupt.*metalab data --download cub"):
        load_cub("train", tmp_path / "cut")


@pytest.mark.usefixtures("isolated_cache")
def test_offline_error_and_download(server: tuple[str, Path], tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="CUB_200_2011.tgz.*metalab data --download cub"):
        load_cub("train", tmp_path)
    base, served = server
    archive = write_release(served / ARCHIVE, per_class=1)
    [path] = download_dataset("cub", tmp_path, base_url=base,
                              checksums={ARCHIVE: hashlib.md5(archive.read_bytes()).hexdigest()})
    assert path == tmp_path / "cub" / ARCHIVE and load_cub("train", tmp_path).num_classes == 100
