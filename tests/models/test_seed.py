"""The small Keras-convention networks of cnnjax/models/seed.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.models import get_model, seed

CIFAR = (32, 32, 3)
MNIST = (28, 28, 1)

# Trainable counts of the Keras equivalents (Conv2D/Dense with bias; built with Keras 3.15.1 and
# model.count_params(); by hand: conv k·k·Cin·Cout + Cout, dense in·out + out):
EXPECTED = {
    # conv 3·3·3·64+64 = 1,792; 30·30·64 = 57,600 -> 32: 1,843,232; 32 -> 10: 330.
    "cifar_conv64_dense32": (CIFAR, 1_845_354),
    # pool -> 15·15·64 = 14,400 -> 32: 460,832; + 1,792 + 330.
    "cifar_conv64_pool_dense32": (CIFAR, 462_954),
    # convs 1,792 + 36,928; 8·8·64 = 4,096 -> 128: 524,416; 128 -> 10: 1,290.
    "cifar_2conv_pool_dense128": (CIFAR, 564_426),
    # conv 3·3·1·64+64 = 640; 26·26·64 = 43,264 -> 10: 432,650.
    "mnist_conv64": (MNIST, 433_290),
    # convs 3,200 + 73,856 + 147,584 + 295,168 + 590,080; 3·3·256 = 2,304 -> 128: 295,040;
    # 128 -> 64: 8,256; 64 -> 10: 650 (the Fashion-MNIST CNN of Géron's book, 1,413,834).
    "fashion_mnist_cnn": (MNIST, 1_413_834),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_param_counts(name, count_params):
    shape, expected = EXPECTED[name]
    assert count_params(get_model(name, num_classes=10), shape) == (expected, 0)


def test_fashion_mnist_layers(abstract_output):
    _, variables = abstract_output(seed.fashion_mnist_cnn(num_classes=10), MNIST)
    params = variables["params"]
    assert params["conv1"]["kernel"].shape == (7, 7, 1, 64)
    assert [params[f"conv{i}"]["kernel"].shape[-1] for i in range(1, 6)] == [64, 128, 128, 256, 256]
    assert params["fc1"]["kernel"].shape == (3 * 3 * 256, 128)
    assert sorted(params) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc1", "fc2", "head"]


def test_features_without_classifier(abstract_output):
    out, _ = abstract_output(seed.fashion_mnist_cnn(num_classes=None), MNIST)
    assert out.shape == (2, 64)
    out, _ = abstract_output(seed.mnist_conv64(num_classes=None), MNIST)
    assert out.shape == (2, 26 * 26 * 64)


def test_dropout_only_in_training(stand_in_variables, fast_jit):
    model = seed.fashion_mnist_cnn(num_classes=10)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, *MNIST)), jnp.float32)
    variables = stand_in_variables(model, x)

    @fast_jit
    def run(variables, x):
        a = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
        b = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)})
        return a, b, model.apply(variables, x, train=False)

    a, b, c = run(variables, x)
    assert not np.allclose(a, b)
    assert np.isfinite(np.asarray(c)).all()
    np.testing.assert_array_equal(c, run(variables, x)[2])


def test_bf16(check_bf16):
    check_bf16(seed.cifar_2conv_pool_dense128(num_classes=10, dtype=jnp.bfloat16), CIFAR, 10)
