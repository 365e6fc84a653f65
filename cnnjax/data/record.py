"""What a run was trained on: the facts of its data that a trained model depends on.

A model's outputs are indices into the class names it was trained with, and its inputs are
normalized with the statistics of its training split. Both used to be recomputed from the data
whenever a run was opened, so renaming a class folder made eval, predict and a resume silently
wrong. Training now records them once in the run (`data.json`, written by `cnnjax.workdir`), and
every later command reads them from there:

    record = data.record.of(dataset, data_config)      # a JSON-able dict
    dataset = data.record.matched(record, dataset)     # recorded classes and statistics, or
                                                       # a UserError naming what changed
    dataset = data.record.stand_in(record)             # predict/export: no data needed

The record holds the class names in order, mean/std, the input shape, the source and its
normalization mode, the split sizes and a cheap fingerprint: a sha256 of the labels and of up to
64 images of each split in memory, of the split sizes and class names for a streamed source
(reading its records would cost a pass over the data).
"""

import dataclasses
import hashlib

import numpy as np

from cnnjax import data as data_lib
from cnnjax.data import Dataset
from cnnjax.errors import UserError

FORMAT = 1
_SAMPLED_IMAGES = 64  # Per split, evenly spaced, in the fingerprint.
# Statistics closer than this are the same (they are float32 from the same pixels).
_STATS_TOLERANCE = 1e-4


def of(dataset: Dataset, data_config) -> dict:
    """The record of `dataset`, loaded from `data_config`."""
    return {
        "format": FORMAT,
        "source": dataset.name,
        "normalization": str(data_config.get("normalization", "dataset")),
        "class_names": [str(n) for n in dataset.class_names],
        "mask_class_names": [str(n) for n in dataset.mask_class_names],
        "mean": [float(x) for x in np.asarray(dataset.mean).ravel()],
        "std": [float(x) for x in np.asarray(dataset.std).ravel()],
        "image_shape": [int(d) for d in dataset.image_shape],
        "num_train": int(dataset.num_train),
        "num_test": int(dataset.num_test),
        "fingerprint": fingerprint(dataset),
    }


def fingerprint(dataset: Dataset) -> str:
    """A sha256 that changes when the data does (see the module docstring for what it reads)."""
    h = hashlib.sha256()
    h.update(repr((dataset.num_train, dataset.num_test, dataset.class_names)).encode())
    if dataset.in_memory:
        for images, labels in (
            (dataset.train_images, dataset.train_labels),
            (dataset.test_images, dataset.test_labels),
        ):
            h.update(np.ascontiguousarray(labels).tobytes())
            step = max(1, len(images) // _SAMPLED_IMAGES)
            h.update(np.ascontiguousarray(images[::step][:_SAMPLED_IMAGES]).tobytes())
    return h.hexdigest()[:16]


def differences(record: dict, dataset: Dataset) -> list[str]:
    """What makes `dataset` another dataset than the run learned: its classes (renamed, added,
    removed, reordered) and its normalization statistics. [] when it is the same."""
    out = []
    old, new = list(record["class_names"]), [str(n) for n in dataset.class_names]
    if old != new:
        removed = [n for n in old if n not in new]
        added = [n for n in new if n not in old]
        if removed and len(removed) == len(added):
            pairs = list(zip(removed, added, strict=True))
            out.append("classes renamed: " + ", ".join(f"{o!r} -> {n!r}" for o, n in pairs[:4]))
        else:
            if removed:
                out.append("classes removed: " + ", ".join(map(repr, removed[:4])))
            if added:
                out.append("classes added: " + ", ".join(map(repr, added[:4])))
            if not removed and not added:
                out.append("classes in another order")
    for name in ("mean", "std"):
        was = np.asarray(record[name], np.float32)
        now = np.asarray(getattr(dataset, name), np.float32).ravel()
        if was.shape != now.shape or not np.allclose(was, now, rtol=0, atol=_STATS_TOLERANCE):
            out.append(f"normalization {name} moved from {_short(was)} to {_short(now)}")
    return out


def _short(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in np.ravel(values)) + "]"


def matched(record: dict, dataset: Dataset, *, accept_changes: bool = False) -> Dataset:
    """`dataset` as the run knows it: the recorded normalization statistics and class names.

    A UserError names the differences (`differences`) unless `accept_changes`
    (`data.accept_changes`), which keeps today's class names (by position) and the recorded
    statistics. Other changes (sizes, contents) are one `note:` line."""
    diffs = differences(record, dataset)
    if diffs and not accept_changes:
        raise UserError(
            f"The data of this run changed since it was trained ({'; '.join(diffs)}) in "
            f"{dataset.name}: its checkpoints learned the recorded classes and statistics, so "
            "the results would be wrong. Restore the data as it was, or pass "
            "--config.data.accept_changes=true to use it as it is now (classes by position, "
            "the recorded normalization)."
        )
    if not diffs and record.get("fingerprint") != fingerprint(dataset):
        print(
            f"note: {dataset.name} is not the data this run was trained on "
            f"({record['num_train']:,} train / {record['num_test']:,} test images then, "
            f"{dataset.num_train:,} / {dataset.num_test:,} now); its classes and "
            "normalization are the same",
            flush=True,
        )
    names = dataset.class_names if accept_changes else tuple(record["class_names"])
    return dataclasses.replace(
        dataset,
        class_names=tuple(names),
        mean=np.asarray(record["mean"], np.float32),
        std=np.asarray(record["std"], np.float32),
    )


def stand_in(record: dict, target_keys=("label",)) -> Dataset:
    """A Dataset with the recorded facts and blank examples, as many as the recorded splits
    had (`data.blank`), for what needs a trained model but no data: predict, export.
    `target_keys`: the per-example targets the task's model building asks for."""
    return data_lib.blank(
        str(record["source"]),
        record["class_names"],
        record["image_shape"],
        record["mean"],
        record["std"],
        num_train=int(record["num_train"]),
        num_test=int(record["num_test"]),
        target_keys=target_keys,
        mask_class_names=record.get("mask_class_names", ()),
    )
