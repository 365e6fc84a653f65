"""Walks the whole model registry: init, forward in train and eval, BatchNorm statistics."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.errors import UserError
from cnnjax.models import MODELS, get_model, list_models

CIFAR = (32, 32, 3)
MNIST = (28, 28, 1)
VGG_SMALL = (CIFAR, {"head": "cifar"})  # The ImageNet head is tested in test_vgg.py.

# name -> (a small input the model accepts, constructor kwargs for the walk). Every registered
# name must be here, so a new model cannot skip the walk.
SMALL = {
    "lenet5": (CIFAR, {}),
    "cifar_conv64_dense32": (CIFAR, {}),
    "cifar_conv64_pool_dense32": (CIFAR, {}),
    "cifar_2conv_pool_dense128": (CIFAR, {}),
    "mnist_conv64": (MNIST, {}),
    "fashion_mnist_cnn": (MNIST, {}),
    "vgg_blocks": (CIFAR, {}),
    "separable_vgg_blocks": (CIFAR, {}),
    **{f"vgg{d}{bn}": VGG_SMALL for d in (11, 13, 16, 19) for bn in ("", "_bn")},
    "resnet18": (CIFAR, {}),
    "resnet34": (CIFAR, {}),
    "resnet50": (CIFAR, {}),
    "resnet101": (CIFAR, {}),
    "resnet152": (CIFAR, {}),
    "xception": ((71, 71, 3), {}),  # Keras' minimum input size.
    "mobilenet_v1": (CIFAR, {}),
    "alexnet": ((64, 64, 3), {"fc_units": 256}),  # Small fc layers: 61M params are all fc.
    "googlenet": (CIFAR, {}),
    # Segmentation: logits per pixel; the CPU-sized backbone (VGG-16's has 134M parameters).
    **{f"fcn{v}": (CIFAR, {"backbone": "small"}) for v in ("8s", "16s", "32s")},
    "grid_detector": (CIFAR, {}),  # Raw per-cell predictions (N, 4, 4, 5 + classes).
}
SEGMENTATION = {"fcn8s", "fcn16s", "fcn32s"}

# Names SPEC.md section 3 fixes.
SPEC_NAMES = {
    "lenet5", "vgg_blocks", "separable_vgg_blocks", "cifar_conv64_dense32",
    "cifar_conv64_pool_dense32", "cifar_2conv_pool_dense128", "mnist_conv64",
    "fashion_mnist_cnn", "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn",
    "vgg16_bn", "vgg19_bn", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "xception", "mobilenet_v1",
}  # fmt: skip

NUM_CLASSES = 7


def test_every_registered_model_has_a_small_setup():
    assert set(SMALL) == set(list_models())


def test_spec_names_are_registered():
    assert SPEC_NAMES <= set(MODELS)


def test_list_models_sorted():
    assert list_models() == sorted(MODELS)


def test_unknown_name_suggests():
    with pytest.raises(UserError, match="resnet18"):
        get_model("resnet19", num_classes=10)


def test_unknown_kwarg_is_a_user_error():
    with pytest.raises(UserError, match="takes no argument .depth."):
        get_model("resnet18", num_classes=10, depth=18)


def _train_and_eval(model, variables, x):
    train = model.apply(
        variables, x, train=True, rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"]
    )
    return train, model.apply(variables, x, train=False, mutable=["batch_stats"])


# Drawing every model's initial weights with `model.init` compiles one random-number kernel per
# parameter and took minutes for the zoo on 2 CPU cores; compiling the forward passes with XLA's
# optimizations took another minute. So the walk runs `init` abstractly (`jax.eval_shape` traces
# all of it: every initializer, every shape), fills the variables with NumPy (conftest.py), and
# runs the forward passes either op by op (ResNet and VGG: their repeated blocks, and the depth
# variants, share each compiled op, so ResNet-152 costs little after ResNet-101) or as one
# function compiled for speed of compilation (conftest.py). test_resnet.py runs a real `init`.
EAGER = ("resnet", "vgg1")


@pytest.mark.parametrize("name", sorted(SMALL))
def test_walk(name, stand_in_variables, fast_jit):
    shape, kwargs = SMALL[name]
    model = get_model(name, num_classes=NUM_CLASSES, **kwargs)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, *shape)), jnp.float32)
    variables = stand_in_variables(model, x)
    stats = variables.get("batch_stats")

    run = functools.partial(_train_and_eval, model)
    if not name.startswith(EAGER):
        run = fast_jit(run)
    (logits, updates), (eval_logits, eval_updates) = run(variables, x)

    for out in (logits, eval_logits):
        expected = (2, *shape[:2], NUM_CLASSES) if name in SEGMENTATION else (2, NUM_CLASSES)
        if name == "grid_detector":
            expected = (2, shape[0] // 8, shape[1] // 8, 5 + NUM_CLASSES)
        assert out.shape == expected
        assert np.isfinite(np.asarray(out)).all()
    if stats is None:
        assert "batch_stats" not in updates
    else:
        # NumPy, not jnp: an eager jnp op compiles once per leaf shape, seconds for GoogLeNet.
        changed = jax.tree.map(
            lambda a, b: bool(np.any(a != np.asarray(b))), stats, updates["batch_stats"]
        )
        assert all(jax.tree.leaves(changed)), "every BatchNorm's statistics move in training"
        same = jax.tree.map(lambda a, b: np.array_equal(a, b), stats, eval_updates["batch_stats"])
        assert all(jax.tree.leaves(same)), "evaluation must not touch BatchNorm statistics"
