"""A fully convolutional single-shot detector: one prediction per cell of a stride-8 grid.

`GridDetector(num_classes)` maps (N, H, W, C) images of any size (H, W multiples of 8 give whole
cells) to raw per-cell predictions (N, H // 8, W // 8, 5 + num_classes), channels laid out as
`cnnjax.tasks.detection` reads them:

  [0]      objectness logit: is an object's centre in this cell?
  [1:3]    (ty, tx): the centre's offset inside the cell, through a sigmoid;
  [3:5]    (th, tw): log of the box height and width as fractions of the image side;
  [5:]     class logits.

No dense layer anywhere, so a larger image gives a larger grid (the course's "dense layers become
convolutions"). Backbone: per block one or more 3×3 convs (no bias) -> BatchNorm -> ReLU, a 2×2
max-pool after each of the first three blocks (stride 8), then `extra_convs` more 3×3 convs at
stride 8, so that a cell sees the whole of an object up to ~3/4 of a 64-pixel image (receptive
field 68 px with the defaults); the head is one 1×1 conv. With the default filters and 3 classes:
98,200 trainable parameters.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnnjax.models.layers import TORCH_CONV_INIT, max_pool_2x2

STRIDE = 8
NUM_BOX_CHANNELS = 5  # objectness, ty, tx, th, tw


class GridDetector(nn.Module):
    """(N, H, W, C) -> (N, H // 8, W // 8, 5 + num_classes) raw per-cell predictions."""

    num_classes: int
    filters: Sequence[int] = (16, 32, 64)  # The three strided blocks.
    extra_convs: Sequence[int] = (64, 64)  # 3×3 convs at stride 8 (receptive field).
    bn_momentum: float = 0.9
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        if not self.num_classes or self.num_classes < 1:
            raise ValueError("GridDetector needs num_classes >= 1.")
        if x.shape[1] < STRIDE or x.shape[2] < STRIDE:
            raise ValueError(f"images must be at least {STRIDE}x{STRIDE}, got {x.shape[1:3]}")
        x = x.astype(self.dtype)

        def conv_bn_relu(x, features, name):
            x = nn.Conv(
                features,
                (3, 3),
                padding="SAME",
                use_bias=False,
                kernel_init=TORCH_CONV_INIT,
                dtype=self.dtype,
                name=f"{name}_conv",
            )(x)
            x = nn.BatchNorm(
                use_running_average=not train,
                momentum=self.bn_momentum,
                dtype=self.dtype,
                name=f"{name}_bn",
            )(x)
            return nn.relu(x)

        for b, f in enumerate(self.filters, start=1):
            x = max_pool_2x2(conv_bn_relu(x, f, f"block{b}"))
        for e, f in enumerate(self.extra_convs, start=1):
            x = conv_bn_relu(x, f, f"extra{e}")
        # Objectness starts at sigmoid = 0.01 (RetinaNet's prior): most cells are empty, and a
        # 0.5 start would make the first steps all about pushing every cell down.
        bias = jnp.zeros(NUM_BOX_CHANNELS + self.num_classes).at[0].set(-4.6)
        out = nn.Conv(
            NUM_BOX_CHANNELS + self.num_classes,
            (1, 1),
            kernel_init=nn.initializers.normal(0.01),
            bias_init=lambda *_: bias,
            dtype=self.dtype,
            name="head",
        )(x)
        return out.astype(jnp.float32)
