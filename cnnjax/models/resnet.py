"""ResNet (He et al. 2016) in torchvision's v1.5 form, with an ImageNet or a CIFAR stem.

- BasicBlock (ResNet-18/34): 3×3 -> BN -> ReLU -> 3×3 -> BN, + shortcut, ReLU.
- Bottleneck (ResNet-50/101/152): 1×1 -> 3×3 (the stride is here, torchvision v1.5) -> 1×1 (4×
  width), BN after each, + shortcut, ReLU.
- The shortcut is a 1×1 projection (conv + BN) when the stride is > 1 or the width changes,
  the identity otherwise. Convolutions have no bias; BatchNorm momentum 0.9 (PyTorch 0.1),
  epsilon 1e-5; convs are kaiming-normal (fan-out) initialized, as torchvision.
- `stem="imagenet"`: 7×7/2 conv (padding 3) + BN + ReLU + 3×3/2 max-pool (padding 1);
  `stem="cifar"`: 3×3/1 conv (padding 1) + BN + ReLU, no max-pool.

Keras' `ResNet50/101/152` are the original v1 (stride on the first 1×1 conv, convs with bias,
BN epsilon 1.001e-5): `conv_bias=True, stride_on_3x3=False, bn_epsilon=1.001e-5` builds that
architecture (ResNet-50: 25,583,592 trainable + 53,120 BN statistics, as Keras).

Names: `stem_conv`, `stem_bn`, `stage{s}_block{b}` with `conv1..3`, `bn1..3`, `proj_conv`,
`proj_bn` inside, `head`. (torchvision `layer{s}.{b-1}.conv1` / Keras `conv{s+1}_block{b}_1_conv`
map onto these one to one; Keras `_0_conv` is `proj_conv`.)

With `num_classes=None` returns {"stem": stem activations before the max-pool (stride 2; stride 1
with the CIFAR stem), "stage1": stride 4, "stage2": 8, "stage3": 16, "stage4": 32} (strides for
the ImageNet stem; the CIFAR stem's are 1, 1, 2, 4, 8). Channels: 64, then 64/128/256/512 × 1
(basic) or × 4 (bottleneck).
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnnjax.errors import UserError
from cnnjax.models.layers import TORCH_CONV_INIT, batch_norm

STEMS = ("imagenet", "cifar")
PAD1 = ((1, 1), (1, 1))


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual connection; output width `filters`."""

    filters: int
    conv: Callable[..., nn.Module]
    norm: Callable[..., nn.Module]
    strides: int = 1
    zero_init_residual: bool = False
    stride_on_3x3: bool = True  # unused: a basic block has only 3×3 convs
    expansion = 1

    @nn.compact
    def __call__(self, x):
        s = (self.strides, self.strides)
        y = self.conv(self.filters, (3, 3), strides=s, padding=PAD1, name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = self.conv(self.filters, (3, 3), padding=PAD1, name="conv2")(y)
        last_scale = nn.initializers.zeros if self.zero_init_residual else nn.initializers.ones
        y = self.norm(scale_init=last_scale, name="bn2")(y)
        return nn.relu(_shortcut(self, x, y.shape[-1]) + y)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3, 1×1 expand (×4) with a residual connection; output width 4·`filters`."""

    filters: int
    conv: Callable[..., nn.Module]
    norm: Callable[..., nn.Module]
    strides: int = 1
    zero_init_residual: bool = False
    stride_on_3x3: bool = True
    expansion = 4

    @nn.compact
    def __call__(self, x):
        s = (self.strides, self.strides)
        s1, s3 = ((1, 1), s) if self.stride_on_3x3 else (s, (1, 1))
        y = self.conv(self.filters, (1, 1), strides=s1, padding="VALID", name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = self.conv(self.filters, (3, 3), strides=s3, padding=PAD1, name="conv2")(y)
        y = nn.relu(self.norm(name="bn2")(y))
        y = self.conv(self.filters * 4, (1, 1), padding="VALID", name="conv3")(y)
        last_scale = nn.initializers.zeros if self.zero_init_residual else nn.initializers.ones
        y = self.norm(scale_init=last_scale, name="bn3")(y)
        return nn.relu(_shortcut(self, x, y.shape[-1]) + y)


def _shortcut(block, x, out_features):
    """Identity, or a strided 1×1 conv + BN when the stride or the width changes."""
    if block.strides == 1 and x.shape[-1] == out_features:
        return x
    s = (block.strides, block.strides)
    x = block.conv(out_features, (1, 1), strides=s, padding="VALID", name="proj_conv")(x)
    return block.norm(name="proj_bn")(x)


class ResNet(nn.Module):
    """ResNet with `stage_sizes[i]` blocks of `block_cls` in stage i (widths 64·2^i)."""

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    block_cls: type[nn.Module] = BasicBlock
    num_classes: int | None = 1000
    num_filters: int = 64
    stem: str = "imagenet"
    zero_init_residual: bool = False
    conv_bias: bool = False
    stride_on_3x3: bool = True
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: (N, H, W, 3) -> logits (N, num_classes), or the stage features (module doc)."""
        if self.stem not in STEMS:
            raise UserError(f"ResNet stem must be one of {STEMS}, got {self.stem!r}.")
        conv = functools.partial(
            nn.Conv, use_bias=self.conv_bias, kernel_init=TORCH_CONV_INIT, dtype=self.dtype
        )
        norm = batch_norm(train, self.bn_momentum, self.bn_epsilon, self.dtype)
        x = x.astype(self.dtype)
        if self.stem == "imagenet":
            x = conv(
                self.num_filters, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)), name="stem_conv"
            )(x)
        else:
            x = conv(self.num_filters, (3, 3), padding=PAD1, name="stem_conv")(x)
        x = nn.relu(norm(name="stem_bn")(x))
        features = {"stem": x}
        if self.stem == "imagenet":
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=PAD1)

        for i, n_blocks in enumerate(self.stage_sizes):
            for j in range(n_blocks):
                x = self.block_cls(
                    filters=self.num_filters * 2**i,
                    conv=conv,
                    norm=norm,
                    strides=2 if i > 0 and j == 0 else 1,
                    zero_init_residual=self.zero_init_residual,
                    stride_on_3x3=self.stride_on_3x3,
                    name=f"stage{i + 1}_block{j + 1}",
                )(x)
            features[f"stage{i + 1}"] = x
        if self.num_classes is None:
            return features
        x = x.mean(axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)


resnet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock)
resnet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock)
resnet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck)
resnet101 = functools.partial(ResNet, stage_sizes=(3, 4, 23, 3), block_cls=Bottleneck)
resnet152 = functools.partial(ResNet, stage_sizes=(3, 8, 36, 3), block_cls=Bottleneck)
