"""Experiments by name. Each module's `get_config()` returns a locked ConfigDict; the first line
of its docstring is the description `launch.py --list` shows."""

from types import ModuleType

from experiments import (
    cnn_fashion_mnist,
    detect_shapes,
    fcn8s_pets,
    fcn8s_shapes,
    lenet_mnist,
    localize_shapes,
    quickstart,
    resnet18_cifar,
    resnet50_imagenet,
    resnet50_transfer,
    separable_vgg_cifar,
    simple_cnn_cifar,
    vgg16_cifar,
    vgg_blocks_cifar,
    xception_transfer,
)

EXPERIMENTS: dict[str, ModuleType] = {
    "quickstart": quickstart,
    "lenet_mnist": lenet_mnist,
    "cnn_fashion_mnist": cnn_fashion_mnist,
    "simple_cnn_cifar": simple_cnn_cifar,
    "vgg_blocks_cifar": vgg_blocks_cifar,
    "separable_vgg_cifar": separable_vgg_cifar,
    "vgg16_cifar": vgg16_cifar,
    "resnet18_cifar": resnet18_cifar,
    "resnet50_imagenet": resnet50_imagenet,
    "detect_shapes": detect_shapes,
    "localize_shapes": localize_shapes,
    "fcn8s_shapes": fcn8s_shapes,
    "fcn8s_pets": fcn8s_pets,
    "xception_transfer": xception_transfer,
    "resnet50_transfer": resnet50_transfer,
}


def describe(name: str) -> str:
    doc = EXPERIMENTS[name].__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""
