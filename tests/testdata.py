"""Small synthetic class data sets and image folders for the tests (importable as `testdata`)."""
from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from metalab.data.classes import ClassDataset
from metalab.data.store import split_list

SHARED_DATA = Path(os.environ.get("METALAB_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")


def make_class_dataset(classes: int = 12, items: int = 8, size: int = 28, channels: int = 1,
                       groups: int = 3, seed: int = 0) -> ClassDataset:
    """Classes of noisy copies of one random template each: learnable, tiny, deterministic."""
    generator = torch.Generator().manual_seed(seed)
    templates = torch.rand(classes, channels, size, size, generator=generator)
    noise = 0.3 * torch.rand(classes, items, channels, size, size, generator=generator)
    images = ((0.7 * templates.unsqueeze(1) + noise).clamp(0, 1) * 255).to(torch.uint8).flatten(0, 1)
    class_items = [list(range(c * items, (c + 1) * items)) for c in range(classes)]
    names = [f"group{c % groups}/class{c:02d}" for c in range(classes)]
    return ClassDataset(images, class_items, names, [f"group{c % groups}" for c in range(classes)], "synthetic")


def write_image_folder(root: Path, dataset: ClassDataset, rgb: bool = False) -> Path:
    """Write a ClassDataset as <root>/<class>/<i>.png (one sub-folder per class)."""
    for c, name in enumerate(dataset.class_names):
        folder = root / name.replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(dataset.items_in(c)):
            pixels = (dataset.get(c, [i])[0, 0].numpy() * 255).astype(np.uint8)
            image = Image.fromarray(pixels, mode="L")
            (image.convert("RGB") if rgb else image).save(folder / f"{i:03d}.png")
    return root


def damage_stored_tensor(path: Path, tensor: torch.Tensor, size: int = 8192, fill: bytes | None = None) -> None:
    """Overwrite ``size`` bytes in the middle of ``tensor``'s bytes as ``torch.save`` stored them in ``path`` (as a
    failing disk or copy would): with ``fill`` repeated, else with the complement of what was there."""
    data = bytearray(path.read_bytes())
    stored = tensor.contiguous().numpy().tobytes()
    start = data.find(stored)
    assert start > 0 and data.find(stored, start + 1) < 0, f"the tensor's bytes must appear once in {path}"
    size = min(size, len(stored))
    at = start + (len(stored) - size) // 2
    data[at:at + size] = fill * (size // len(fill)) if fill else bytes(255 - b for b in data[at:at + size])
    path.write_bytes(bytes(data))


def tiny_run(folders: dict[str, Path], run_dir: Path, validate: bool = True) -> Path:
    """A 4-step ProtoNet run (8 channels) on generated class folders (``train``, ``val``, ``test``, as
    :func:`write_image_folder` writes them); without validation it has no best.pt."""
    from metalab.config import compose
    from metalab.train.trainer import Trainer

    config = compose({
        "name": "tiny-protonet",
        "data": {"dataset": "folder", "train_split": str(folders["train"]), "val_split": str(folders["val"]),
                 "test_split": str(folders["test"]), "image_size": 28, "channels": 1},
        "task": {"ways": 5, "shots": 1, "queries": 2},
        "eval": {"ways": 5, "shots": 1, "queries": 3, "episodes": 10, "val_episodes": 5 if validate else 0},
        "learner": {"name": "protonet", "hidden": 8},
        "train": {"steps": 4, "val_every": 2, "ckpt_every": 2, "log_every": 1, "progress": False},
        "run": {"dir": str(run_dir), "tensorboard": False},
    })
    Trainer(config).fit()
    return run_dir


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    """A gzipped tar archive at ``path`` holding ``members`` ({name inside the archive: bytes})."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


CIFAR_PAIRS = [line.split("/") for split in ("train", "val", "test")
               for line in split_list("cifar100", "cifar-fs", f"{split}.txt")]
CIFAR_FINE = sorted(fine for _, fine in CIFAR_PAIRS)  # the release lists its names alphabetically
CIFAR_COARSE = sorted({coarse for coarse, _ in CIFAR_PAIRS})
CIFAR_COARSE_OF = {fine: coarse for coarse, fine in CIFAR_PAIRS}


def cifar100_release_files(per_class: dict[str, int]) -> dict[str, bytes]:
    """The pickles of ``cifar-100-python/``: ``train``/``test`` batches (images whose every byte is the fine
    label) and ``meta``."""
    files = {}
    for batch, count in per_class.items():
        labels = np.repeat(np.arange(100), count)
        files[batch] = pickle.dumps({"data": np.repeat(labels[:, None], 3072, 1).astype(np.uint8),
                                     "fine_labels": labels.tolist(),
                                     "coarse_labels": [CIFAR_COARSE.index(CIFAR_COARSE_OF[CIFAR_FINE[f]])
                                                       for f in labels],
                                     "filenames": [f"img{i}.png" for i in range(len(labels))]}, protocol=2)
    files["meta"] = pickle.dumps({"fine_label_names": CIFAR_FINE, "coarse_label_names": CIFAR_COARSE}, protocol=2)
    return files


def write_cifar100_release(path: Path, files: dict[str, bytes] | None = None) -> Path:
    """``cifar-100-python.tar.gz`` at ``path``: ``files`` or 3 images per class (2 in train, 1 in test)."""
    files = files or cifar100_release_files({"train": 2, "test": 1})
    return write_tar(path, {f"cifar-100-python/{name}": data for name, data in files.items()})
