"""`synthetic`: uniform random images and labels of any shape, for benchmarks and smoke tests.

Nothing to learn here (labels are independent of pixels): use it to time input and compute,
never to judge accuracy.
"""

import numpy as np

NUM_TRAIN, NUM_TEST = 1024, 256


def load_synthetic(
    *,
    num_train: int = NUM_TRAIN,
    num_test: int = NUM_TEST,
    image_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    seed: int = 0,
) -> dict:
    """Random data in the source format, the same for the same arguments.

    Returns train_images uint8 (num_train, *image_shape), test_images uint8
    (num_test, *image_shape), train_labels/test_labels int32 in [0, num_classes), and
    class_names ("class_0", ...).
    """
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise ValueError(f"image_shape must be (H, W, C) with positive sizes, got {image_shape}.")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
    train_rng, test_rng = (np.random.default_rng([seed, split]) for split in (0, 1))
    out = {"class_names": tuple(f"class_{i}" for i in range(num_classes))}
    for split, n, rng in (("train", num_train, train_rng), ("test", num_test, test_rng)):
        out[f"{split}_images"] = rng.integers(0, 256, (n, *image_shape), dtype=np.uint8)
        out[f"{split}_labels"] = rng.integers(0, num_classes, n, dtype=np.int32)
    return out


def from_config(data_config) -> dict:
    """The `synthetic` source. data_config keys: num_train, num_test (0: the defaults above),
    image_size (32 if 0), synthetic.channels (3), synthetic.num_classes (10), seed (0)."""
    size = int(data_config.get("image_size", 0) or 0) or 32
    own = data_config.get("synthetic") or {}
    return load_synthetic(
        num_train=int(data_config.get("num_train", 0) or NUM_TRAIN),
        num_test=int(data_config.get("num_test", 0) or NUM_TEST),
        image_shape=(size, size, int(own.get("channels", 3))),
        num_classes=int(own.get("num_classes", 10)),
        seed=int(data_config.get("seed", 0)),
    )
