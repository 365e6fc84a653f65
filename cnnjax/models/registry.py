"""Model names -> constructors. A plain dict built from imports; no lookups by attribute name."""

import inspect
from collections.abc import Callable

import flax.linen as nn

from cnnjax.errors import UserError, did_you_mean
from cnnjax.models import (
    classic,
    detector,
    fcn,
    lenet,
    mobilenet,
    resnet,
    seed,
    vgg,
    vgg_blocks,
    xception,
)

MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet5": lenet.LeNet5,
    # Small Keras-convention networks (seed.py).
    "cifar_conv64_dense32": seed.cifar_conv64_dense32,
    "cifar_conv64_pool_dense32": seed.cifar_conv64_pool_dense32,
    "cifar_2conv_pool_dense128": seed.cifar_2conv_pool_dense128,
    "mnist_conv64": seed.mnist_conv64,
    "fashion_mnist_cnn": seed.fashion_mnist_cnn,
    "vgg_blocks": vgg_blocks.vgg_blocks,
    "separable_vgg_blocks": vgg_blocks.separable_vgg_blocks,
    # VGG: head="imagenet" (default) or head="cifar".
    "vgg11": vgg.vgg11,
    "vgg13": vgg.vgg13,
    "vgg16": vgg.vgg16,
    "vgg19": vgg.vgg19,
    "vgg11_bn": vgg.vgg11_bn,
    "vgg13_bn": vgg.vgg13_bn,
    "vgg16_bn": vgg.vgg16_bn,
    "vgg19_bn": vgg.vgg19_bn,
    # ResNet: stem="imagenet" (default) or stem="cifar".
    "resnet18": resnet.resnet18,
    "resnet34": resnet.resnet34,
    "resnet50": resnet.resnet50,
    "resnet101": resnet.resnet101,
    "resnet152": resnet.resnet152,
    "xception": xception.xception,
    "mobilenet_v1": mobilenet.mobilenet_v1,
    "alexnet": classic.alexnet,
    "googlenet": classic.googlenet,
    # FCN segmentation (Long et al. 2015): (N, H, W, 3) -> (N, H, W, num_classes) logits;
    # backbone="vgg16" (default), "resnet18", "resnet50" or "small".
    "fcn32s": fcn.fcn32s,
    "fcn16s": fcn.fcn16s,
    "fcn8s": fcn.fcn8s,
    # Single-shot detection: (N, H, W, 3) -> (N, H // 8, W // 8, 5 + num_classes) per cell.
    "grid_detector": detector.GridDetector,
}


def list_models() -> list[str]:
    """All registered model names, sorted."""
    return sorted(MODELS)


def get_model(name: str, *, num_classes: int | None, **kwargs) -> nn.Module:
    """Builds the registered model `name`; unknown names raise `UserError` with suggestions."""
    if name not in MODELS:
        raise UserError(
            f"Unknown model {name!r}.{did_you_mean(name, MODELS)} "
            f"Run `python -c 'import cnnjax.models as m; print(m.list_models())'` "
            "for the full list."
        )
    constructor = MODELS[name]
    try:
        accepted = set(inspect.signature(constructor).parameters)
    except (TypeError, ValueError):
        accepted = None
    unknown = sorted(set(kwargs) - accepted) if accepted is not None else []
    if unknown:
        choices = sorted(accepted - {"parent", "name", "num_classes", "dtype"})
        raise UserError(
            f"Model {name!r} takes no argument {', '.join(map(repr, unknown))}."
            f"{did_you_mean(unknown[0], choices)} Its arguments: {', '.join(choices)}."
        )
    return constructor(num_classes=num_classes, **kwargs)
