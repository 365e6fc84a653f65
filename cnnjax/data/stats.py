"""Per-channel normalization statistics, one table for every dataset (pixels scaled to [0, 1])."""

import numpy as np

# name -> (mean, std) per channel. Datasets not listed are normalized with statistics computed
# from their own training split when it is loaded into memory.
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    # Computed from the embedded digits' training split at 8x8 (cnnjax.data.digits).
    "digits": ((0.3050,), (0.3758,)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet2012": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def normalization(name: str, train_images: np.ndarray | None = None):
    """(mean, std) as float32 arrays of shape (C,) for dataset `name`.

    train_images: uint8 (N, H, W, C), used only when `name` is not in the table.
    """
    if name in NORMALIZATION:
        mean, std = NORMALIZATION[name]
        return np.asarray(mean, np.float32), np.asarray(std, np.float32)
    if train_images is None:
        raise ValueError(f"No normalization statistics for {name!r} and no images to compute them.")
    # Two passes in float64 over a subsample keep this cheap and exact enough for big sets.
    sample = train_images[:: max(1, len(train_images) // 10_000)].astype(np.float64) / 255.0
    mean = sample.mean(axis=(0, 1, 2))
    std = sample.std(axis=(0, 1, 2))
    return mean.astype(np.float32), np.maximum(std, 1e-3).astype(np.float32)
