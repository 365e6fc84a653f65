"""Import Keras applications weights: VGG16/19, ResNet50/101/152, Xception, MobileNet.

    model, variables = import_keras(keras_model_or_path)
    logits = model.apply(variables, images, train=False)   # softmax(logits) == Keras' output

The Keras model (or a `.keras` / legacy `.h5` file, e.g. the files `keras.applications`
downloads) is read into NumPy (`keras_weights.py`), its architecture is recognised from its layer
names, the matching cnnjax model is built with Keras' conventions (ResNet v1 with the stride on
the first 1x1 conv and BatchNorm epsilon 1.001e-5; Keras BatchNorm epsilon 1e-3 for Xception
and MobileNet) and every weight is mapped by name:

- Conv2D/Dense `kernel`, `bias` -> `kernel`, `bias` (same layouts: HWIO and (in, out)).
- DepthwiseConv2D / SeparableConv2D depthwise kernels (k, k, C, m) -> a grouped conv kernel
  (k, k, 1, C*m) by a plain reshape (output channel c*m + j in both).
- BatchNormalization `gamma`, `beta` -> params `scale`, `bias`; `moving_mean`,
  `moving_variance` -> batch_stats `mean`, `var`.
- Keras ResNets put a bias on every conv right before a BatchNorm. BN(conv(x) + b) equals
  BN(conv(x)) with the running mean shifted by -b, so the bias is folded into the BatchNorm
  statistics and the model keeps the torchvision parameter count.
"""

import re

import jax
import numpy as np

from cnnjax import models
from cnnjax.data import pipeline, preprocessing
from cnnjax.errors import UserError
from cnnjax.interop.keras_weights import KerasLayer, read_layers

ARCHITECTURES = ("vgg16", "vgg19", "resnet50", "resnet101", "resnet152", "xception", "mobilenet_v1")
# The `data.normalization` mode (cnnjax/data/preprocessing.py) each architecture's ImageNet
# weights were trained with: "caffe" (minus the mean pixel; Keras feeds BGR) or "inception"
# ([-1, 1]; Keras calls it "tf").
PREPROCESSING = {
    "vgg16": "caffe",
    "vgg19": "caffe",
    "resnet50": "caffe",
    "resnet101": "caffe",
    "resnet152": "caffe",
    "xception": "inception",
    "mobilenet_v1": "inception",
}
# The first convolution of the "caffe" architectures, whose input channels Keras orders BGR.
FIRST_CONV = {
    "vgg16": "block1_conv1",
    "vgg19": "block1_conv1",
    "resnet50": "stem_conv",
    "resnet101": "stem_conv",
    "resnet152": "stem_conv",
}
# Input sizes the ImageNet weights were trained at.
IMAGE_SIZE = {
    "vgg16": 224,
    "vgg19": 224,
    "resnet50": 224,
    "resnet101": 224,
    "resnet152": 224,
    "xception": 299,
    "mobilenet_v1": 224,
}


def preprocess(images, architecture: str):
    """RGB pixels in [0, 255], float (N, H, W, 3) -> what the Keras weights expect: the
    architecture's `data.normalization` mode, then RGB -> BGR for "caffe" weights as Keras
    stores them (`import_keras(..., rgb=True)` models read RGB instead)."""
    mode = PREPROCESSING[architecture]
    mean, std = preprocessing.mean_std(mode, 3)
    x = np.asarray(pipeline.normalize(np.asarray(images, np.float32), mean, std))
    return x[..., ::-1] if architecture in FIRST_CONV else x


def rgb_input(variables: dict, architecture: str) -> dict:
    """Variables of a "caffe" architecture whose first convolution reads RGB instead of Keras'
    BGR: its kernel's input channels reversed. conv(BGR(x), K) == conv(x, K[:, :, ::-1]), so
    the model computes exactly what Keras does; other architectures are returned unchanged."""
    if architecture not in FIRST_CONV:
        return variables
    params = dict(variables["params"])
    first = dict(params[FIRST_CONV[architecture]])
    first["kernel"] = np.ascontiguousarray(np.asarray(first["kernel"])[:, :, ::-1, :])
    params[FIRST_CONV[architecture]] = first
    return {**variables, "params": params}


def detect_architecture(layers: list[KerasLayer]) -> str:
    """Recognises a Keras application from its layer names."""
    names = {layer.name for layer in layers}
    if "block14_sepconv2" in names:
        return "xception"
    if "conv_pw_13" in names:
        return "mobilenet_v1"
    if "block5_conv1" in names:
        return "vgg19" if "block5_conv4" in names else "vgg16"
    blocks = {m.group(1) for n in names if (m := re.match(r"conv4_block(\d+)_1_conv$", n))}
    by_depth = {6: "resnet50", 23: "resnet101", 36: "resnet152"}
    if "conv1_conv" in names and len(blocks) in by_depth:
        return by_depth[len(blocks)]
    raise UserError(
        "Not a supported Keras application (expected VGG16/19, ResNet50/101/152, "
        f"Xception or MobileNet); first layers: {sorted(names)[:5]}."
    )


def _resnet_path(name: str) -> tuple[str, ...] | None:
    if name in ("conv1_conv", "conv1_bn"):
        return ("stem_conv",) if name.endswith("conv") else ("stem_bn",)
    if name == "predictions":
        return ("head",)
    m = re.match(r"conv(\d)_block(\d+)_(\d)_(conv|bn)$", name)
    if not m:
        return None
    stage, block, index, kind = int(m.group(1)) - 1, m.group(2), m.group(3), m.group(4)
    leaf = f"proj_{kind}" if index == "0" else f"{kind}{index}"
    return (f"stage{stage}_block{block}", leaf)


def _xception_path(name: str, residual_convs: list[str], residual_bns: list[str]):
    if m := re.match(r"(block\d+_sepconv\d)(_bn)?$", name):
        return (m.group(1), "bn" if m.group(2) else "sepconv")
    # Keras leaves the four residual 1x1 convs and their BatchNorms unnamed (conv2d,
    # conv2d_1, ...): they are, in order, those of blocks 2, 3, 4 and 13.
    for seen, kind in ((residual_convs, "conv"), (residual_bns, "bn")):
        if name in seen:
            return (f"block{(2, 3, 4, 13)[seen.index(name)]}_residual_{kind}",)
    return (name,)


def _kind(layer: KerasLayer) -> str:
    w = layer.weights
    if "gamma" in w or "moving_mean" in w:
        return "bn"
    if "pointwise_kernel" in w:
        return "separable"
    if "depthwise_kernel" in w or layer.class_name == "DepthwiseConv2D" or "_dw_" in layer.name:
        return "depthwise"
    return "conv" if w["kernel"].ndim == 4 else "dense"


def _set(tree: dict, path: tuple[str, ...], leaf: str, value: np.ndarray) -> None:
    node = tree
    for part in path:
        node = node.setdefault(part, {})
    node[leaf] = np.asarray(value, np.float32)


def convert(layers: list[KerasLayer], architecture: str) -> dict:
    """Keras layers -> {"params": ..., "batch_stats": ...} for the cnnjax `architecture`."""
    params, stats, folded = {}, {}, {}
    unnamed_convs = [lay.name for lay in layers if re.match(r"conv2d(_\d+)?$", lay.name)]
    unnamed_bns = [lay.name for lay in layers if re.match(r"batch_normalization(_\d+)?$", lay.name)]
    for layer in layers:
        if architecture.startswith("resnet"):
            path = _resnet_path(layer.name)
        elif architecture == "xception":
            path = _xception_path(layer.name, unnamed_convs, unnamed_bns)
        else:
            path = (layer.name,)
        if path is None:
            raise UserError(
                f"Keras layer {layer.name!r} has no counterpart in cnnjax {architecture}."
            )
        w, kind = layer.weights, _kind(layer)
        if kind == "bn":
            _set(params, path, "scale", w["gamma"])
            _set(params, path, "bias", w["beta"])
            _set(stats, path, "mean", w["moving_mean"] - folded.pop(path, 0.0))
            _set(stats, path, "var", w["moving_variance"])
        elif kind == "separable":
            dw = w["depthwise_kernel"]
            _set(params, (*path, "depthwise"), "kernel", dw.reshape(*dw.shape[:2], 1, -1))
            _set(params, (*path, "pointwise"), "kernel", w["pointwise_kernel"])
            if "bias" in w:
                _set(params, (*path, "pointwise"), "bias", w["bias"])
        else:
            kernel = w.get("depthwise_kernel", w.get("kernel"))
            if kind == "depthwise":
                kernel = kernel.reshape(*kernel.shape[:2], 1, -1)
            _set(params, path, "kernel", kernel)
            if "bias" in w:
                if architecture.startswith("resnet") and path[-1] != "head":
                    bn_path = path[:-1] + (path[-1].replace("conv", "bn"),)
                    folded[bn_path] = np.asarray(w["bias"], np.float32)
                else:
                    _set(params, path, "bias", w["bias"])
    if folded:
        raise UserError(f"Keras conv biases without a following BatchNorm: {sorted(folded)}.")
    variables = {"params": params}
    if stats:
        variables["batch_stats"] = stats
    return variables


def _model_for(layers: list[KerasLayer], architecture: str):
    by_name = {layer.name: layer for layer in layers}
    head = {
        "vgg16": "predictions",
        "vgg19": "predictions",
        "xception": "predictions",
        "mobilenet_v1": "conv_preds",
    }.get(architecture, "predictions")
    num_classes = int(by_name[head].weights["kernel"].shape[-1]) if head in by_name else None
    kwargs = {}
    if architecture.startswith("resnet"):
        kwargs = {"stride_on_3x3": False, "bn_epsilon": 1.001e-5}
    if architecture == "mobilenet_v1":
        kwargs = {"alpha": by_name["conv1"].weights["kernel"].shape[-1] / 32}
    return models.get_model(architecture, num_classes=num_classes, **kwargs)


def import_keras(keras_model_or_path, *, input_shape: tuple[int, int, int] | None = None):
    """(cnnjax model, variables) equivalent to a Keras application model or weights file.

    input_shape: (H, W, 3) used to check every shape against the cnnjax model; defaults to the
    Keras model's own input shape, else the architecture's ImageNet size.
    """
    model, variables, _ = read_keras(keras_model_or_path, input_shape=input_shape)
    return model, variables


def read_keras(
    keras_model_or_path, *, input_shape: tuple[int, int, int] | None = None, rgb: bool = False
):
    """(cnnjax model, variables, architecture) of a Keras application model or weights file,
    as `import_keras`; rgb=True reverses the first convolution's input channels of "caffe"
    weights (`rgb_input`), so that the model reads RGB like every cnnjax model."""
    layers = read_layers(keras_model_or_path)
    architecture = detect_architecture(layers)
    model = _model_for(layers, architecture)
    variables = convert(layers, architecture)
    if input_shape is None:
        shape = getattr(keras_model_or_path, "input_shape", None)
        if shape and all(isinstance(d, int) for d in shape[1:]):
            input_shape = tuple(shape[1:])
        else:
            size = IMAGE_SIZE[architecture]
            input_shape = (size, size, 3)
    expected = jax.eval_shape(
        lambda: model.init(jax.random.key(0), np.zeros((1, *input_shape), np.float32), train=False)
    )
    _check_same_tree(expected, variables, architecture)
    variables = jax.tree.map(np.asarray, variables)
    return model, rgb_input(variables, architecture) if rgb else variables, architecture


def _check_same_tree(expected, got, architecture: str) -> None:
    flat_e = {
        "/".join(str(k.key) for k in p): v
        for p, v in jax.tree_util.tree_flatten_with_path(dict(expected))[0]
    }
    flat_g = {
        "/".join(str(k.key) for k in p): v for p, v in jax.tree_util.tree_flatten_with_path(got)[0]
    }
    missing, extra = sorted(set(flat_e) - set(flat_g)), sorted(set(flat_g) - set(flat_e))
    if missing or extra:
        raise UserError(
            f"Keras {architecture} weights do not fit cnnjax {architecture}: "
            f"missing {missing[:3]}, unexpected {extra[:3]}."
        )
    for key, spec in flat_e.items():
        if tuple(spec.shape) != tuple(flat_g[key].shape):
            raise UserError(
                f"Keras {architecture}: {key} has shape {flat_g[key].shape}, "
                f"cnnjax expects {spec.shape}."
            )
