"""Heterogeneous task sets and task streams: seeded, ordered, each task's family reported correctly (checked
against the function it draws), and the family never in the Task a learner gets unless the recipe reveals it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from metalab.config import load_recipe
from metalab.data.classes import ClassDataset
from metalab.data.image_families import MixedImageTasks, gaussian_blur, load_digits_dataset
from metalab.data.mixtures import MixedRegressionTasks
from metalab.data.sources import task_source
from metalab.data.streams import ROTATIONS, RainbowDigits, TaskStream


def polynomial_degree(task) -> int:
    """The least degree (<= 3) that fits the task's points exactly, or 4 when none does (the sinusoid)."""
    x = torch.cat([task.support_x, task.query_x])[:, 0].double().numpy()
    y = torch.cat([task.support_y, task.query_y])[:, 0].double().numpy()
    for degree in range(4):
        residual = y - np.polyval(np.polyfit(x, y, degree), x)
        if np.abs(residual).max() < 1e-4 * max(1.0, np.abs(y).max()):
            return degree
    return 4


def test_each_regression_task_comes_from_the_family_its_group_names():
    tasks = MixedRegressionTasks("train", shots=10, queries=10, seed=3)
    expected_degree = {"line": 1, "quadratic": 2, "cubic": 3, "sinusoid": 4}
    groups = tasks.groups(0, 40)
    assert set(groups.tolist()) == {0, 1, 2, 3}  # all four families occur
    for index in range(40):
        name = tasks.names[int(groups[index])]
        # a drawn coefficient is never exactly 0, so the degree is the family's (the sinusoid fits no cubic)
        assert polynomial_degree(tasks.task(index)) == expected_degree[name], (index, name)


def test_mixtures_are_seeded_and_split_salted_and_follow_the_mixing_weights():
    a, b = MixedRegressionTasks("train", 5, 5, seed=0), MixedRegressionTasks("train", 5, 5, seed=0)
    assert torch.equal(a.batch(0, 6).support_y, b.batch(0, 6).support_y) and torch.equal(a.groups(0, 6), b.groups(0, 6))
    assert not torch.equal(a.batch(0, 6).support_y, MixedRegressionTasks("test", 5, 5, seed=0).batch(0, 6).support_y)
    only = MixedRegressionTasks("train", 5, 5, families={"line": 0.0, "cubic": 1.0})
    assert set(only.groups(0, 30).tolist()) == {1} and only.names == ["line", "cubic"]
    skewed = MixedRegressionTasks("train", 5, 5, families={"sinusoid": 3.0, "line": 1.0})
    share = skewed.groups(0, 2000).eq(0).double().mean().item()
    assert abs(share - 0.75) < 0.04  # binomial sd ~ 0.01
    with pytest.raises(ValueError, match="unknown families"):
        MixedRegressionTasks("train", 5, 5, families={"circle": 1.0})


def test_the_family_reaches_the_learner_only_when_the_recipe_reveals_it():
    config = load_recipe("hetero-regression-maml-5shot")
    hidden = task_source(config, "train", 1, 5, 5, seed=0)
    batch = hidden.batch(0, 4)
    assert batch.group is None and batch[0].group is None
    shown = task_source(load_recipe("hetero-regression-maml-5shot", ["data.reveal_groups=true"]), "train", 1, 5, 5,
                        seed=0)
    assert torch.equal(shown.batch(0, 4).group, hidden.groups(0, 4))
    # the evaluation set's side table is in the order of its batches
    fixed = hidden.fixed(7)
    assert torch.equal(fixed.groups(), hidden.groups(0, 7)) and sum(len(b) for b in fixed.batches(3)) == 7


def fake_omniglot(classes: int = 6, items: int = 4, size: int = 12) -> ClassDataset:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (classes * items, 1, size, size), generator=generator, dtype=torch.uint8)
    return ClassDataset(images, [range(c * items, (c + 1) * items) for c in range(classes)],
                        [f"c{c}" for c in range(classes)])


def test_image_families_transform_their_omniglot_episode_and_digits_are_resized():
    omniglot = fake_omniglot()
    families = {"plain": 1.0, "invert": 1.0, "blur": 1.0, "noise": 1.0, "digits": 1.0}
    tasks = MixedImageTasks(omniglot, "train", ways=3, shots=1, queries=2, seed=0, families=families)
    plain = MixedImageTasks(omniglot, "train", ways=3, shots=1, queries=2, seed=0, families={"plain": 1.0})
    for index in range(30):
        task, name = tasks.task(index), tasks.names[tasks.group(index)]
        assert task.support_x.shape == (3, 1, 12, 12) and task.group is None
        # the same episode draw without the transform: the plain family with the same generator
        rng = tasks._rng(index)
        rng.choice(5, p=tasks.weights)
        if name == "digits":
            assert task.support_x.max() <= 1.0 and tasks.samplers["digits"].dataset.num_classes == 10
            continue
        source = plain.family_task(0, rng, index)
        expected = {"plain": source.support_x, "invert": 1 - source.support_x,
                    "blur": gaussian_blur(source.support_x)}.get(name)
        if expected is not None:
            assert torch.allclose(task.support_x, expected), name
        else:  # noise: the same episode plus clipped noise of the stated size
            assert 0.1 < (task.support_x - source.support_x).std() < 0.35


def test_blur_is_a_normalised_gaussian_and_digit_splits_partition_the_images():
    delta = torch.zeros(1, 1, 9, 9)
    delta[0, 0, 4, 4] = 1.0
    kernel = gaussian_blur(delta)[0, 0, 2:7, 2:7]
    assert torch.isclose(kernel.sum(), torch.tensor(1.0)) and kernel[2, 2] == kernel.max()
    assert torch.isclose(kernel[2, 3] / kernel[2, 2], torch.exp(torch.tensor(-0.5)))  # sigma = 1 pixel
    sizes = [len(load_digits_dataset(split, 8).images) for split in ("train", "val", "test")]
    assert sum(sizes) == 1797 and sizes[0] > sizes[1] > 0


def test_streams_are_ordered_by_stage_and_seeded():
    families = ["sinusoid", "line", "cubic"]
    stream = TaskStream([MixedRegressionTasks("train", 10, 5, families={f: 1.0}) for f in families], 4, families)
    assert [stream.stage(t) for t in range(len(stream))] == [0] * 4 + [1] * 4 + [2] * 4
    degrees = [polynomial_degree(task) for task in stream]
    assert degrees == [4] * 4 + [1] * 4 + [3] * 4
    rainbow = RainbowDigits(shots=2, queries=1, seed=1, image_size=8)
    assert len(rainbow) == 56 and [rainbow.stage(t) for t in (0, 13, 14, 55)] == [0, 0, 1, 3]
    assert [rainbow.transforms[t][2] for t in range(0, 56, 14)] == list(ROTATIONS)
    assert rainbow.transforms == RainbowDigits(shots=2, queries=1, seed=1, image_size=8).transforms
    assert rainbow.transforms != RainbowDigits(shots=2, queries=1, seed=2, image_size=8).transforms
    task = rainbow.task(3)
    assert task.support_x.shape == (20, 3, 8, 8) and sorted(set(task.support_y.tolist())) == list(range(10))


def test_recipes_build_the_heterogeneous_image_set_with_their_families():
    # an override merges into the recipe's weights: a family is left out by its weight 0
    config = load_recipe("hetero-omniglot-hsml-5w1s", ["data.families={blur: 0, invert: 0, noise: 0, digits: 3.0}"])
    source = task_source(config, "vinyals-train", 3, 1, 2, seed=0, dataset=fake_omniglot())
    assert isinstance(source, MixedImageTasks) and source.names == ["plain", "blur", "invert", "noise", "digits"]
    assert np.allclose(source.weights, [0.25, 0, 0, 0, 0.75]) and set(source.samplers) == {"plain", "digits"}
    assert set(source.groups(0, 40).tolist()) == {0, 4} and source.task(0).group is None
    with pytest.raises(ValueError, match="so are the heterogeneous task sets"):
        from metalab.data.sources import evaluation_episodes

        evaluation_episodes(config, manifest="episodes.json")
