"""Fully convolutional networks for semantic segmentation (Long, Shelhamer & Darrell 2015).

`FCN(num_classes, backbone, variant)` maps (N, H, W, C) images of ANY size (H, W >= 32 for the
pooling backbones) to per-pixel logits (N, H, W, num_classes):

- backbone features at strides 8, 16 and 32 ("pool3", "pool4", "pool5" in the paper):
  `"vgg16"` (the paper's; VGG block3/block4/block5, then `fc6` 7×7 conv `fc_width` -> ReLU ->
  dropout -> `fc7` 1×1 conv `fc_width` -> ReLU -> dropout: VGG's fc1/fc2 as convolutions; their
  ImageNet weights load by a reshape, see `cnnjax.models.convolutionalize`), `"resnet18"`,
  `"resnet50"` (stage2/stage3/stage4, ImageNet stem only: the CIFAR stem changes the strides),
  and `"small"` (`SmallBackbone`: five conv-BN-ReLU-pool blocks, 34k parameters, for CPU demos).
  `backbone_kwargs` go to the backbone's constructor (e.g. `{"batch_norm": True}` for VGG,
  `{"filters": (8, 8, 16, 16, 16)}` to shrink VGG or the small backbone).
- `score_fr`: 1×1 conv to `num_classes` on the stride-32 map. 16s adds `score_pool4` on the
  stride-16 map, 8s also `score_pool3` on the stride-8 map. All score layers are zero-initialized
  as in the paper (random initialization gave it neither better results nor faster
  convergence), so at initialization FCN-16s/8s compute exactly FCN-32s (the skip terms are 0
  and composed bilinear upsamplings are one bilinear upsampling).
- upsampling: transposed convolutions with kernel 2f and stride f, no bias, initialized to
  bilinear interpolation (`bilinear_kernel`: the paper's `upsample_filt`, diagonal over classes so
  that classes do not mix). Names as the paper's Caffe nets: 32s `upscore` (×32); 16s `upscore2`
  (×2) + `upscore16`; 8s `upscore2`, `upscore_pool4` (×2) + `upscore8`.
  `learnable_upsampling=True`: each kernel is a parameter (2f·2f·K·K values, the full K×K class
  mixing of Caffe's `Deconvolution`, initialized diagonal); `False`: a fixed bilinear kernel that
  is a constant, NOT a parameter, so no optimizer or weight decay ever sees it. (The paper
  learned the intermediate ×2 layers and froze the final one: with learnable upsampling, freeze
  `upscore`/`upscore16`/`upscore8` with an optax mask to reproduce that.)
- skip fusion by addition, then the final upsampling to the input size.

Alignment (any input size, odd ones included). There is no 100-pixel input padding (the paper's
Caffe trick); convolutions are SAME and every map keeps its backbone size (floor(H/s) for the
pooling backbones, ceil(H/s) for ResNet). Upsampling always crops, never resizes: a cell i of a
stride-f map is taken to cover pixels [f·i, f·i + f) of the finer grid, so its center is at
f·i + (f-1)/2; the map is edge-padded by one cell in front and as many cells at the end as needed
to cover the target (edge padding keeps a constant map constant up to the border), upsampled,
and cropped to the target size at the offset that puts every input cell's center where it
belongs. The crop thus reproduces exact bilinear interpolation (with constant extension past the
outermost centers) onto the target grid. For ResNet, whose strided convolutions center a cell at
f·i rather than f·i + (f-1)/2, this is off by under half a stride; learning absorbs it.

Parameter counts, vgg16 backbone, 21 classes, fc_width 4096, learnable upsampling (independent
of the input size): fcn32s 136,152,917; fcn16s 134,815,994; fcn8s 134,489,759 (the ×32 kernel
alone is 64·64·21·21 = 1,806,336; ×16 451,584; ×8 112,896; ×2 7,056). With
`learnable_upsampling=False` the upsampling kernels are not parameters: 134,346,581 (32s),
134,357,354 (16s), 134,362,751 (8s): 16s adds score_pool4 (512·21 + 21 = 10,773), 8s also
score_pool3 (256·21 + 21 = 5,397).
"""

import functools
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.core import FrozenDict

from cnnjax.errors import UserError
from cnnjax.models import resnet, vgg
from cnnjax.models.layers import TORCH_CONV_INIT, batch_norm, max_pool_2x2

VARIANTS = ("32s", "16s", "8s")


def bilinear_kernel(factor: int, channels: int) -> np.ndarray:
    """The FCN bilinear upsampling filter as a (k, k, channels, channels) HWIO kernel.

    k = 2·factor - factor % 2; the 2-D filter is the outer product of the 1-D tent
    1 - |i - center| / factor (center (k - 1) / 2), placed on the diagonal [:, :, c, c] only, so
    a transposed convolution with stride `factor` interpolates every channel on its own.
    """
    if factor < 1:
        raise ValueError(f"upsampling factor must be >= 1, got {factor}")
    size = 2 * factor - factor % 2
    center = (size - 1) / 2
    tent = 1.0 - np.abs(np.arange(size) - center) / factor
    kernel = np.zeros((size, size, channels, channels), np.float32)
    kernel[:, :, np.arange(channels), np.arange(channels)] = np.outer(tent, tent)[..., None]
    return kernel


def _upsample_geometry(n: int, target: int, factor: int) -> tuple[int, int, int]:
    """(pad_before, pad_after, crop_offset) along one axis: see the module doc."""
    size = 2 * factor - factor % 2
    # Input cell i is centered at f·i + (f-1)/2 of the target grid. One cell of padding in front
    # puts a center at -(f+1)/2 < 0; at the end, pad until a center is >= target - 1.
    pad_before = 1
    last_center_needed = -(-(2 * target - factor - 1) // (2 * factor))  # ceil((t-1-(f-1)/2)/f)
    pad_after = max(0, last_center_needed - (n - 1))
    # The transposed conv puts padded cell j's kernel peak at output f·j + (size-1)/2.
    offset = (size - 1) // 2 - (factor - 1) // 2 + factor * pad_before
    out = (n + pad_before + pad_after - 1) * factor + size
    assert offset + target <= out, (n, target, factor)
    return pad_before, pad_after, offset


class BilinearUpsample(nn.Module):
    """×`factor` transposed convolution (kernel 2f, stride f, no bias), bilinear-initialized,
    cropped to `out_hw` (module doc). `learnable=False` uses the fixed kernel, not a parameter."""

    factor: int
    learnable: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, out_hw: Sequence[int]):
        """x: (N, h, w, C) -> (N, out_hw[0], out_hw[1], C)."""
        f, c = self.factor, x.shape[-1]
        if self.learnable:
            kernel = self.param("kernel", lambda _: jnp.asarray(bilinear_kernel(f, c)))
        else:
            kernel = jnp.asarray(bilinear_kernel(f, c))
        (bh, ah, oh), (bw, aw, ow) = (
            _upsample_geometry(n, t, f) for n, t in zip(x.shape[1:3], out_hw, strict=True)
        )
        x = jnp.pad(x, ((0, 0), (bh, ah), (bw, aw), (0, 0)), mode="edge")
        y = jax.lax.conv_transpose(
            x.astype(self.dtype),
            kernel.astype(self.dtype),
            (f, f),
            "VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return y[:, oh : oh + out_hw[0], ow : ow + out_hw[1]]


class SmallBackbone(nn.Module):
    """A CPU-sized backbone: per block one 3×3 conv (no bias) -> BN -> ReLU -> 2×2 max-pool.

    Returns {"block1": stride 2, ..., "block5": stride 32}, channels `filters`. With the default
    filters (8, 16, 32, 32, 64) on RGB input: 33,928 trainable parameters (convs 33,624, BN
    scales and biases 304) — small enough to train a segmentation demo in minutes on 2 CPU cores.
    """

    num_classes: None = None  # features only, like the other backbones with num_classes=None
    filters: Sequence[int] = (8, 16, 32, 32, 64)
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: (N, H, W, C) -> {"block{b}": (N, H // 2^b, W // 2^b, filters[b-1])}."""
        if self.num_classes is not None:
            raise UserError("SmallBackbone has no classifier: use it with num_classes=None.")
        x = x.astype(self.dtype)
        features = {}
        for b, f in enumerate(self.filters, start=1):
            x = nn.Conv(
                f,
                (3, 3),
                padding="SAME",
                use_bias=False,
                kernel_init=TORCH_CONV_INIT,
                dtype=self.dtype,
                name=f"block{b}_conv",
            )(x)
            x = batch_norm(train, self.bn_momentum, self.bn_epsilon, self.dtype)(
                name=f"block{b}_bn"
            )(x)
            x = max_pool_2x2(nn.relu(x))
            features[f"block{b}"] = x
        return features


# backbone name -> (constructor, feature keys at strides 8, 16, 32, minimum input size).
BACKBONES = {
    "vgg16": (vgg.vgg16, ("block3", "block4", "block5"), 32),
    "resnet18": (resnet.resnet18, ("stage2", "stage3", "stage4"), 1),
    "resnet50": (resnet.resnet50, ("stage2", "stage3", "stage4"), 1),
    "small": (SmallBackbone, ("block3", "block4", "block5"), 32),
}


class FCN(nn.Module):
    """FCN-32s/16s/8s over a backbone; see the module doc. Output (N, H, W, num_classes)."""

    num_classes: int | None = 21
    backbone: str = "vgg16"
    variant: str = "8s"
    learnable_upsampling: bool = True
    backbone_kwargs: Any = FrozenDict()
    fc_width: int = 4096  # fc6/fc7 width, vgg16 backbone only
    dropout_rate: float = 0.5  # after fc6 and fc7, vgg16 backbone only
    dtype: Any = jnp.float32

    def __post_init__(self):
        # A plain dict would make the module unhashable (jit static args, caches).
        if isinstance(self.backbone_kwargs, Mapping) and not isinstance(
            self.backbone_kwargs, FrozenDict
        ):
            object.__setattr__(self, "backbone_kwargs", FrozenDict(self.backbone_kwargs))
        super().__post_init__()

    def _make_backbone(self):
        if self.backbone not in BACKBONES:
            raise UserError(
                f"FCN backbone must be one of {tuple(BACKBONES)}, got {self.backbone!r}."
            )
        constructor, keys, min_size = BACKBONES[self.backbone]
        kwargs = dict(self.backbone_kwargs)
        accepted = set(inspect.signature(constructor).parameters) - {
            "parent",
            "name",
            "num_classes",
            "dtype",
        }
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise UserError(
                f"FCN backbone {self.backbone!r} takes no argument {unknown[0]!r}; "
                f"its arguments: {', '.join(sorted(accepted))}."
            )
        if self.backbone.startswith("resnet") and kwargs.get("stem", "imagenet") != "imagenet":
            raise UserError("FCN needs the ResNet ImageNet stem (strides 8/16/32), not 'cifar'.")
        net = constructor(num_classes=None, dtype=self.dtype, name="backbone", **kwargs)
        return net, keys, min_size

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: (N, H, W, C) -> logits (N, H, W, num_classes)."""
        if self.variant not in VARIANTS:
            raise UserError(f"FCN variant must be one of {VARIANTS}, got {self.variant!r}.")
        if self.num_classes is None:
            raise UserError("FCN needs num_classes (the number of segmentation classes).")
        h, w = x.shape[1], x.shape[2]
        net, keys, min_size = self._make_backbone()
        if min(h, w) < min_size:
            raise UserError(
                f"FCN with backbone {self.backbone!r} needs inputs of at least "
                f"{min_size}×{min_size} pixels, got {h}×{w}."
            )
        features = net(x, train=train)
        pool3, pool4, y = (features[k] for k in keys)

        if self.backbone == "vgg16":
            conv = functools.partial(
                nn.Conv, kernel_init=nn.initializers.normal(0.01), dtype=self.dtype
            )
            y = nn.relu(conv(self.fc_width, (7, 7), padding="SAME", name="fc6")(y))
            y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
            y = nn.relu(conv(self.fc_width, (1, 1), name="fc7")(y))
            y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)

        score = functools.partial(
            nn.Conv,
            self.num_classes,
            (1, 1),
            kernel_init=nn.initializers.zeros,
            dtype=self.dtype,
        )
        up = functools.partial(
            BilinearUpsample, learnable=self.learnable_upsampling, dtype=self.dtype
        )
        y = score(name="score_fr")(y)
        if self.variant == "32s":
            return up(32, name="upscore")(y, (h, w))
        y = up(2, name="upscore2")(y, pool4.shape[1:3]) + score(name="score_pool4")(pool4)
        if self.variant == "16s":
            return up(16, name="upscore16")(y, (h, w))
        y = up(2, name="upscore_pool4")(y, pool3.shape[1:3]) + score(name="score_pool3")(pool3)
        return up(8, name="upscore8")(y, (h, w))


fcn32s = functools.partial(FCN, variant="32s")
fcn16s = functools.partial(FCN, variant="16s")
fcn8s = functools.partial(FCN, variant="8s")
