"""Activation capture, default layers and the feature-map figure (cnnjax.viz.feature_maps)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from viz_testing import check_png, digit_images, lenet, stand_in_variables

from cnnjax.errors import UserError
from cnnjax.models import get_model
from cnnjax.viz import feature_maps


def _x(n=2, channels=1, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, 32, 32, channels)), jnp.float32)


def test_capture_equals_the_layer_computed_directly():
    model, variables = lenet(1)
    params = variables["params"]
    x = _x()
    acts = feature_maps.capture(model, variables, x, ["conv2", "conv1"])
    assert list(acts) == ["conv2", "conv1"]
    conv1 = nn.Conv(8, (5, 5), padding="VALID").apply({"params": params["conv1"]}, x)
    np.testing.assert_allclose(acts["conv1"], conv1, rtol=1e-5, atol=1e-5)
    pooled = nn.max_pool(nn.relu(conv1), (2, 2), strides=(2, 2))
    conv2 = nn.Conv(16, (5, 5), padding="VALID").apply({"params": params["conv2"]}, pooled)
    np.testing.assert_allclose(acts["conv2"], conv2, rtol=1e-5, atol=1e-5)
    assert acts["conv2"].shape == (2, 10, 10, 16)


def test_capture_unknown_layer():
    model, variables = lenet(1)
    with pytest.raises(UserError, match="conv1"):
        feature_maps.capture(model, variables, _x(1), ["conv_1"])


def test_module_outputs_in_call_order():
    model, variables = lenet(1)
    outputs = feature_maps.module_outputs(model, variables, (1, 32, 32, 1))
    assert [o.path for o in outputs] == ["conv1", "conv2", "fc1", "fc2", "head"]
    assert outputs[0].shape == (1, 28, 28, 8) and outputs[0].is_conv
    assert not outputs[2].is_conv


@pytest.mark.parametrize(
    "name, kwargs, shape, expected",
    [
        ("lenet5", {}, (1, 32, 32, 1), ["conv1", "conv2"]),
        (
            "vgg11",
            {"head": "cifar"},
            (1, 32, 32, 3),
            ["block1_conv1", "block2_conv1", "block3_conv2", "block4_conv2", "block5_conv2"],
        ),
        (
            "resnet18",
            {"stem": "cifar"},
            (1, 32, 32, 3),
            [
                "stem_conv",
                "stage1_block2/conv2",
                "stage2_block2/conv2",
                "stage3_block2/conv2",
                "stage4_block2/conv2",
            ],
        ),
    ],
)
def test_default_layers(name, kwargs, shape, expected):
    model = get_model(name, num_classes=10, **kwargs)
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    assert feature_maps.default_layers(model, variables, shape) == expected


def test_default_layers_keeps_at_most_max_layers():
    model = get_model("fashion_mnist_cnn", num_classes=10)  # conv1..conv5, no block names.
    x = jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    assert feature_maps.default_layers(model, variables, x.shape) == [
        f"conv{i}" for i in range(1, 6)
    ]
    assert feature_maps.default_layers(model, variables, x.shape, max_layers=3) == [
        "conv1",
        "conv3",
        "conv5",
    ]


def _tile_counts(fig):
    panels = fig.subfigs[1].subfigs  # Row 0: title; row 1: input + one panel per layer.
    return [sum(len(ax.images) for ax in sf.axes) for sf in panels if sf.get_visible()]


def test_feature_maps_figure(tmp_path):
    model, variables = lenet(1)
    images, _ = digit_images(1)
    path = tmp_path / "maps.png"
    fig = feature_maps.feature_maps(model, variables, images[0], [0.2], [0.3], path=str(path))
    assert _tile_counts(fig) == [1, 8, 16]  # The input, then min(channels, 64) per layer.
    titles = [sf._suptitle.get_text() for sf in fig.subfigs[1].subfigs if sf._suptitle]
    assert titles[1].startswith("conv1") and titles[2].startswith("conv2")
    for sf in fig.subfigs[1].subfigs[1:]:
        for ax in sf.axes:
            data = np.asarray(ax.images[0].get_array())
            assert data.min() >= 0.0 and data.max() <= 1.0
    check_png(path)


def test_feature_maps_caps_the_channels(tmp_path):
    model = get_model("cifar_conv64_pool_dense32", num_classes=10)  # conv1: 64 channels.
    variables = stand_in_variables(model, (1, 16, 16, 3))
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    path = tmp_path / "caps.png"
    fig = feature_maps.feature_maps(
        model, variables, image, [0.5] * 3, [0.25] * 3, ["conv1"], max_maps=10, path=str(path)
    )
    assert _tile_counts(fig) == [1, 10]
    assert "first 10 shown" in fig.subfigs[1].subfigs[1]._suptitle.get_text()
    check_png(path)
