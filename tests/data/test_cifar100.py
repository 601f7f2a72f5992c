"""CIFAR-FS and FC100 on a generated CIFAR-100 release in the official layout; its download from a local server."""
from __future__ import annotations

import hashlib
import pickle
import tarfile
from pathlib import Path

import pytest
import torch

from metalab.data.archives import DamagedArchiveError
from metalab.data.cifar100 import ARCHIVE, PUBLISHED_CLASSES, load_cifar_fs, load_fc100
from metalab.data.datasets import download_dataset, load_dataset
from metalab.data.store import ChecksumError, DataNotFoundError, split_list
from testdata import CIFAR_COARSE as COARSE
from testdata import CIFAR_COARSE_OF as COARSE_OF
from testdata import CIFAR_FINE as FINE
from testdata import cifar100_release_files as release_files
from testdata import write_cifar100_release as write_release


def test_the_packaged_splits_have_the_published_class_counts() -> None:
    for split, count in PUBLISHED_CLASSES["cifar-fs"].items():
        assert len(split_list("cifar100", "cifar-fs", f"{split}.txt")) == count
    assert len(FINE) == len(set(FINE)) == 100 and len(COARSE) == 20  # disjoint splits covering CIFAR-100
    superclasses = {s: split_list("cifar100", "fc100", f"{s}.txt") for s in ("train", "val", "test")}
    assert [len(v) for v in superclasses.values()] == [12, 4, 4]
    assert sorted(sum(superclasses.values(), [])) == COARSE
    for split, names in superclasses.items():  # 5 classes per superclass
        assert sum(COARSE_OF[f] in names for f in FINE) == PUBLISHED_CLASSES["fc100"][split]


@pytest.mark.usefixtures("isolated_cache")
def test_cifar_fs_and_fc100_from_the_archive(tmp_path: Path) -> None:
    write_release(tmp_path / "cifar100" / ARCHIVE)
    train = load_cifar_fs("train", tmp_path)
    assert train.num_classes == 64 and train.image_shape == (3, 32, 32) and train.name == "cifar-fs/train"
    assert all(train.items_in(c) == 3 for c in range(64))  # train and test batches together
    for c, name in enumerate(train.class_names):  # each image is its own class's
        assert (train.images[train.class_items[c]] == FINE.index(name)).all()
        assert train.groups is not None and train.groups[c] == COARSE_OF[name]
    test = load_fc100("test", tmp_path)
    assert test.num_classes == 20 and set(test.groups or []) == set(split_list("cifar100", "fc100", "test.txt"))
    assert not set(test.class_names) & set(load_fc100("train", tmp_path).class_names)
    small = load_dataset("cifar-fs", "val", root=tmp_path, image_size=16)
    assert small.image_shape == (3, 16, 16) and small.num_classes == 16
    assert small.images.dtype == torch.uint8 and (small.images[small.class_items[0]] ==
                                                  FINE.index(small.class_names[0])).all()


@pytest.mark.usefixtures("isolated_cache")
def test_the_extracted_folder_reads_the_same(tmp_path: Path) -> None:
    archive = write_release(tmp_path / "a" / "cifar100" / ARCHIVE)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "b" / "cifar100", filter="data")
    assert torch.equal(load_fc100("val", tmp_path / "a").images, load_fc100("val", tmp_path / "b").images)


@pytest.mark.usefixtures("isolated_cache")
def test_a_truncated_archive_is_a_clear_error(tmp_path: Path) -> None:
    archive = write_release(tmp_path / "cifar100" / ARCHIVE)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DamagedArchiveError, match="truncated or corrupt.*metalab data --download cifar100"):
        load_cifar_fs("train", tmp_path)


@pytest.mark.usefixtures("isolated_cache")
def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    class Exploit:
        def __reduce__(self):
            return (print, ("this must never run",))

    files = release_files({"train": 1, "test": 1})
    files["meta"] = pickle.dumps(Exploit())
    write_release(tmp_path / "cifar100" / ARCHIVE, files)
    with pytest.raises(DamagedArchiveError, match="refusing to load builtins.print"):
        load_cifar_fs("train", tmp_path)


def test_offline_the_error_names_the_file_and_the_command(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match=f"{tmp_path / 'cifar100' / ARCHIVE}.*metalab data --download cifar100"):
        load_fc100("train", tmp_path)
    with pytest.raises(ValueError, match="unknown split 'trainval'"):
        load_cifar_fs("trainval", tmp_path)


@pytest.mark.usefixtures("isolated_cache")
def test_download_from_a_server_then_load(server: tuple[str, Path], tmp_path: Path) -> None:
    base, served = server
    archive = write_release(served / ARCHIVE)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    root = tmp_path / "root"
    with pytest.raises(ChecksumError):
        download_dataset("cifar-fs", root, base_url=base, checksums={ARCHIVE: "0" * 32})
    assert not (root / "cifar100" / ARCHIVE).exists()
    [path] = download_dataset("fc100", root, base_url=base, checksums={ARCHIVE: md5})
    assert path == root / "cifar100" / ARCHIVE and path.read_bytes() == archive.read_bytes()
    assert load_cifar_fs("test", root).num_classes == 20
