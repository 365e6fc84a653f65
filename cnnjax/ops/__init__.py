"""The convolution operation itself: convolutions, pooling and classic filters in plain JAX.

No Flax: these are functions of arrays, cross-correlations like every deep-learning framework,
with NHWC activations and HWIO kernels. See `conv` for the shape and padding conventions.
"""

from cnnjax.ops import kernels
from cnnjax.ops.conv import (
    conv1d,
    conv2d,
    conv_output_size,
    conv_transpose2d,
    separable_conv2d,
)
from cnnjax.ops.pool import (
    avg_pool,
    depthwise_max_pool,
    global_avg_pool,
    global_max_pool,
    max_pool,
)

__all__ = [
    "avg_pool",
    "conv1d",
    "conv2d",
    "conv_output_size",
    "conv_transpose2d",
    "depthwise_max_pool",
    "global_avg_pool",
    "global_max_pool",
    "kernels",
    "max_pool",
    "separable_conv2d",
]
