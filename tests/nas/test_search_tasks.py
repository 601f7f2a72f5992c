"""The supervised tasks of a search: stratified splits of the digits and of Omniglot background alphabets."""
from __future__ import annotations

import pytest
import torch

from metalab.nas.tasks import TaskOptions, digits_task, load_task, stratified_split


def test_stratified_split_keeps_every_class_in_every_part():
    y = torch.arange(3).repeat_interleave(20)
    x = torch.arange(60).float().view(60, 1, 1, 1)
    train, val, test = stratified_split(x, y, test_fraction=0.25, seed=0)
    for part, size in ((train, 8), (val, 7), (test, 5)):
        assert torch.equal(torch.bincount(part[1], minlength=3), torch.full((3,), size))
    seen = torch.cat([train[0], val[0], test[0]]).flatten().sort().values
    assert torch.equal(seen, x.flatten())  # a partition: nothing lost, nothing twice


def test_digits_subset_is_relabelled_in_the_order_given():
    task = digits_task(TaskOptions(classes=[7, 3]))
    assert task.name == "digits-73" and task.class_names == ["7", "3"] and task.input_shape == (1, 8, 8)
    assert set(task.train[1].tolist()) == {0, 1} and float(task.train[0].max()) <= 1.0
    with pytest.raises(ValueError, match="task.classes"):
        digits_task(TaskOptions(classes=[3, 3]))


def test_omniglot_alphabets_are_classification_tasks(tmp_path):
    """On a small archive in the official layout: 2 alphabets of 3 characters, 8 drawings each."""
    import io
    import zipfile

    from PIL import Image

    archive = tmp_path / "omniglot" / "images_background.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zipped:
        for a, alphabet in enumerate(("Alpha", "Beta")):
            for c in range(3):
                for d in range(8):
                    buffer = io.BytesIO()
                    Image.new("L", (105, 105), 255 - 30 * c - 3 * d).convert("1").save(buffer, format="PNG")
                    zipped.writestr(f"images_background/{alphabet}/character{c + 1:02d}/{a * 3 + c:04d}_{d:02d}.png",
                                    buffer.getvalue())
    task = load_task(TaskOptions(dataset="omniglot-alphabets", alphabets=["Beta"], image_size=14), tmp_path)
    assert task.name == "omniglot-Beta" and task.classes == 3 and task.input_shape == (1, 14, 14)
    assert (len(task.train[1]), len(task.val[1]), len(task.test[1])) == (9, 9, 6)  # 3 / 3 / 2 drawings per class
    assert load_task(TaskOptions(dataset="omniglot-alphabets", alphabet_count=2, image_size=14), tmp_path).classes == 6
    with pytest.raises(ValueError, match="task.alphabets"):
        load_task(TaskOptions(dataset="omniglot-alphabets", alphabets=["Klingon"], image_size=14), tmp_path)
