"""Xception (cnnjax/models/xception.py), checked against keras.applications.Xception."""

import jax.numpy as jnp

from cnnjax.models import get_model, xception

IMAGENET = (299, 299, 3)
SMALLEST = (71, 71, 3)


def test_param_counts(count_params):
    # Keras applications docs: Xception 22.9M params; keras.applications.Xception(weights=None)
    # in Keras 3.15.1: 22,855,952 trainable + 54,528 non-trainable = 22,910,480.
    assert count_params(get_model("xception", num_classes=1000), IMAGENET) == (22_855_952, 54_528)


def test_backbone_count(count_params):
    # Keras 3.15.1, Xception(include_top=False): 20,806,952 trainable (no 2048·1000 + 1000 head).
    assert count_params(xception.Xception(num_classes=None), IMAGENET) == (20_806_952, 54_528)


def test_keras_layer_names(abstract_output):
    _, variables = abstract_output(get_model("xception", num_classes=1000), IMAGENET)
    params = variables["params"]
    expected = {"block1_conv1", "block1_conv1_bn", "block1_conv2", "block1_conv2_bn", "predictions"}
    expected |= {f"block{b}_sepconv{i}" for b in (2, 3, 4, 13, 14) for i in (1, 2)}
    expected |= {f"block{b}_sepconv{i}" for b in range(5, 13) for i in (1, 2, 3)}
    expected |= {f"block{b}_residual_{k}" for b in (2, 3, 4, 13) for k in ("conv", "bn")}
    assert set(params) == expected
    sep = params["block14_sepconv2"]
    assert sep["sepconv"]["depthwise"]["kernel"].shape == (3, 3, 1, 1536)
    assert set(sep["sepconv"]["pointwise"]) == {"kernel"}  # use_bias=False, as Keras
    assert sep["sepconv"]["pointwise"]["kernel"].shape == (1, 1, 1536, 2048)
    assert set(sep["bn"]) == {"scale", "bias"}


def test_separable_block_on_its_own(count_params, abstract_output):
    block = xception.SeparableConvBN(32)
    out, variables = abstract_output(block, (8, 8, 16))
    assert out.shape == (2, 8, 8, 32)
    # depthwise 3·3·16 + pointwise 16·32 + BN 2·32; statistics 2·32.
    assert count_params(block, (8, 8, 16)) == (144 + 512 + 64, 64)
    assert variables["batch_stats"]["bn"]["mean"].shape == (32,)


def test_features_without_classifier(abstract_output):
    out, _ = abstract_output(xception.Xception(num_classes=None), IMAGENET)
    # Keras' layer shapes: block1_conv2_act 147, block2 add 74, block3 37, block12 19, block14 10.
    assert {k: v.shape for k, v in out.items()} == {
        "stem": (2, 147, 147, 64),
        "stage1": (2, 74, 74, 128),
        "stage2": (2, 37, 37, 256),
        "stage3": (2, 19, 19, 728),
        "stage4": (2, 10, 10, 2048),
    }


def test_bf16(check_bf16):
    check_bf16(xception.Xception(num_classes=5, dtype=jnp.bfloat16), SMALLEST, 5)
