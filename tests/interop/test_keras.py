"""Keras applications -> cnnjax: outputs agree to 1e-4 in float32 (Keras built with
weights=None: no download). Every BatchNorm statistic and bias is randomized first, so the test
sees a wrong mapping, a missed bias fold or a transposed depthwise kernel."""

import functools
import os
import warnings

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")
# Keras 3 on NumPy 2 warns on every weight read; it says nothing about this project.
warnings.filterwarnings("ignore", category=DeprecationWarning, module="keras")

from cnnjax.data import pipeline, preprocessing  # noqa: E402
from cnnjax.errors import UserError  # noqa: E402
from cnnjax.interop.keras import import_keras, preprocess, read_keras  # noqa: E402
from cnnjax.models import get_model  # noqa: E402

APPS = {
    # Keras flattens VGG's last map, cnnjax pools it to 7x7 (torchvision): equal at 224 only.
    "VGG16": (224, "vgg16"),
    "VGG19": (224, "vgg19"),
    "ResNet50": (64, "resnet50"),
    "ResNet101": (64, "resnet101"),
    "ResNet152": (64, "resnet152"),
    "Xception": (71, "xception"),  # Keras' smallest input for Xception.
    "MobileNet": (32, "mobilenet_v1"),
}


def randomized(keras_model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in keras_model.layers:
        for w in layer.weights:
            name = w.path.split("/")[-1]
            if name in ("moving_mean", "beta", "bias"):
                w.assign(rng.normal(0, 0.1, w.shape).astype("float32"))
            elif name in ("moving_variance", "gamma"):
                w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32"))
    return keras_model


def build(app: str, size: int):
    fn = getattr(keras.applications, app)
    return randomized(fn(weights=None, input_shape=(size, size, 3), classifier_activation=None))


@functools.cache
def built(app: str, size: int):
    """`build`, once per process: a Keras ResNet-50 takes seconds to build and several tests
    read the same one (none changes it)."""
    return build(app, size)


def compare(keras_model, model, variables, size, seed=1):
    x = np.random.default_rng(seed).normal(0, 1, (2, size, size, 3)).astype("float32")
    ref = np.asarray(keras_model(x, training=False))
    out = np.asarray(model.apply(variables, x, train=False))
    assert ref.std() > 1e-2  # The comparison means something.
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    np.testing.assert_allclose(jax.nn.softmax(out), jax.nn.softmax(ref), atol=1e-4)


@pytest.mark.parametrize("app", list(APPS))
def test_outputs_match_keras(app):
    size, name = APPS[app]
    km = built(app, size)
    model, variables = import_keras(km)
    reference = get_model(name, num_classes=1000)
    assert type(model) is type(reference)
    assert getattr(model, "stage_sizes", None) == getattr(reference, "stage_sizes", None)
    compare(km, model, variables, size)


def test_resnet_biases_are_folded_not_added():
    km = built("ResNet50", 64)
    model, variables = import_keras(km)
    params = sum(int(np.size(v)) for v in jax.tree.leaves(variables["params"]))
    keras_trainable = sum(int(np.size(w)) for w in km.trainable_weights)
    conv_biases = sum(
        int(np.size(lay.bias))
        for lay in km.layers
        if isinstance(lay, keras.layers.Conv2D) and lay.use_bias
    )
    assert params == keras_trainable - conv_biases == 25_557_032


def test_keras_and_legacy_h5_files(tmp_path):
    km = build("MobileNet", 32)
    km.save(tmp_path / "m.keras")
    km.save(tmp_path / "m.h5")  # Legacy HDF5: read with h5py alone.
    for path in ("m.keras", "m.h5"):
        model, variables = import_keras(str(tmp_path / path), input_shape=(32, 32, 3))
        compare(km, model, variables, 32)


def test_unsupported_models_and_files_are_user_errors(tmp_path):
    small = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3, name="c")])
    with pytest.raises(UserError, match="Not a supported Keras application"):
        import_keras(small)
    with pytest.raises(UserError, match="does not exist"):
        import_keras(str(tmp_path / "nope.h5"))


def test_preprocessing_conventions():
    x = np.full((1, 2, 2, 3), [255.0, 0.0, 127.5], np.float32)
    np.testing.assert_allclose(preprocess(x, "xception")[0, 0, 0], [1.0, -1.0, 0.0])
    # caffe: RGB -> BGR, minus the ImageNet BGR mean.
    np.testing.assert_allclose(
        preprocess(x, "resnet50")[0, 0, 0], [127.5 - 103.939, 0 - 116.779, 255 - 123.68], rtol=1e-6
    )


def test_rgb_import_with_caffe_normalization_computes_what_keras_does():
    """The init.keras_weights path: "caffe" weights with their first conv reversed read RGB
    normalized by data.normalization=caffe, and give Keras' outputs on its BGR input."""
    km = built("ResNet50", 64)
    model, variables, architecture = read_keras(km, rgb=True)
    assert architecture == "resnet50"
    pixels = np.random.default_rng(2).integers(0, 256, (2, 64, 64, 3)).astype(np.float32)
    ref = np.asarray(km(preprocess(pixels, "resnet50"), training=False))
    x = pipeline.normalize(pixels, *preprocessing.mean_std("caffe", 3))
    out = np.asarray(model.apply(variables, x, train=False))
    assert ref.std() > 1e-2
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    _, bgr_variables = import_keras(km)  # Without the reversal the RGB input is read wrongly.
    wrong = np.asarray(model.apply(bgr_variables, x, train=False))
    assert np.abs(wrong - ref).max() > 1e-2 * np.abs(ref).max()
