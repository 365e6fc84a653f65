"""MobileNet v1 (cnnjax/models/mobilenet.py), checked against keras.applications.MobileNet."""

import jax.numpy as jnp
import pytest

from cnnjax.models import get_model, mobilenet

IMAGENET = (224, 224, 3)


def test_param_counts(count_params):
    # keras.applications.MobileNet(weights=None) in Keras 3.15.1: 4,231,976 trainable +
    # 21,888 non-trainable = 4,253,864 (Keras applications docs: 4.3M).
    model = get_model("mobilenet_v1", num_classes=1000)
    assert count_params(model, IMAGENET) == (4_231_976, 21_888)


@pytest.mark.parametrize(
    "alpha, expected",
    # Keras 3.15.1, MobileNet(alpha=..., weights=None).
    [(0.5, (1_331_592, 10_944)), (0.25, (470_072, 5_472))],
)
def test_width_multiplier(alpha, expected, count_params):
    assert count_params(mobilenet.MobileNetV1(alpha=alpha), IMAGENET) == expected


def test_keras_layer_names(abstract_output):
    _, variables = abstract_output(get_model("mobilenet_v1", num_classes=1000), IMAGENET)
    params = variables["params"]
    expected = {"conv1", "conv1_bn", "conv_preds"}
    for i in range(1, 14):
        expected |= {f"conv_dw_{i}", f"conv_dw_{i}_bn", f"conv_pw_{i}", f"conv_pw_{i}_bn"}
    assert set(params) == expected
    assert params["conv_dw_2"]["kernel"].shape == (3, 3, 1, 64)
    assert "bias" not in params["conv_pw_2"]
    assert params["conv_preds"]["kernel"].shape == (1, 1, 1024, 1000)
    assert params["conv_preds"]["bias"].shape == (1000,)


def test_features_without_classifier(abstract_output):
    out, _ = abstract_output(mobilenet.MobileNetV1(num_classes=None), IMAGENET)
    assert {k: v.shape for k, v in out.items()} == {
        "stem": (2, 112, 112, 64),
        "stage1": (2, 56, 56, 128),
        "stage2": (2, 28, 28, 256),
        "stage3": (2, 14, 14, 512),
        "stage4": (2, 7, 7, 1024),
    }


def test_bf16(check_bf16):
    check_bf16(mobilenet.MobileNetV1(num_classes=10, dtype=jnp.bfloat16), (32, 32, 3), 10)
