"""VGG (Simonyan & Zisserman 2015), configurations A, B, D, E = VGG-11, 13, 16, 19, ± BatchNorm.

Five blocks of 3×3 same convolutions (with bias, ReLU; BatchNorm before the ReLU in the `_bn`
variants, as torchvision) each followed by a 2×2 max-pool, then a head:

- `head="imagenet"` (default): adaptive average pool to 7×7 (torchvision; the identity on a
  224×224 input, where Keras simply flattens, so Keras weights apply unchanged), flatten,
  `fc1` 4096 -> ReLU -> dropout -> `fc2` 4096 -> ReLU -> dropout -> `predictions`.
- `head="cifar"`: global average pool of the last block (1×1×512 on a 32×32 input, where this
  equals flattening) -> `predictions`. No hidden dense layers: on CIFAR they only add 2/3 of the
  parameters (the common "VGG for CIFAR" layout, e.g. kuangliu/pytorch-cifar).

Layer names follow Keras' `VGG16`/`VGG19`: `block{b}_conv{i}` (+ `block{b}_conv{i}_bn`), `fc1`,
`fc2`, `predictions`. With `num_classes=None` the model returns the pooled output of every block,
{"block1": (N, H/2, W/2, 64), ..., "block5": (N, H/32, W/32, 512)}: FCN's pool3/pool4/pool5 are
block3/block4/block5.

Trainable counts at 224×224×3, 1000 classes (convs 3·3·Cin·Cout + Cout, BN 2·C, dense in·out +
out): vgg11 132,863,336; vgg13 133,047,848; vgg16 138,357,544; vgg19 143,667,240; vgg11_bn
132,868,840; vgg13_bn 133,053,736; vgg16_bn 138,365,992; vgg19_bn 143,678,248.
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnnjax.errors import UserError
from cnnjax.models.layers import TORCH_CONV_INIT, adaptive_avg_pool, batch_norm, max_pool_2x2

HEADS = ("imagenet", "cifar")


class VGG(nn.Module):
    """VGG: `stage_sizes[b]` 3×3 convs of `filters[b]` channels per block, then the head.

    Initialization as torchvision: kaiming-normal (fan-out) convs, N(0, 0.01) dense kernels,
    zero biases, BatchNorm scale 1 / bias 0.
    """

    stage_sizes: Sequence[int] = (2, 2, 3, 3, 3)
    num_classes: int | None = 1000
    filters: Sequence[int] = (64, 128, 256, 512, 512)
    batch_norm: bool = False
    head: str = "imagenet"
    fc_units: int = 4096
    dropout_rate: float = 0.5
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: (N, H, W, 3) -> logits (N, num_classes), or the block features (see module doc)."""
        if self.head not in HEADS:
            raise UserError(f"VGG head must be one of {HEADS}, got {self.head!r}.")
        x = x.astype(self.dtype)
        features = {}
        for b, (n, f) in enumerate(zip(self.stage_sizes, self.filters, strict=True), start=1):
            for i in range(1, n + 1):
                name = f"block{b}_conv{i}"
                x = nn.Conv(
                    f,
                    (3, 3),
                    padding="SAME",
                    kernel_init=TORCH_CONV_INIT,
                    dtype=self.dtype,
                    name=name,
                )(x)
                if self.batch_norm:
                    x = batch_norm(train, self.bn_momentum, self.bn_epsilon, self.dtype)(
                        name=f"{name}_bn"
                    )(x)
                x = nn.relu(x)
            x = max_pool_2x2(x)
            features[f"block{b}"] = x
        if self.num_classes is None:
            return features

        dense = functools.partial(
            nn.Dense, kernel_init=nn.initializers.normal(0.01), dtype=self.dtype
        )
        if self.head == "cifar":
            return dense(self.num_classes, name="predictions")(x.mean(axis=(1, 2)))
        x = adaptive_avg_pool(x, (7, 7))
        x = x.reshape((x.shape[0], -1))
        for name in ("fc1", "fc2"):
            x = nn.relu(dense(self.fc_units, name=name)(x))
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return dense(self.num_classes, name="predictions")(x)


vgg11 = functools.partial(VGG, stage_sizes=(1, 1, 2, 2, 2))
vgg13 = functools.partial(VGG, stage_sizes=(2, 2, 2, 2, 2))
vgg16 = functools.partial(VGG, stage_sizes=(2, 2, 3, 3, 3))
vgg19 = functools.partial(VGG, stage_sizes=(2, 2, 4, 4, 4))
vgg11_bn = functools.partial(vgg11, batch_norm=True)
vgg13_bn = functools.partial(vgg13, batch_norm=True)
vgg16_bn = functools.partial(vgg16, batch_norm=True)
vgg19_bn = functools.partial(vgg19, batch_norm=True)
