"""Input preprocessing modes (`data.normalization`): the one table of them.

Every mode is a per-channel affine map of RGB pixels, `(x / 255 - mean) / std`
(`pipeline.normalize`), so a mode is just the (mean, std) pair that `data.load` puts on the
`Dataset`. Training and evaluation (on-device and streamed), `--mode=predict`, the pictures and
the Keras weight import (`cnnjax.interop.keras.preprocess`) all read it from there.

- "dataset" (the default): the dataset's own per-channel statistics (`stats.py`).
- "inception": pixels to [-1, 1] (x / 127.5 - 1): Xception, Inception and MobileNet weights
  (Keras' "tf" mode).
- "caffe": minus the ImageNet mean pixel, no scaling: Keras' ResNet50/101/152 and VGG weights.
  Keras' "caffe" mode also reverses RGB to BGR; cnnjax models always read RGB instead, and
  `init.keras_weights` reverses the input channels of such weights' first convolution
  (`interop.keras.import_keras(..., rgb=True)`), which computes exactly the same thing.
- "imagenet": torchvision's ImageNet mean and std (what `resnet50_imagenet` trains with).
"""

import numpy as np

from cnnjax.data import stats
from cnnjax.errors import UserError, did_you_mean

# The ImageNet mean pixel of the Caffe models, RGB, in [0, 255] (Keras' imagenet_utils).
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)

# mode -> (mean, std) in [0, 1] pixel units; None: the dataset's own statistics.
MODES: dict[str, tuple[tuple[float, ...], tuple[float, ...]] | None] = {
    "dataset": None,
    "inception": ((0.5,), (0.5,)),  # Any number of channels.
    "caffe": (tuple(m / 255.0 for m in CAFFE_MEAN_RGB), (1.0 / 255.0,) * 3),
    "imagenet": stats.NORMALIZATION["imagenet2012"],
}


def check(mode: str) -> str:
    """`mode` if it is a known preprocessing mode, else a UserError naming the valid ones."""
    if mode not in MODES:
        raise UserError(
            f"Unknown data.normalization {mode!r}.{did_you_mean(mode, MODES)} "
            f"Choose one of {', '.join(MODES)}."
        )
    return mode


def mean_std(
    mode: str, channels: int, dataset_mean=None, dataset_std=None
) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std), float32 (channels,), in [0, 1] pixel units, for `pipeline.normalize`.

    dataset_mean/dataset_std: the dataset's statistics, used by mode "dataset".
    """
    table = MODES[check(mode)]
    if table is None:
        if dataset_mean is None or dataset_std is None:
            raise ValueError('data.normalization="dataset" needs the dataset\'s mean and std')
        return np.asarray(dataset_mean, np.float32), np.asarray(dataset_std, np.float32)
    mean, std = (np.asarray(v, np.float32) for v in table)
    if len(mean) == 1:
        return np.full(channels, mean[0], np.float32), np.full(channels, std[0], np.float32)
    if len(mean) != channels:
        raise UserError(
            f"data.normalization={mode!r} is for {len(mean)}-channel (RGB) images, and these "
            f"have {channels}; use data.normalization=dataset or inception."
        )
    return mean, std
