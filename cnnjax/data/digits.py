"""The embedded `digits` dataset: 1,797 real 8x8 handwritten digits, shipped in the package.

See DIGITS.md next to this file for the source and licence.
"""

import importlib.resources

import numpy as np

CLASS_NAMES = tuple(str(d) for d in range(10))
TEST_FRACTION = 0.2
SPLIT_SEED = 20  # Fixed forever: changing it changes every published quickstart number.


def _load_raw() -> tuple[np.ndarray, np.ndarray]:
    with importlib.resources.files("cnnjax.data").joinpath("digits.npz").open("rb") as f:
        npz = np.load(f)
        return npz["images"], npz["labels"]


def split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A stratified, seeded train/test split: TEST_FRACTION of every class goes to test."""
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(idx) * TEST_FRACTION))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load() -> dict[str, np.ndarray]:
    """Returns uint8 images (N, 8, 8, 1) scaled to 0..255 and int32 labels, split train/test."""
    images, labels = _load_raw()
    # Counts 0..16 -> 0..255, so every source hands uint8 pixels to the same normalization.
    images = np.round(images.astype(np.float32) * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = labels.astype(np.int32)
    train, test = split_indices(labels)
    return {
        "train_images": images[train],
        "train_labels": labels[train],
        "test_images": images[test],
        "test_labels": labels[test],
    }
