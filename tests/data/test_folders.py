"""Image folders (user data), query files, mini-ImageNet layout, and the load_dataset dispatcher."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from metalab.data.datasets import DATASETS, load_dataset
from metalab.data.folders import load_image_files, load_image_folder
from metalab.data.miniimagenet import load_miniimagenet, read_split_csv
from metalab.data.store import DataNotFoundError
from testdata import damage_stored_tensor

COLOURS = {"blue": (0, 0, 255), "red": (255, 0, 0), "green": (0, 200, 0)}


def _save(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 30), mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, colour)
    image.convert(mode).save(path)
    return path


@pytest.fixture
def rgb_folder(tmp_path: Path) -> Path:
    """red/ (3 images), blue/ (2), green/ (4) with mixed extensions, sizes and modes."""
    root = tmp_path / "pets"
    for i, ext in enumerate(["png", "JPG", "jpeg"]):
        _save(root / "red" / f"r{i}.{ext}", COLOURS["red"], size=(40 + i, 30))
    _save(root / "blue" / "b0.bmp", COLOURS["blue"])
    _save(root / "blue" / "b1.webp", COLOURS["blue"], size=(64, 64))
    for i in range(4):
        _save(root / "green" / f"g{i}.gif", COLOURS["green"], mode="P")
    (root / "green" / "notes.txt").write_text("not an image")
    (root / "README.md").write_text("ignored: files directly in the root are not classes")
    return root


def test_rgb_folder(rgb_folder: Path) -> None:
    data = load_image_folder(rgb_folder, image_size=16, channels=3)
    assert data.class_names == ["blue", "green", "red"]
    assert [data.items_in(c) for c in range(3)] == [2, 4, 3]
    assert data.images.shape == (9, 3, 16, 16) and data.images.dtype == torch.uint8
    assert data.name == "pets" and data.groups is None
    red = data.images[data.class_items[data.class_index("red")]]
    assert (red[:, 0] > 240).all() and (red[:, 2] < 15).all()
    blue = data.images[data.class_items[data.class_index("blue")]]
    assert (blue[:, 2] > 240).all() and (blue[:, 0] < 15).all()
    green = data.images[data.class_items[data.class_index("green")]]
    assert (green[:, 1] > 180).all() and (green[:, 0] < 15).all()


def test_grayscale_folder_and_invert(tmp_path: Path) -> None:
    for c in ("a", "b"):
        for i in range(2):
            image = Image.new("L", (50, 50), 255)  # white paper ...
            image.paste(0, (10, 10, 30, 40))  # ... dark stroke
            (tmp_path / "chars" / c).mkdir(parents=True, exist_ok=True)
            image.save(tmp_path / "chars" / c / f"{i}.png")
    plain = load_image_folder(tmp_path / "chars", image_size=25, channels=1, name="mine")
    inverted = load_image_folder(tmp_path / "chars", image_size=25, channels=1, invert=True)
    assert plain.images.shape == (4, 1, 25, 25) and plain.name == "mine"
    assert plain.images[0, 0, 0, 0] == 255 and inverted.images[0, 0, 0, 0] == 0
    assert inverted.images[0, 0, 10, 10] == 255
    assert torch.equal(inverted.images, 255 - plain.images)


def test_rgb_image_as_grayscale(rgb_folder: Path) -> None:
    data = load_image_folder(rgb_folder, image_size=8, channels=1)
    assert data.image_shape == (1, 8, 8)


def test_image_files(rgb_folder: Path) -> None:
    files = [rgb_folder / "red" / "r0.png", rgb_folder / "blue" / "b1.webp"]
    images = load_image_files(files, image_size=12, channels=3)
    assert images.shape == (2, 3, 12, 12) and images.dtype == torch.uint8
    assert images[0, 0].min() > 240 and images[1, 2].min() > 240
    assert load_image_files([str(files[0])], 12, 1, invert=True).shape == (1, 1, 12, 12)


def test_image_files_errors(rgb_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="nope.png"):
        load_image_files([rgb_folder / "red" / "r0.png", tmp_path / "nope.png"], 12, 3)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match="bad.jpg"):
        load_image_files([bad], 12, 3)
    with pytest.raises(ValueError, match="channels"):
        load_image_files([rgb_folder / "red" / "r0.png"], 12, 2)


def test_folder_errors(rgb_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "missing", 16, 3)
    flat = tmp_path / "flat"
    _save(flat / "x.png", COLOURS["red"])
    with pytest.raises(ValueError, match="no class sub-folders"):
        load_image_folder(flat, 16, 3)
    (rgb_folder / "empty").mkdir()
    with pytest.raises(ValueError) as error:
        load_image_folder(rgb_folder, 16, 3)
    assert str(rgb_folder / "empty") in str(error.value) and "remove the folder or add images" in str(error.value)


def test_folder_corrupt_image(rgb_folder: Path) -> None:
    bad = rgb_folder / "red" / "r9.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ValueError) as error:
        load_image_folder(rgb_folder, 16, 3)
    assert str(bad) in str(error.value) and "corrupt" in str(error.value)


@pytest.fixture
def mini_root(tmp_path: Path) -> tuple[Path, Path]:
    """(data root, split CSV): 3 classes x 5 generated JPEGs in the Ravi layout."""
    root = tmp_path / "root"
    rows = ["filename,label"]
    for label, colour in zip(["n01", "n02", "n03"], COLOURS.values(), strict=True):
        for i in range(5):
            filename = f"{label}{i:08d}.jpg"
            _save(root / "miniimagenet" / "images" / filename, colour, size=(120, 100))
            rows.append(f"{filename},{label}")
    split_file = tmp_path / "mini.csv"
    split_file.write_text("\n".join(rows) + "\n")
    return root, split_file


def test_miniimagenet_layout(mini_root: tuple[Path, Path], isolated_cache: Path) -> None:
    root, split_file = mini_root
    data = load_miniimagenet("train", root, image_size=20, split_file=split_file)
    assert data.class_names == ["n01", "n02", "n03"]
    assert data.images.shape == (15, 3, 20, 20) and data.images.dtype == torch.uint8
    assert [data.items_in(c) for c in range(3)] == [5, 5, 5]
    assert data.name == "miniimagenet/train"
    assert (data.images[data.class_items[0], 2] > 230).all()  # n01 is blue
    assert len(list(isolated_cache.glob("miniimagenet-train-20px-*.pt"))) == 1
    start = time.perf_counter()
    again = load_miniimagenet("train", root, image_size=20, split_file=split_file)
    assert time.perf_counter() - start < 1.0
    assert torch.equal(again.images, data.images) and again.class_names == data.class_names
    assert load_miniimagenet("train", root, split_file=split_file).image_shape == (3, 84, 84)


def test_a_damaged_miniimagenet_cache_is_rebuilt(mini_root: tuple[Path, Path], isolated_cache: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    root, split_file = mini_root
    first = load_miniimagenet("train", root, image_size=20, split_file=split_file)
    [cache] = isolated_cache.glob("miniimagenet-train-20px-*.pt")
    damage_stored_tensor(cache, first.images, size=1000)
    capsys.readouterr()
    again = load_miniimagenet("train", root, image_size=20, split_file=split_file)
    assert capsys.readouterr().err.startswith(f"metalab: rebuilding a cache file: {cache} is damaged")
    assert torch.equal(again.images, first.images)


def test_miniimagenet_missing_images(mini_root: tuple[Path, Path], isolated_cache: Path) -> None:
    root, split_file = mini_root
    images = root / "miniimagenet" / "images"
    for path in sorted(images.glob("n02*.jpg")):
        path.unlink()
    with pytest.raises(DataNotFoundError) as error:
        load_miniimagenet("train", root, split_file=split_file)
    message = str(error.value)
    assert "(5)" in message and "n0200000000.jpg" in message
    assert f"{images}/<filename>.jpg" in message
    with pytest.raises(DataNotFoundError, match=r"\(38400\)"):
        load_miniimagenet("train", root)  # the packaged Ravi list: none of those images exist
    assert not list(isolated_cache.glob("*.pt"))


def test_miniimagenet_corrupt_image(mini_root: tuple[Path, Path], isolated_cache: Path) -> None:
    root, split_file = mini_root
    victim = root / "miniimagenet" / "images" / "n0300000002.jpg"
    victim.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="n0300000002.jpg"):
        load_miniimagenet("train", root, split_file=split_file)
    assert not list(isolated_cache.glob("*.pt"))


def test_ravi_split_lists() -> None:
    sizes = {"train": (38400, 64), "val": (9600, 16), "test": (12000, 20)}
    labels = {}
    for split, (images, classes) in sizes.items():
        rows = read_split_csv(None, split)
        labels[split] = {label for _, label in rows}
        assert len(rows) == images and len(labels[split]) == classes
    assert not (labels["train"] & labels["val"]) and not (labels["train"] & labels["test"])
    with pytest.raises(ValueError, match="train, val, test"):
        read_split_csv(None, "training")


def test_load_dataset_dispatch(rgb_folder: Path, real_root: Path, isolated_cache: Path, tmp_path: Path) -> None:
    assert set(DATASETS) == {"omniglot", "miniimagenet", "tieredimagenet", "cub", "cifar-fs", "fc100", "folder"}
    folder = load_dataset("folder", str(rgb_folder), image_size=10)
    assert folder.images.shape == (9, 3, 10, 10)
    assert load_dataset("folder", str(rgb_folder), image_size=10, channels=1).image_shape == (1, 10, 10)
    omniglot = load_dataset("omniglot", "lake-background-small1", root=real_root)
    assert omniglot.image_shape == (1, 28, 28)
    with pytest.raises(DataNotFoundError, match="miniimagenet"):
        load_dataset("miniimagenet", "test", root=tmp_path)


def test_load_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as error:
        load_dataset("cifar", "train")
    assert all(name in str(error.value) for name in ("omniglot", "miniimagenet", "folder"))
    with pytest.raises(ValueError, match="1 channel"):
        load_dataset("omniglot", "vinyals-train", root=tmp_path, channels=3)
    with pytest.raises(ValueError, match="vinyals-train"):
        load_dataset("omniglot", "train", root=tmp_path)
