"""What data.augment costs per training meta-batch: the time to draw one meta-batch of the MetaOptNet recipe's shape
(8 tasks of 5 ways x (15 + 6) images, 3x84x84) from generated class data, without and with the recipe's augmentation.

    python benchmarks/augment/augment_cost.py [--batches 5]

Prints one JSON line: seconds (wall and CPU) per meta-batch for each, and the threads torch used.
"""
from __future__ import annotations

import argparse
import json
import time
import warnings

import torch

from metalab.config import load_recipe
from metalab.data.augment import augmented
from metalab.data.classes import ClassDataset
from metalab.data.episodes import EpisodeSampler


def seconds_per_batch(source, batches: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for step in range(batches):
        source.batch(step * 8, 8)
    return (time.perf_counter() - wall) / batches, (time.process_time() - cpu) / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=5)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # the compatibility warning of a torchvision built for another torch
    config = load_recipe("miniimagenet-metaoptnet-5w5s")
    images = torch.randint(0, 256, (20 * 30, 3, 84, 84), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    data = ClassDataset(images, [range(c * 30, (c + 1) * 30) for c in range(20)], [f"c{c}" for c in range(20)])
    task = config.task
    plain = EpisodeSampler(data, task.ways, task.shots, task.queries, seed=0)
    with_augment = augmented(plain, config.data.augment, data.image_shape, seed=0)
    with_augment.batch(0, 1)  # the first call imports torchvision: not part of the cost per batch
    result = {"augment": list(config.data.augment), "images_per_batch": 8 * task.ways * (task.shots + task.queries),
              "threads": torch.get_num_threads()}
    for name, source in (("plain", plain), ("augmented", with_augment)):
        wall, cpu = seconds_per_batch(source, args.batches)
        result[name] = {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
