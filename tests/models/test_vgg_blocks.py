"""vgg_blocks and separable_vgg_blocks (cnnjax/models/vgg_blocks.py)."""

import jax.numpy as jnp

from cnnjax.models import get_model, vgg_blocks

CIFAR = (32, 32, 3)


def test_vgg_blocks_count(count_params):
    # SPEC.md: 1,186,378. By hand: convs 1,792 + 36,928 + 73,856 + 147,584 + 295,168 + 590,080
    # = 1,145,408, then flatten 4·4·256 = 4,096 -> 10: 40,970. No hidden dense layer needed.
    assert count_params(get_model("vgg_blocks", num_classes=10), CIFAR) == (1_186_378, 0)


def test_separable_vgg_blocks_count(count_params):
    # Keras 3.15.1 SeparableConv2D (depthwise 3·3·Cin, no bias; pointwise Cin·Cout + Cout):
    # 283 + 4,736 + 8,896 + 17,664 + 34,176 + 68,096 = 133,851, + dense 40,970 = 174,821.
    model = get_model("separable_vgg_blocks", num_classes=10)
    assert count_params(model, CIFAR) == (174_821, 0)


def test_separable_layer_structure(abstract_output):
    _, variables = abstract_output(vgg_blocks.separable_vgg_blocks(num_classes=10), CIFAR)
    conv = variables["params"]["block2_conv1"]
    assert set(conv["depthwise"]) == {"kernel"}  # no bias
    assert conv["depthwise"]["kernel"].shape == (3, 3, 1, 64)
    assert conv["pointwise"]["kernel"].shape == (1, 1, 64, 128)
    assert conv["pointwise"]["bias"].shape == (128,)


def test_layer_names(abstract_output):
    _, variables = abstract_output(vgg_blocks.vgg_blocks(num_classes=10), CIFAR)
    expected = {f"block{b}_conv{i}" for b in (1, 2, 3) for i in (1, 2)} | {"predictions"}
    assert set(variables["params"]) == expected


def test_features_without_classifier(abstract_output):
    out, _ = abstract_output(vgg_blocks.vgg_blocks(num_classes=None), CIFAR)
    assert {k: v.shape for k, v in out.items()} == {
        "block1": (2, 16, 16, 64),
        "block2": (2, 8, 8, 128),
        "block3": (2, 4, 4, 256),
    }


def test_bf16(check_bf16):
    check_bf16(vgg_blocks.vgg_blocks(num_classes=10, dtype=jnp.bfloat16), CIFAR, 10)
    check_bf16(vgg_blocks.separable_vgg_blocks(num_classes=10, dtype=jnp.bfloat16), CIFAR, 10)
