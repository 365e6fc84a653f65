"""Turning a classifier's dense head into convolutions (Long et al. 2015, section 3.1).

`convolutionalize(model, variables)` returns `(conv_model, conv_variables)`: the same
convolutional trunk, then the dense layers rewritten as VALID convolutions. The first dense layer
reads a flattened h×w×c map; flattening NHWC is row-major over (h, w, c), so its kernel
(h·w·c, out) reshaped to (h, w, c, out) is an h×w convolution computing the same sums, and the
later dense layers are 1×1 convolutions. `conv_model(x, train=...)` returns a grid of logits
(N, H', W', classes), one per window:

- on an input of the training size the grid is 1×1 and equals the dense model's logits;
- on a larger image, cell (i, j) is the dense model applied to the crop at (i·s, j·s) of the
  training size, s the trunk's total stride (lenet5: 4; cifar_conv64_pool_dense32: 2; VGG: 32),
  computed for all windows at once with the trunk's work shared.

Supported families (anything else raises `UserError`):

- flatten heads: `LeNet5` (`lenet5`), `SimpleCNN` (the seed CNNs of seed.py), `VGGBlocks`
  (`vgg_blocks`, `separable_vgg_blocks`), and `VGG` with `head="imagenet"`. VGG's dense model
  adaptive-average-pools block5 to 7×7 first; the convolutional version SKIPS that pool (`fc1`
  becomes a 7×7 conv over the block5 map), so it matches the dense model exactly at 224×224 (where
  the pool is the identity) and slides over larger inputs, as in the paper.
- global-average-pool heads: `ResNet`, `Xception`, `MobileNetV1`, `VGG` with `head="cifar"`.
  Their trunks are already convolutional; the classifier becomes a 1×1 convolution applied at
  every position of the last feature map, BEFORE the pool. A cell then is the classifier on one
  feature vector, not the dense model on a crop of the image; but the classifier is linear, so
  the mean of the grid over (H', W') equals the dense model's logits at any input size (with
  dropout off).

The window h×w of a flatten head is the trunk's map at the training size. It is taken from
`input_shape` (the training input (H, W, C), traced abstractly) when given, else assumed square
(h = w = sqrt(rows / c)); a non-square count without `input_shape` is a `UserError`.

Mechanism: each family gives its trunk as a module whose layer names are the original ones (VGG,
ResNet, Xception, MobileNet and VGGBlocks are cloned with `num_classes=None` and return their
feature dict; LeNet5 and SimpleCNN, whose `num_classes=None` returns dense features, have trunk
modules here that repeat their convolutional part layer for layer) and its dense layers as a list
of `DenseLayer`s (name, width, activation, dropout). `ConvolutionalHead` builds the convolutions
from that list. Variables: {"params": {"trunk": the original trunk params, "classifier": {the
dense layers by their original names, kernels reshaped}}}, and every other collection (BatchNorm
statistics) under "trunk".
"""

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax.errors import UserError
from cnnjax.models import lenet, mobilenet, resnet, seed, vgg, vgg_blocks, xception
from cnnjax.models.layers import max_pool_2x2


@dataclasses.dataclass(frozen=True)
class DenseLayer:
    """A dense layer of a classifier head: dropout_after(activation(W · dropout_before(x) + b))."""

    name: str
    features: int
    activation: Callable | None = None
    dropout_before: float = 0.0
    dropout_after: float = 0.0


class ConvolutionalHead(nn.Module):
    """The dense `layers` as VALID convolutions: the first `window`, the others 1×1."""

    layers: Sequence[DenseLayer]
    window: tuple[int, int]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: (N, h', w', c) feature map -> (N, h' - h + 1, w' - w + 1, layers[-1].features)."""
        if x.shape[1] < self.window[0] or x.shape[2] < self.window[1]:
            raise UserError(
                f"The input is smaller than the classifier's window: its feature map is "
                f"{x.shape[1]}×{x.shape[2]}, the head needs at least "
                f"{self.window[0]}×{self.window[1]} (use an input at least the training size)."
            )
        for i, layer in enumerate(self.layers):
            if layer.dropout_before > 0:
                x = nn.Dropout(layer.dropout_before, deterministic=not train)(x)
            x = nn.Conv(
                layer.features,
                tuple(self.window) if i == 0 else (1, 1),
                padding="VALID",
                dtype=self.dtype,
                name=layer.name,
            )(x)
            if layer.activation is not None:
                x = layer.activation(x)
            if layer.dropout_after > 0:
                x = nn.Dropout(layer.dropout_after, deterministic=not train)(x)
        return x


class ConvolutionalizedModel(nn.Module):
    """`trunk` (its `feature_key` entry when it returns a dict), then `classifier`."""

    trunk: nn.Module
    classifier: ConvolutionalHead
    feature_key: str | None = None

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: (N, H, W, C) -> logits grid (N, H', W', classes)."""
        features = self.trunk(x, train=train)
        if self.feature_key is not None:
            features = features[self.feature_key]
        return self.classifier(features, train=train)


class LeNet5Trunk(nn.Module):
    """LeNet5's convolutional part, layer for layer (`conv1`, `conv2`), before the flatten."""

    filters: Sequence[int] = (8, 16)
    kernel_size: int = 5
    activation: Any = nn.relu
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = x.astype(self.dtype)
        for i, f in enumerate(self.filters):
            k = (self.kernel_size, self.kernel_size)
            x = nn.Conv(f, k, padding="VALID", dtype=self.dtype, name=f"conv{i + 1}")(x)
            x = max_pool_2x2(self.activation(x))
        return x


class SimpleCNNTrunk(nn.Module):
    """SimpleCNN's convolutional part, layer for layer (`conv1`, ...), before the flatten."""

    blocks: Sequence[Sequence[int]] = ((64,),)
    kernel_size: int = 3
    first_kernel_size: int | None = None
    padding: str = "VALID"
    pool: bool = False
    activation: Any = nn.relu
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        return seed.conv_blocks(self, x.astype(self.dtype))


@dataclasses.dataclass(frozen=True)
class _Plan:
    trunk: nn.Module
    feature_key: str | None
    layers: tuple[DenseLayer, ...]
    window: tuple[int, int] | None  # None: a flatten head, inferred from the kernel
    channels: int  # channels of the trunk's output map


def _dense_stack(widths, activation, dropout, classifier_name, num_classes):
    hidden = tuple(
        DenseLayer(f"fc{i + 1}", d, activation, dropout_after=dropout) for i, d in enumerate(widths)
    )
    return (*hidden, DenseLayer(classifier_name, num_classes))


def _features_only(model):
    return model.clone(parent=None, name=None, num_classes=None)


def _plan(model) -> _Plan:
    k = model.num_classes
    if isinstance(model, lenet.LeNet5):
        trunk = LeNet5Trunk(model.filters, model.kernel_size, model.activation, model.dtype)
        layers = _dense_stack(model.dense, model.activation, model.dropout_rate, "head", k)
        return _Plan(trunk, None, layers, None, model.filters[-1])
    if isinstance(model, seed.SimpleCNN):
        trunk = SimpleCNNTrunk(
            model.blocks,
            model.kernel_size,
            model.first_kernel_size,
            model.padding,
            model.pool,
            model.activation,
            model.dtype,
        )
        layers = _dense_stack(model.dense, model.activation, model.dropout_rate, "head", k)
        return _Plan(trunk, None, layers, None, model.blocks[-1][-1])
    if isinstance(model, vgg_blocks.VGGBlocks):
        key = f"block{len(model.filters)}"
        layers = (DenseLayer("predictions", k),)
        return _Plan(_features_only(model), key, layers, None, model.filters[-1])
    if isinstance(model, vgg.VGG):
        if model.head == "cifar":
            layers = (DenseLayer("predictions", k),)
            return _Plan(_features_only(model), "block5", layers, (1, 1), model.filters[-1])
        layers = (
            DenseLayer("fc1", model.fc_units, nn.relu, dropout_after=model.dropout_rate),
            DenseLayer("fc2", model.fc_units, nn.relu, dropout_after=model.dropout_rate),
            DenseLayer("predictions", k),
        )
        return _Plan(_features_only(model), "block5", layers, (7, 7), model.filters[-1])
    if isinstance(model, resnet.ResNet):
        channels = model.num_filters * 2 ** (len(model.stage_sizes) - 1)
        channels *= model.block_cls.expansion
        return _Plan(_features_only(model), "stage4", (DenseLayer("head", k),), (1, 1), channels)
    if isinstance(model, xception.Xception):
        layers = (DenseLayer("predictions", k),)
        return _Plan(_features_only(model), "stage4", layers, (1, 1), 2048)
    if isinstance(model, mobilenet.MobileNetV1):
        layers = (DenseLayer("conv_preds", k, dropout_before=model.dropout_rate),)
        return _Plan(_features_only(model), "stage4", layers, (1, 1), int(1024 * model.alpha))
    raise UserError(
        f"convolutionalize does not support {type(model).__name__}: supported are LeNet5, "
        "SimpleCNN (seed CNNs), VGGBlocks, VGG, ResNet, Xception and MobileNetV1."
    )


def _window(plan: _Plan, rows: int, input_shape) -> tuple[int, int]:
    """The h×w map the first dense layer flattens (`rows` = h·w·c)."""
    if input_shape is not None:
        x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
        out = jax.eval_shape(
            lambda x: plan.trunk.init_with_output(jax.random.key(0), x, train=False)[0], x
        )
        if plan.feature_key is not None:
            out = out[plan.feature_key]
        _, h, w, c = out.shape
        if h * w * c != rows:
            raise UserError(
                f"input_shape {tuple(input_shape)} gives a {h}×{w}×{c} feature map "
                f"({h * w * c} values), but the first dense layer reads {rows}: pass the "
                "training input shape."
            )
        return h, w
    hw, rem = divmod(rows, plan.channels)
    side = math.isqrt(hw)
    if rem or side * side != hw:
        raise UserError(
            f"The first dense layer reads {rows} values, not a square map of {plan.channels} "
            "channels: pass input_shape=(H, W, C), the training input shape."
        )
    return side, side


def _reshape(kernel, shape):
    """jnp.reshape, also for abstract (jax.ShapeDtypeStruct) variables from jax.eval_shape."""
    if isinstance(kernel, jax.ShapeDtypeStruct):
        return jax.eval_shape(lambda k: jnp.reshape(k, shape), kernel)
    return jnp.reshape(kernel, shape)


def convolutionalize(model: nn.Module, variables, *, input_shape: Sequence[int] | None = None):
    """(conv_model, conv_variables) computing `model`'s classifier at every window; module doc.

    `model` is an unbound module of a supported family with `num_classes` set, `variables` its
    variables ({"params": ..., "batch_stats": ...}; abstract ones from `jax.eval_shape` work
    too); `input_shape` (H, W, C) the training input size, needed only for a flatten head over a
    non-square map.
    """
    if getattr(model, "num_classes", None) is None:
        raise UserError("convolutionalize needs a classifier: the model has num_classes=None.")
    plan = _plan(model)
    params = variables["params"]
    missing = [layer.name for layer in plan.layers if layer.name not in params]
    if missing:
        raise UserError(f"The variables have no dense layer {missing[0]!r} for this model.")
    first = params[plan.layers[0].name]["kernel"]
    window = plan.window
    if window is None:
        window = _window(plan, first.shape[0], input_shape)
    elif first.ndim == 2 and first.shape[0] != window[0] * window[1] * plan.channels:
        raise UserError(
            f"The first dense layer reads {first.shape[0]} values, not a "
            f"{window[0]}×{window[1]}×{plan.channels} map."
        )

    head_names = {layer.name for layer in plan.layers}
    classifier = {}
    for i, layer in enumerate(plan.layers):
        kernel = params[layer.name]["kernel"]
        shape = (*window, -1, kernel.shape[-1]) if i == 0 else (1, 1, -1, kernel.shape[-1])
        classifier[layer.name] = {**params[layer.name], "kernel": _reshape(kernel, shape)}
    conv_variables = {
        "params": {
            "trunk": {k: v for k, v in params.items() if k not in head_names},
            "classifier": classifier,
        }
    }
    for collection, tree in variables.items():
        if collection != "params":
            conv_variables[collection] = {"trunk": tree}

    head = ConvolutionalHead(plan.layers, tuple(window), dtype=model.dtype)
    conv_model = ConvolutionalizedModel(plan.trunk, head, plan.feature_key)
    return conv_model, conv_variables
