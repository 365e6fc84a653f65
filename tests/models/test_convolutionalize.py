"""convolutionalize: dense heads as convolutions; 1×1 grid = the dense model; sliding windows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.errors import UserError
from cnnjax.models import convolutionalize, get_model


def _x(shape, seed=1):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((2, *shape)), jnp.float32)


def _apply(model, fast_jit):
    return fast_jit(lambda v, x: model.apply(v, x, train=False))


def _close(actual, expected):
    expected = np.asarray(expected)
    scale = float(np.abs(expected).max())
    assert scale > 0
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize(
    "name, shape, kwargs",
    [
        ("lenet5", (32, 32, 1), {}),
        ("cifar_conv64_pool_dense32", (32, 32, 3), {}),
        ("mnist_conv64", (28, 28, 1), {}),
        ("vgg_blocks", (32, 32, 3), {"filters": (4, 8, 8)}),
        # The ImageNet head at 224×224, where VGG's adaptive pool is the identity; tiny widths.
        ("vgg11", (224, 224, 3), {"filters": (4, 4, 4, 4, 4), "fc_units": 8}),
    ],
)
def test_training_size_gives_the_dense_logits(name, shape, kwargs, stand_in_variables, fast_jit):
    model = get_model(name, num_classes=7, **kwargs)
    x = _x(shape)
    variables = stand_in_variables(model, x)
    conv_model, conv_variables = convolutionalize(model, variables)
    grid = _apply(conv_model, fast_jit)(conv_variables, x)
    assert grid.shape == (2, 1, 1, 7)
    _close(grid[:, 0, 0], _apply(model, fast_jit)(variables, x))


@pytest.mark.parametrize(
    "name, train_shape, big, stride",
    [
        ("lenet5", (32, 32, 1), (40, 48, 1), 4),
        ("cifar_conv64_pool_dense32", (32, 32, 3), (36, 38, 3), 2),
    ],
)
def test_cells_are_the_dense_model_on_crops(
    name, train_shape, big, stride, stand_in_variables, fast_jit
):
    model = get_model(name, num_classes=5)
    h, w = train_shape[:2]
    variables = stand_in_variables(model, _x(train_shape))
    conv_model, conv_variables = convolutionalize(model, variables)
    x = _x(big, seed=2)[:1]
    grid = np.asarray(_apply(conv_model, fast_jit)(conv_variables, x))[0]
    rows, cols = (big[0] - h) // stride + 1, (big[1] - w) // stride + 1
    assert grid.shape == (rows, cols, 5)
    crops = jnp.concatenate(
        [
            x[:, i * stride : i * stride + h, j * stride : j * stride + w]
            for i in range(rows)
            for j in range(cols)
        ]
    )
    dense = _apply(model, fast_jit)(variables, crops)
    _close(grid.reshape(rows * cols, 5), dense)


@pytest.mark.parametrize(
    "name, kwargs, shape, grid_hw, classifier",
    [
        ("resnet18", {"stem": "cifar", "num_filters": 4}, (40, 40, 3), (5, 5), "head"),
        ("mobilenet_v1", {"alpha": 0.25}, (64, 64, 3), (2, 2), "conv_preds"),
    ],
)
def test_global_pool_grid_mean_is_the_pooled_logits(
    name, kwargs, shape, grid_hw, classifier, stand_in_variables, fast_jit
):
    """Global-pool heads: a 1×1 conv at every position; its mean is the dense logits."""
    model = get_model(name, num_classes=6, **kwargs)
    x = _x(shape)
    variables = stand_in_variables(model, x)
    conv_model, conv_variables = convolutionalize(model, variables)
    assert set(conv_variables["batch_stats"]) == {"trunk"}
    assert conv_variables["params"]["classifier"][classifier]["kernel"].shape[:2] == (1, 1)
    grid = _apply(conv_model, fast_jit)(conv_variables, x)
    assert grid.shape == (2, *grid_hw, 6)
    _close(grid.mean(axis=(1, 2)), _apply(model, fast_jit)(variables, x))


def test_weights_are_the_dense_kernels_reshaped(stand_in_variables):
    model = get_model("lenet5", num_classes=10)
    variables = stand_in_variables(model, _x((32, 32, 3)))
    _, conv_variables = convolutionalize(model, variables)
    params, conv = variables["params"], conv_variables["params"]
    assert set(conv) == {"trunk", "classifier"}
    assert set(conv["trunk"]) == {"conv1", "conv2"}
    fc1 = conv["classifier"]["fc1"]["kernel"]
    assert fc1.shape == (5, 5, 16, 120)
    # Row-major flatten of (h, w, c): row (i·5 + j)·16 + c.
    np.testing.assert_array_equal(fc1[2, 3, 7], params["fc1"]["kernel"][(2 * 5 + 3) * 16 + 7])
    assert conv["classifier"]["head"]["kernel"].shape == (1, 1, 84, 10)


def test_non_square_training_size_needs_input_shape(stand_in_variables, fast_jit):
    model = get_model("lenet5", num_classes=3)
    x = _x((32, 40, 1))  # a 5×7×16 map
    variables = stand_in_variables(model, x)
    with pytest.raises(UserError, match="input_shape"):
        convolutionalize(model, variables)
    with pytest.raises(UserError, match="input_shape"):
        convolutionalize(model, variables, input_shape=(32, 32, 1))
    conv_model, conv_variables = convolutionalize(model, variables, input_shape=(32, 40, 1))
    assert conv_variables["params"]["classifier"]["fc1"]["kernel"].shape == (5, 7, 16, 120)
    grid = _apply(conv_model, fast_jit)(conv_variables, x)
    _close(grid[:, 0, 0], _apply(model, fast_jit)(variables, x))


def test_user_errors(abstract_output):
    alexnet = get_model("alexnet", num_classes=3, fc_units=8)
    _, variables = abstract_output(alexnet, (64, 64, 3))
    with pytest.raises(UserError, match="does not support AlexNet"):
        convolutionalize(alexnet, variables)
    with pytest.raises(UserError, match="num_classes=None"):
        convolutionalize(get_model("lenet5", num_classes=None), {"params": {}})

    lenet = get_model("lenet5", num_classes=3)
    _, variables = abstract_output(lenet, (32, 32, 1))
    conv_model, conv_variables = convolutionalize(lenet, variables)  # abstract variables work
    big = jax.ShapeDtypeStruct((1, 40, 48, 1), jnp.float32)
    out = jax.eval_shape(lambda v, x: conv_model.apply(v, x, train=False), conv_variables, big)
    assert out.shape == (1, 3, 5, 3)
    small = jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32)
    with pytest.raises(UserError, match="smaller than the classifier's window"):
        jax.eval_shape(lambda v, x: conv_model.apply(v, x, train=False), conv_variables, small)
