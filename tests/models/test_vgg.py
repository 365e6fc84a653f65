"""VGG-11/13/16/19 with and without BatchNorm (cnnjax/models/vgg.py)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.errors import UserError
from cnnjax.models import get_model, vgg

IMAGENET = (224, 224, 3)
CIFAR = (32, 32, 3)
STAGES = {"vgg11": (1, 1, 2, 2, 2), "vgg13": (2, 2, 2, 2, 2),
          "vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}  # fmt: skip

# 224×224×3, 1000 classes. vgg16 and vgg19: Keras applications (VGG16 138,357,544; VGG19
# 143,667,240, also rebuilt with Keras 3.15.1); the others: torchvision's model docs. All also
# equal `_by_hand` below.
EXPECTED = {
    "vgg11": 132_863_336,
    "vgg13": 133_047_848,
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
    "vgg11_bn": 132_868_840,
    "vgg13_bn": 133_053_736,
    "vgg16_bn": 138_365_992,
    "vgg19_bn": 143_678_248,
}


def _by_hand(stages, batch_norm, head="imagenet", classes=1000):
    """Trainable parameters: 3×3 convs with bias, BN scale+bias, the dense head."""
    total, cin = 0, 3
    for n, f in zip(stages, (64, 128, 256, 512, 512), strict=True):
        for _ in range(n):
            total += 9 * cin * f + f + (2 * f if batch_norm else 0)
            cin = f
    if head == "cifar":
        return total + 512 * classes + classes
    return total + (7 * 7 * 512 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * classes + classes)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_param_counts(name, count_params):
    stages = STAGES[name.removesuffix("_bn")]
    trainable, stats = count_params(get_model(name, num_classes=1000), IMAGENET)
    assert trainable == EXPECTED[name] == _by_hand(stages, name.endswith("_bn"))
    # Running mean and variance (not trainable) are as many as BN's scale and bias.
    assert stats == trainable - _by_hand(stages, False)


def test_cifar_head_count(count_params):
    # 14,714,688 conv + 8,448 BN + 512·10 + 10 = 14,728,266 (the vgg16_cifar experiment).
    model = get_model("vgg16_bn", num_classes=10, head="cifar")
    assert count_params(model, CIFAR) == (14_728_266, 8_448)
    assert _by_hand(STAGES["vgg16"], True, head="cifar", classes=10) == 14_728_266


def test_keras_layer_names(abstract_output):
    _, variables = abstract_output(get_model("vgg16", num_classes=1000), IMAGENET)
    expected = {
        f"block{b}_conv{i}" for b, n in enumerate(STAGES["vgg16"], 1) for i in range(1, n + 1)
    }
    assert set(variables["params"]) == expected | {"fc1", "fc2", "predictions"}
    _, variables = abstract_output(vgg.vgg11_bn(num_classes=10, head="cifar"), CIFAR)
    assert "block1_conv1_bn" in variables["params"]
    assert set(variables["batch_stats"]["block5_conv2_bn"]) == {"mean", "var"}


def test_imagenet_head_on_a_small_input(stand_in_variables, fast_jit):
    # Adaptive pooling repeats the 1×1 map of a 32×32 input to 7×7, as torchvision does.
    model = vgg.vgg11(num_classes=5, fc_units=8)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, *CIFAR)), jnp.float32)
    variables = stand_in_variables(model, x)
    assert variables["params"]["fc1"]["kernel"].shape == (7 * 7 * 512, 8)
    train = fast_jit(functools.partial(model.apply, train=True))
    out = train(variables, x, rngs={"dropout": jax.random.key(1)})
    assert out.shape == (2, 5)
    assert np.isfinite(np.asarray(out)).all()


def test_features_without_classifier(abstract_output):
    out, variables = abstract_output(vgg.vgg16(num_classes=None), IMAGENET)
    assert {k: v.shape for k, v in out.items()} == {
        "block1": (2, 112, 112, 64),
        "block2": (2, 56, 56, 128),
        "block3": (2, 28, 28, 256),
        "block4": (2, 14, 14, 512),
        "block5": (2, 7, 7, 512),
    }
    assert "fc1" not in variables["params"]


def test_unknown_head(count_params):
    with pytest.raises(UserError, match="head"):
        count_params(vgg.vgg11(num_classes=10, head="tiny"), CIFAR)


def test_bf16(check_bf16):
    check_bf16(vgg.vgg16_bn(num_classes=10, head="cifar", dtype=jnp.bfloat16), CIFAR, 10)
