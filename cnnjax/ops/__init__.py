"""The convolution operation itself: convolutions, pooling and classic filters in plain JAX.

No Flax: these are functions of arrays, cross-correlations like every deep-learning framework,
with NHWC activations and HWIO kernels. See `conv` for the shape and padding conventions.
`boxes` adds bounding boxes: IoU, non-maximum suppression and detection mAP.
"""

from cnnjax.ops import kernels
from cnnjax.ops.boxes import (
    average_precision,
    batched_nms,
    box_area,
    box_iou,
    mean_average_precision,
    nms,
    pairwise_iou,
)
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
    "average_precision",
    "avg_pool",
    "batched_nms",
    "box_area",
    "box_iou",
    "conv1d",
    "conv2d",
    "conv_output_size",
    "conv_transpose2d",
    "depthwise_max_pool",
    "global_avg_pool",
    "global_max_pool",
    "kernels",
    "max_pool",
    "mean_average_precision",
    "nms",
    "pairwise_iou",
    "separable_conv2d",
]
