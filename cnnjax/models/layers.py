"""Layers shared by several model families: separable convolution, torch-style pooling, LRN.

Flax has plain and grouped convolutions and window pooling; these are the pieces the classic
architectures need on top: Keras' `SeparableConv2D`, PyTorch's adaptive average pooling and
`ceil_mode` max-pooling, and AlexNet's local response normalization.
"""

import functools
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

# Keras' default initializers (Conv2D, Dense, SeparableConv2D): glorot-uniform kernels, zero bias.
KERAS_KERNEL_INIT = nn.initializers.xavier_uniform()
# torchvision's ResNet/VGG convolutions: kaiming-normal, fan-out, ReLU gain.
TORCH_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def batch_norm(train: bool, momentum: float, epsilon: float, dtype=jnp.float32):
    """`nn.BatchNorm` for a model called with `train`: batch statistics (and their running
    averages updated with `momentum`) in training, the running averages otherwise. Keras
    conventions are momentum 0.99, epsilon 1e-3; torchvision's are 0.9 (its 0.1), 1e-5."""
    return functools.partial(
        nn.BatchNorm,
        use_running_average=not train,
        momentum=momentum,
        epsilon=epsilon,
        dtype=dtype,
    )


def conv_no_bias(kernel_init, dtype=jnp.float32):
    """`nn.Conv` without a bias (a BatchNorm follows and has its own offset)."""
    return functools.partial(nn.Conv, use_bias=False, kernel_init=kernel_init, dtype=dtype)


class SeparableConv(nn.Module):
    """Keras `SeparableConv2D`: a depthwise k×k convolution, then a pointwise 1×1 convolution.

    The depthwise kernel has no bias; the pointwise one has a bias when `use_bias`. Parameters:
    `depthwise/kernel` (k, k, 1, C·depth_multiplier) and `pointwise/kernel` (1, 1,
    C·depth_multiplier, features) plus `pointwise/bias`. A Keras `depthwise_kernel` (k, k, C, m)
    maps onto `depthwise/kernel` by a plain reshape to (k, k, 1, C·m) (output channel c·m + j).
    """

    features: int
    kernel_size: Sequence[int] = (3, 3)
    strides: Sequence[int] = (1, 1)
    padding: Any = "SAME"
    depth_multiplier: int = 1
    use_bias: bool = True
    kernel_init: Any = KERAS_KERNEL_INIT
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        """x: (N, H, W, C) -> (N, H', W', features)."""
        in_features = x.shape[-1]
        x = nn.Conv(
            in_features * self.depth_multiplier,
            tuple(self.kernel_size),
            strides=tuple(self.strides),
            padding=self.padding,
            feature_group_count=in_features,
            use_bias=False,
            kernel_init=self.kernel_init,
            dtype=self.dtype,
            name="depthwise",
        )(x)
        return nn.Conv(
            self.features,
            (1, 1),
            use_bias=self.use_bias,
            kernel_init=self.kernel_init,
            dtype=self.dtype,
            name="pointwise",
        )(x)


def adaptive_avg_pool(x, output_size: tuple[int, int]):
    """PyTorch's `AdaptiveAvgPool2d`: x (N, H, W, C) -> (N, oh, ow, C).

    Bin i along an axis of length n covers [floor(i·n/o), ceil((i+1)·n/o)). When the input is
    already (oh, ow) this is the identity; a smaller input has its pixels repeated.
    """
    oh, ow = output_size
    h, w = x.shape[1], x.shape[2]
    if (h, w) == (oh, ow):
        return x
    if h % oh == 0 and w % ow == 0:
        window = (h // oh, w // ow)
        return nn.avg_pool(x, window, strides=window)

    def bins(n, o):
        return [(math.floor(i * n / o), math.ceil((i + 1) * n / o)) for i in range(o)]

    rows = []
    for r0, r1 in bins(h, oh):
        cols = [x[:, r0:r1, c0:c1].mean(axis=(1, 2)) for c0, c1 in bins(w, ow)]
        rows.append(jnp.stack(cols, axis=1))
    return jnp.stack(rows, axis=1)


def max_pool_ceil(x, window: int, stride: int, padding: int = 0):
    """PyTorch's `MaxPool2d(window, stride, padding, ceil_mode=True)` on x (N, H, W, C).

    The output size rounds up, `ceil((n + 2p - k) / s) + 1`, minus one when the last window would
    start in the right padding; the extra right-hand cells are padded with -inf, like PyTorch.
    """

    def pads(n):
        out = math.ceil((n + 2 * padding - window) / stride) + 1
        if (out - 1) * stride >= n + padding:
            out -= 1
        return (padding, (out - 1) * stride + window - n - padding)

    return nn.max_pool(
        x, (window, window), strides=(stride, stride), padding=(pads(x.shape[1]), pads(x.shape[2]))
    )


def local_response_norm(
    x, *, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0
):
    """Local response normalization across channels (Krizhevsky et al. 2012, section 3.3).

    b_c = a_c / (k + alpha · sum_{c' within size//2 of c} a_c'^2) ** beta, with the paper's
    constants as defaults (alpha is NOT divided by `size`, unlike `torch.nn.LocalResponseNorm`).
    x: (N, H, W, C) -> same shape. No parameters.
    """
    sq = jnp.square(x.astype(jnp.float32))
    half = size // 2
    padded = jnp.pad(sq, ((0, 0), (0, 0), (0, 0), (half, size - 1 - half)))
    channels = x.shape[-1]
    window_sum = sum(padded[..., i : i + channels] for i in range(size))
    return (x / jnp.power(k + alpha * window_sum, beta)).astype(x.dtype)


def max_pool_2x2(x, window: int = 2):
    """Non-overlapping `window` x `window` max-pooling, VALID (the remainder is dropped), as a
    reshape + max: x (N, H, W, C) -> (N, H // window, W // window, C).

    Same forward values as `nn.max_pool(x, (k, k), strides=(k, k))`. Its gradient is XLA's
    reduce-max gradient instead of select-and-scatter, which is 3x faster on CPU (measured in
    docs/decisions.md); with tied maxima the gradient is shared among them instead of going to
    the first one.
    """
    n, h, w, c = x.shape
    hh, ww = h // window, w // window
    x = x[:, : hh * window, : ww * window]
    return x.reshape(n, hh, window, ww, window, c).max(axis=(2, 4))
