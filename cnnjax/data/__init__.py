"""Datasets: every source hands over uint8 NHWC images and int32 labels.

`load(config.data)` returns an in-memory `Dataset`; `cnnjax.data.pipeline` uploads it to the
devices and produces batches inside jitted code.
"""

import dataclasses
from collections.abc import Callable

import numpy as np

from cnnjax.data import digits, stats
from cnnjax.errors import UserError, did_you_mean


@dataclasses.dataclass(frozen=True)
class Dataset:
    """An image classification dataset, in memory or streamed.

    In memory: train_images/test_images uint8 (N, H, W, C), train_labels/test_labels int32 (N,).
    Streamed: train_source/test_source give random access to records {"image", "label"}
    (decoded or encoded images) and `image_shape` is the shape the transforms produce.
    mean/std: float32 (C,), statistics of pixels scaled to [0, 1].
    """

    name: str
    class_names: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    train_images: np.ndarray | None = None
    train_labels: np.ndarray | None = None
    test_images: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    train_source: object = None
    test_source: object = None
    stream_image_shape: tuple[int, int, int] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_memory(self) -> bool:
        return self.train_images is not None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        if self.in_memory:
            return tuple(self.train_images.shape[1:])
        return tuple(self.stream_image_shape)

    @property
    def num_train(self) -> int:
        return len(self.train_labels) if self.in_memory else len(self.train_source)

    @property
    def num_test(self) -> int:
        return len(self.test_labels) if self.in_memory else len(self.test_source)


def _digits(data_config) -> dict:
    del data_config
    return dict(digits.load(), class_names=digits.CLASS_NAMES)


# Embedded sources by name. TFDS names, `folder:` paths and the other embedded sets arrive with
# the data issue; the launcher validates names against this table.
SOURCES: dict[str, Callable[..., dict]] = {
    "digits": _digits,
}


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of uint8 (N, H, W, C) images to (N, size, size, C), done once on load."""
    import jax  # Local: keeps `import cnnjax.data` light for tools that only list names.

    if images.shape[1:3] == (size, size):
        return images
    out = []
    for chunk in np.array_split(images, max(1, len(images) // 4096)):
        x = jax.image.resize(
            chunk.astype(np.float32),
            (len(chunk), size, size, chunk.shape[-1]),
            method="linear",
            antialias=True,
        )
        out.append(np.asarray(jax.numpy.clip(jax.numpy.round(x), 0, 255)).astype(np.uint8))
    return np.concatenate(out)


def load(data_config) -> Dataset:
    """Loads `data_config.name` into memory, resized to `data_config.image_size` when > 0."""
    name = data_config.name
    if name not in SOURCES:
        raise UserError(
            f"Unknown dataset {name!r}.{did_you_mean(name, SOURCES)} "
            f"Available here: {', '.join(sorted(SOURCES))}."
        )
    raw = SOURCES[name](data_config)
    train_images, test_images = raw["train_images"], raw["test_images"]
    size = int(data_config.get("image_size", 0) or 0)
    if size > 0:
        train_images, test_images = resize(train_images, size), resize(test_images, size)
    mean, std = stats.normalization(name, train_images)
    return Dataset(
        name=name,
        train_images=train_images,
        train_labels=raw["train_labels"].astype(np.int32),
        test_images=test_images,
        test_labels=raw["test_labels"].astype(np.int32),
        class_names=tuple(raw["class_names"]),
        mean=mean,
        std=std,
    )
