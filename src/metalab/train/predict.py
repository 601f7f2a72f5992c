"""Few-shot predictions on the user's own images (``metalab predict``): adapt a trained classifier to a support
folder (one sub-folder of images per class), classify query images, say how the images were converted to what the
learner reads, and write the predictions as CSV or JSON."""
from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch.distributions import Categorical

from metalab.algorithms.base import MetaLearner
from metalab.data.folders import conversion_of, image_paths, images_in, load_image_files, load_image_folder
from metalab.data.task import Task
from metalab.utils.io import atomic_write_text

#: the file types that ``--output`` writes, by suffix
OUTPUT_FORMATS = (".csv", ".json")


@dataclass
class ImagePredictions:
    """Each query's predicted class and its predictive probability, and what was done to the images."""

    #: one {"query": path, "class": name, "probability": p} per query image, in the order given
    rows: list[dict[str, Any]]
    #: how images were converted to the learner's input, in words -> number of images converted so
    conversions: Counter[str] = field(default_factory=Counter)


def invert_reason(config: DictConfig) -> str | None:
    """Why user images are inverted (``data.invert_user_images``), or None when they are not."""
    if not config.data.get("invert_user_images", False):
        return None
    return f"to match {config.data.dataset}'s light strokes on dark (data.invert_user_images)"


def predict_images(learner: MetaLearner, config: DictConfig, support: str | Path,
                   queries: Sequence[str | Path]) -> ImagePredictions:
    """Adapt ``learner`` to the class folders of ``support`` and classify the images that ``queries`` name (files, or
    folders searched recursively); every image is decoded before anything is predicted, so a bad one fails first."""
    channels, size = learner.input_shape[0], learner.input_shape[1]
    invert = bool(config.data.get("invert_user_images", False))
    classes = load_image_folder(support, image_size=size, channels=channels, invert=invert)
    if classes.num_classes < 2:
        raise ValueError(f"--support {support} holds one class ({classes.class_names[0]!r}): an episode needs at "
                         f"least two classes to tell apart, and with one every query would be it with probability 1; "
                         f"add a sub-folder of example images for each other class")
    head = config.learner.get("ways")  # a classifier head of fixed size (gradient-based learners)
    if isinstance(head, int) and classes.num_classes > head:
        raise ValueError(f"--support {support} holds {classes.num_classes} classes, but this learner's classifier head "
                         f"has {head} outputs: give at most {head} class folders, or use a learner that takes any "
                         f"number of classes (a metric-based one such as ProtoNet)")
    query_files = image_paths(queries)
    query_x = load_image_files(query_files, image_size=size, channels=channels, invert=invert).float() / 255.0
    support_x = torch.cat([classes.get(c, range(classes.items_in(c))) for c in range(classes.num_classes)])
    support_y = torch.cat([torch.full((classes.items_in(c),), c, dtype=torch.long) for c in range(classes.num_classes)])
    # the learner's predictive distribution (the softmax of a point-estimate learner's logits), as the evaluator's
    task = Task(support_x, support_y, query_x, torch.zeros(len(query_x), dtype=torch.long))
    distribution = learner.predictive_distribution(Task.stack([task]))
    if not isinstance(distribution, Categorical):
        raise ValueError("the learner gives no predictive distribution over classes")
    probabilities = distribution.probs[0].detach()
    predicted = probabilities.argmax(-1)
    rows = [{"query": str(query), "class": classes.class_names[int(k)], "probability": float(probabilities[i, k])}
            for i, (query, k) in enumerate(zip(query_files, predicted))]
    support_files = [path for name in classes.class_names for path in images_in(Path(support) / name)]
    words = (conversion_of(path, size, channels, invert_reason(config)) for path in [*support_files, *query_files])
    return ImagePredictions(rows, Counter(w for w in words if w is not None))


def check_output(path: str | Path) -> Path:
    """``--output``'s path, refused before anything is computed when its suffix names no format we write."""
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_FORMATS:
        raise ValueError(f"--output {path}: give a file name ending in {' or '.join(OUTPUT_FORMATS)} (the format "
                         f"follows the suffix)")
    if path.is_dir():
        raise ValueError(f"--output {path} is a folder; give a file name ending in {' or '.join(OUTPUT_FORMATS)}")
    return path


def write_predictions(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Write ``rows`` to ``path`` atomically: CSV (a header of the keys, list values joined by spaces) or JSON (a
    list of objects), by its suffix."""
    path = check_output(path)
    if path.suffix.lower() == ".json":
        atomic_write_text(path, json.dumps(rows, indent=1) + "\n")
        return
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else ["query", "class", "probability"])
    writer.writeheader()
    for row in rows:
        writer.writerow({key: " ".join(map(str, value)) if isinstance(value, list) else value
                         for key, value in row.items()})
    atomic_write_text(path, text.getvalue())
