"""tiered-ImageNet on a generated split in the authors' release layout (PNG and label pickles)."""
from __future__ import annotations

import csv
import io
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metalab.data.archives import DamagedArchiveError
from metalab.data.datasets import describe_data, download_dataset
from metalab.data.store import DataNotFoundError, split_list
from metalab.data.tieredimagenet import PUBLISHED, class_categories, load_tieredimagenet, split_files


def png(value: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.new("RGB", (84, 84), (value, 0, 255 - value)).save(buffer, format="PNG")
    return np.frombuffer(buffer.getvalue(), dtype=np.uint8)


def write_split(root: Path, split: str, per_class: int = 2, drop: int = 0) -> None:
    """``<split>_images_png.pkl`` (PNG bytes as uint8 arrays) and ``<split>_labels.pkl`` as the authors wrote
    them; the classes listed in a shuffled order, the red value of an image is its class's position in the
    packaged list (mod 256)."""
    classes = list(class_categories(split))[drop:]
    order = list(reversed(classes))
    specific = np.repeat(np.arange(len(order)), per_class)
    images = [png(list(class_categories(split)).index(order[k]) % 256) for k in specific]
    images_file, labels_file = split_files(root, split)
    images_file.parent.mkdir(parents=True, exist_ok=True)
    images_file.write_bytes(pickle.dumps(images, protocol=2))
    labels_file.write_bytes(pickle.dumps({"label_specific": specific, "label_general": specific * 0,
                                          "label_specific_str": order, "label_general_str": ["n0"]}, protocol=2))


def test_the_packaged_splits_have_the_published_counts() -> None:
    seen: set[str] = set()
    for split, (classes, categories) in PUBLISHED.items():
        rows = list(csv.reader(split_list("tieredimagenet", "ren", f"{split}.csv")))
        assert len(rows) == classes and len({category for _, category in rows}) == categories
        assert not seen & {synset for synset, _ in rows}
        seen |= {synset for synset, _ in rows}
    assert len(seen) == 608


@pytest.mark.usefixtures("isolated_cache")
def test_load_a_split_grouped_by_category(tmp_path: Path) -> None:
    write_split(tmp_path, "val")
    val = load_tieredimagenet("val", tmp_path, image_size=20)
    categories = class_categories("val")
    assert val.num_classes == 97 and val.class_names == list(categories) and val.image_shape == (3, 20, 20)
    assert val.groups == [categories[c] for c in val.class_names] and len(val.group_classes()) == 6
    for c in (0, 50, 96):
        assert val.items_in(c) == 2 and (val.images[val.class_items[c], 0].int() - c).abs().max() <= 1
    assert "val   (Ren split, packaged: 97 classes in 6 categories): found" in describe_data(tmp_path)


@pytest.mark.usefixtures("isolated_cache")
def test_a_release_that_does_not_match_the_split_is_refused(tmp_path: Path) -> None:
    write_split(tmp_path, "val", drop=1)
    with pytest.raises(DamagedArchiveError, match="does not hold the classes of the split list"):
        load_tieredimagenet("val", tmp_path)
    write_split(tmp_path / "other", "val")
    split_files(tmp_path / "other", "val")[0].write_bytes(b"\x80\x02]q\x00(")  # a pickle cut short
    with pytest.raises(DamagedArchiveError, match="truncated, corrupt or not the official file"):
        load_tieredimagenet("val", tmp_path / "other")


def test_offline_the_error_names_the_files_and_where_to_place_them(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match=r"test_images_png\.pkl.*tiered-imagenet\.tar"):
        load_tieredimagenet("test", tmp_path)
    with pytest.raises(ValueError, match="cannot be downloaded automatically"):
        download_dataset("tieredimagenet", tmp_path)
