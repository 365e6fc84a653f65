"""Tests for cnnjax/summary.py: parameter, FLOP and memory counts checked against hand counts.

Everything is traced abstractly (jax.eval_shape / jax.make_jaxpr), so even VGG-16 at 224x224 is
summarized in about a second on a CPU.
"""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from cnnjax import ops
from cnnjax.models import get_model, list_models
from cnnjax.models.layers import adaptive_avg_pool
from cnnjax.summary import format_summary, summarize


class OneConv(nn.Module):
    """SPEC.md section 3's worked check: 200 filters 5x5, SAME, stride 1."""

    @nn.compact
    def __call__(self, x, *, train: bool):
        return nn.Conv(200, (5, 5), padding="SAME", name="conv")(x)


@pytest.mark.parametrize("model", [OneConv(), nn.Conv(200, (5, 5), padding="SAME")])
def test_spec_worked_check(model):
    # A bare flax layer (no `train` argument) works too.
    s = summarize(model, (150, 100, 3))
    assert s.trainable_params == 15_200  # 5*5*3*200 + 200
    assert s.non_trainable_params == 0
    assert s.macs == 225_000_000  # 150*100*200 outputs x 5*5*3 multiplications each
    assert s.flops == 450_000_000
    assert s.activation_bytes == 12_000_000  # 150*100*200 float32 = 12 MB
    assert [r.output_shapes for r in s.rows] == [((150, 100, 200),)]
    assert s.param_bytes == 15_200 * 4


def test_lenet5_params_and_macs():
    s = summarize(get_model("lenet5", num_classes=10), (32, 32, 3))
    assert s.trainable_params == 62_958
    # Hand count of multiply-accumulates, layer by layer (5x5 VALID convs, 2x2 pools between):
    #   conv1: 28*28*8 outputs  * (5*5*3) = 6,272 * 75  = 470,400
    #   conv2: 10*10*16 outputs * (5*5*8) = 1,600 * 200 = 320,000
    #   fc1:   400*120                                  =  48,000
    #   fc2:   120*84                                   =  10,080
    #   head:  84*10                                    =     840
    #   total                                           = 849,320 MACs = 1,698,640 FLOPs
    per_layer = {r.path: r.macs for r in s.rows if r.macs}
    assert per_layer == {
        "conv1": 470_400,
        "conv2": 320_000,
        "fc1": 48_000,
        "fc2": 10_080,
        "head": 840,
    }
    assert s.macs == 849_320
    assert s.macs_outside_layers == 0
    shapes = {r.path: r.output_shapes[0] for r in s.rows}
    assert shapes["conv1"] == (28, 28, 8)
    assert shapes["conv2"] == (10, 10, 16)  # the 2x2 pool after conv1 shows as 28 -> 14 -> 10
    assert sum(r.params for r in s.rows) == s.total_params


class ConvBN(nn.Module):
    channels: int = 5

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = nn.Conv(self.channels, (3, 3), use_bias=False, name="conv")(x)
        x = nn.BatchNorm(use_running_average=not train, name="bn")(x)
        return nn.relu(x)


def test_batchnorm_statistics_are_non_trainable():
    c = 5
    s = summarize(ConvBN(channels=c), (8, 8, 3))
    assert s.non_trainable_params == 2 * c  # running mean and variance
    assert s.trainable_params == 3 * 3 * 3 * c + 2 * c  # kernel, then BN scale and bias
    bn = next(r for r in s.rows if r.path == "bn")
    assert (bn.trainable_params, bn.non_trainable_params, bn.params) == (2 * c, 2 * c, 4 * c)
    assert bn.macs == 0  # normalization is not counted

    as_trainable = summarize(ConvBN(channels=c), (8, 8, 3), batch_stats_trainable=True)
    assert as_trainable.non_trainable_params == 0
    assert as_trainable.trainable_params == s.total_params


class SeparableConv(nn.Module):
    """Depthwise 3x3 (feature_group_count = C, no bias) then pointwise 1x1, Keras style."""

    features: int

    @nn.compact
    def __call__(self, x, *, train: bool):
        c = x.shape[-1]
        x = nn.Conv(c, (3, 3), feature_group_count=c, use_bias=False, name="depthwise")(x)
        return nn.Conv(self.features, (1, 1), name="pointwise")(x)


def test_depthwise_conv_macs():
    h, w, c, f = 16, 12, 32, 64
    s = summarize(SeparableConv(features=f), (h, w, c))
    macs = {r.path: r.macs for r in s.rows}
    # Depthwise: each output sees a 3x3 window of its own channel only (kh*kw*in_c/groups = 9).
    assert macs["depthwise"] == h * w * c * 9
    assert macs["pointwise"] == h * w * f * c
    assert s.macs == h * w * c * (9 + f)
    assert s.trainable_params == 3 * 3 * c + c * f + f


class Unusual(nn.Module):
    """Compute that no nn.Conv/nn.Dense row covers, and layers under a lifted transform."""

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = nn.ConvTranspose(4, (3, 3), strides=(2, 2), name="up")(x)  # (4, 4, 3) -> (8, 8, 4)
        x = RawConv(name="raw")(x)  # a leaf module calling lax directly: (8, 8, 4) -> (8, 8, 6)
        x = jnp.einsum("nhwc,cd->nhwd", x, jnp.ones((6, 2)))  # functional, between layers
        x = x.reshape((x.shape[0], -1))
        return nn.remat(nn.Dense)(10, name="fc")(x)


class RawConv(nn.Module):
    @nn.compact
    def __call__(self, x):
        k = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], 6))
        return jax.lax.conv_general_dilated(
            x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )


def test_macs_outside_conv_and_dense_rows_are_counted_once():
    s = summarize(Unusual(), (4, 4, 3))
    macs = {r.path: r.macs for r in s.rows}
    assert macs["up"] == 4 * 4 * 3 * (3 * 3 * 4)  # each input pixel scatters a 3x3x4 kernel
    assert macs["raw"] == 8 * 8 * 6 * (3 * 3 * 4)  # from the traced jaxpr, same convention
    assert macs["fc"] == 128 * 10
    # No row for remat's wrapper; the reshape of the einsum's output is a Flatten row.
    assert [r.path for r in s.rows] == ["up", "raw", "flatten", "fc"]
    assert s.macs_outside_layers == 8 * 8 * 6 * 2  # the einsum
    assert s.macs == sum(macs.values()) + s.macs_outside_layers
    assert "(outside any layer)" in format_summary(s)


class Shared(nn.Module):
    @nn.compact
    def __call__(self, x, *, train: bool):
        dense = nn.Dense(8, name="shared")
        return dense(dense(x))


def test_shared_module_params_once_macs_per_call():
    s = summarize(Shared(), (8,))
    assert [r.path for r in s.rows] == ["shared", "shared"]
    assert [r.params for r in s.rows] == [72, 0]
    assert s.total_params == 72
    assert s.macs == 2 * 8 * 8


def test_format_summary_lenet5():
    text = format_summary(summarize(get_model("lenet5", num_classes=10), (32, 32, 3)))
    for expected in [
        "Layer (type)",
        "Output shape",
        "Param #",
        "FLOPs",
        "conv1 (Conv)",
        "(28, 28, 8)",
        "Trainable params: 62,958",
        "Non-trainable params: 0",
        "Total params: 62,958",
        "Forward FLOPs per image: 1,698,640 (1.70 MFLOPs; 849,320 multiply-accumulates)",
        "Activation memory per image: ",
        "Parameter memory: 251.83 KB (251,832 bytes)",
        "10^3",
    ]:
        assert expected in text, expected


def test_format_summary_spec_units():
    text = format_summary(summarize(OneConv(), (150, 100, 3)))
    assert "Activation memory per image: 12.00 MB (12,000,000 bytes" in text
    assert "(450.00 MFLOPs; 225,000,000 multiply-accumulates)" in text


def test_vgg16_forward_flops():
    if "vgg16" not in list_models():
        pytest.skip("vgg16 is not registered in cnnjax.models yet")
    s = summarize(get_model("vgg16", num_classes=1000), (224, 224, 3))
    # Hand count: 3x3 SAME convs, out_h*out_w*out_c*(3*3*in_c) MACs each, 2x2 pools between.
    #   block1 224x224: conv1  50,176*64*27     =     86,704,128
    #                   conv2  50,176*64*576    =  1,849,688,064
    #   block2 112x112: conv1  12,544*128*576   =    924,844,032
    #                   conv2  12,544*128*1,152 =  1,849,688,064
    #   block3 56x56:   conv1  3,136*256*1,152  =    924,844,032
    #                   conv2  3,136*256*2,304  =  1,849,688,064
    #                   conv3  same             =  1,849,688,064
    #   block4 28x28:   conv1  784*512*2,304    =    924,844,032
    #                   conv2  784*512*4,608    =  1,849,688,064
    #                   conv3  same             =  1,849,688,064
    #   block5 14x14:   conv1..3 196*512*4,608  =  3 x 462,422,016
    #   13 convs                                = 15,346,630,656
    #   fc1 25,088*4,096 = 102,760,448; fc2 4,096*4,096 = 16,777,216; fc3 4,096*1,000 = 4,096,000
    #   3 dense                                 =    123,633,664
    #   total 15,470,264,320 MACs (15.47 GMACs) = 30,940,528,640 FLOPs (30.9 GFLOPs)
    assert s.trainable_params == 138_357_544
    assert s.macs == 15_470_264_320
    assert s.flops == 30_940_528_640


def rows_of(s, activations=True):
    """(path, type, per-image output shape, params) of every row."""
    return [
        (r.path, r.type_name, r.output_shapes[0], r.params)
        for r in s.rows
        if activations or r.type_name != "Activation"
    ]


def test_cifar_2conv_pool_dense128_rows_in_keras_order():
    # Keras: Conv2D(64, 3, padding="same", activation="relu"), MaxPooling2D, the same again,
    # Flatten, Dense(128, activation="relu"), Dense(10); its summary lists these 7 layers.
    s = summarize(get_model("cifar_2conv_pool_dense128", num_classes=10), (32, 32, 3))
    assert rows_of(s) == [
        ("conv1", "Conv", (32, 32, 64), 1_792),
        ("relu", "Activation", (32, 32, 64), 0),
        ("max_pool", "MaxPooling2D", (16, 16, 64), 0),
        ("conv2", "Conv", (16, 16, 64), 36_928),
        ("relu_1", "Activation", (16, 16, 64), 0),
        ("max_pool_1", "MaxPooling2D", (8, 8, 64), 0),
        ("flatten", "Flatten", (4096,), 0),
        ("fc1", "Dense", (128,), 524_416),
        ("relu_2", "Activation", (128,), 0),
        ("head", "Dense", (10,), 1_290),
    ]
    assert s.total_params == 564_426
    assert s.macs == 11_732_224
    # Activation memory counts module rows only (conv1, conv2, fc1, head), as before.
    assert s.activation_bytes == (32 * 32 * 64 + 16 * 16 * 64 + 128 + 10) * 4
    text = format_summary(s)
    assert "max_pool (MaxPooling2D)    (16, 16, 64)" in text
    assert "flatten (Flatten)          (4096,)" in text


def test_valid_conv_pool_flatten_arithmetic():
    # The course table: 30x30x64 -> 15x15x64 -> 14400.
    s = summarize(get_model("cifar_conv64_pool_dense32", num_classes=10), (32, 32, 3))
    shapes = [(r.type_name, r.output_shapes[0]) for r in s.rows if r.type_name != "Activation"]
    assert shapes[:4] == [
        ("Conv", (30, 30, 64)),
        ("MaxPooling2D", (15, 15, 64)),
        ("Flatten", (14_400,)),
        ("Dense", (32,)),
    ]


# Keras Sequentials of the seed CNNs: (model, input shape, Keras layers as (class, kwargs)).
KERAS_SEQUENTIALS = {
    "cifar_2conv_pool_dense128": (
        (32, 32, 3),
        [
            ("Conv2D", dict(filters=64, kernel_size=3, padding="same", activation="relu")),
            ("MaxPooling2D", {}),
            ("Conv2D", dict(filters=64, kernel_size=3, padding="same", activation="relu")),
            ("MaxPooling2D", {}),
            ("Flatten", {}),
            ("Dense", dict(units=128, activation="relu")),
            ("Dense", dict(units=10)),
        ],
    ),
    "cifar_conv64_pool_dense32": (
        (32, 32, 3),
        [
            ("Conv2D", dict(filters=64, kernel_size=3, activation="relu")),
            ("MaxPooling2D", {}),
            ("Flatten", {}),
            ("Dense", dict(units=32, activation="relu")),
            ("Dense", dict(units=10)),
        ],
    ),
    "lenet5": (
        (32, 32, 3),
        [
            ("Conv2D", dict(filters=8, kernel_size=5, activation="relu")),
            ("MaxPooling2D", {}),
            ("Conv2D", dict(filters=16, kernel_size=5, activation="relu")),
            ("MaxPooling2D", {}),
            ("Flatten", {}),
            ("Dense", dict(units=120, activation="relu")),
            ("Dense", dict(units=84, activation="relu")),
            ("Dense", dict(units=10)),
        ],
    ),
    "fashion_mnist_cnn": (
        (28, 28, 1),
        [
            ("Conv2D", dict(filters=64, kernel_size=7, padding="same", activation="relu")),
            ("MaxPooling2D", {}),
            ("Conv2D", dict(filters=128, kernel_size=3, padding="same", activation="relu")),
            ("Conv2D", dict(filters=128, kernel_size=3, padding="same", activation="relu")),
            ("MaxPooling2D", {}),
            ("Conv2D", dict(filters=256, kernel_size=3, padding="same", activation="relu")),
            ("Conv2D", dict(filters=256, kernel_size=3, padding="same", activation="relu")),
            ("MaxPooling2D", {}),
            ("Flatten", {}),
            ("Dense", dict(units=128, activation="relu")),
            ("Dropout", dict(rate=0.5)),
            ("Dense", dict(units=64, activation="relu")),
            ("Dropout", dict(rate=0.5)),
            ("Dense", dict(units=10)),
        ],
    ),
}
# cnnjax module class -> Keras layer class; functional rows already use Keras' names.
KERAS_CLASS = {"Conv": "Conv2D", "Dense": "Dense", "Dropout": "Dropout"}


@pytest.mark.parametrize("name", sorted(KERAS_SEQUENTIALS))
def test_rows_match_the_keras_summary(name):
    """Every Keras layer, in order, with its output shape and parameter count; Keras folds the
    ReLU into Conv2D/Dense, so our Activation rows are left out of the comparison."""
    os.environ.setdefault("KERAS_BACKEND", "jax")  # as tests/interop/test_keras.py
    keras = pytest.importorskip("keras")
    shape, layers = KERAS_SEQUENTIALS[name]
    model = keras.Sequential(
        [keras.Input(shape)] + [getattr(keras.layers, cls)(**kw) for cls, kw in layers]
    )
    expected = [
        (type(layer).__name__, tuple(layer.output.shape[1:]), layer.count_params())
        for layer in model.layers
    ]
    s = summarize(get_model(name, num_classes=10), shape)
    ours = [
        (KERAS_CLASS.get(r.type_name, r.type_name), r.output_shapes[0], r.params)
        for r in s.rows
        if r.type_name != "Activation"
    ]
    assert ours == expected
    assert s.total_params == model.count_params()


def test_lenet5_rows():
    s = summarize(get_model("lenet5", num_classes=10), (32, 32, 3))
    assert rows_of(s) == [
        ("conv1", "Conv", (28, 28, 8), 608),
        ("relu", "Activation", (28, 28, 8), 0),
        ("max_pool", "MaxPooling2D", (14, 14, 8), 0),  # layers.max_pool_2x2: reshape + max
        ("conv2", "Conv", (10, 10, 16), 3_216),
        ("relu_1", "Activation", (10, 10, 16), 0),
        ("max_pool_1", "MaxPooling2D", (5, 5, 16), 0),
        ("flatten", "Flatten", (400,), 0),
        ("fc1", "Dense", (120,), 48_120),
        ("relu_2", "Activation", (120,), 0),
        ("fc2", "Dense", (84,), 10_164),
        ("relu_3", "Activation", (84,), 0),
        ("head", "Dense", (10,), 850),
    ]
    # Totals unchanged by the new rows: 62,958 params, 849,320 MACs, and the activation memory
    # of the module rows only (6,272 + 1,600 + 120 + 84 + 10 elements).
    assert (s.total_params, s.macs) == (62_958, 849_320)
    assert s.activation_bytes == 8_086 * 4
    assert all(r.macs == 0 and r.params == 0 for r in s.rows if not r.is_module)


def test_resnet18_cifar_stem_rows_and_unchanged_totals():
    s = summarize(get_model("resnet18", num_classes=10, stem="cifar"), (32, 32, 3))
    # The numbers `--experiment=resnet18_cifar --mode=summary` printed before functional rows.
    assert (s.trainable_params, s.non_trainable_params) == (11_173_962, 9_600)
    assert s.macs == 555_422_720
    assert s.activation_bytes == 4_915_240
    assert s.param_bytes == 44_734_248
    assert rows_of(s)[:10] == [
        ("stem_conv", "Conv", (32, 32, 64), 1_728),
        ("stem_bn", "BatchNorm", (32, 32, 64), 256),  # Keras' 4 x C, 2 x C non-trainable
        ("relu", "Activation", (32, 32, 64), 0),
        ("stage1_block1/conv1", "Conv", (32, 32, 64), 36_864),
        ("stage1_block1/bn1", "BatchNorm", (32, 32, 64), 256),
        ("stage1_block1/relu", "Activation", (32, 32, 64), 0),
        ("stage1_block1/conv2", "Conv", (32, 32, 64), 36_864),
        ("stage1_block1/bn2", "BatchNorm", (32, 32, 64), 256),
        ("stage1_block1/add", "Add", (32, 32, 64), 0),  # the residual connection
        ("stage1_block1/relu_1", "Activation", (32, 32, 64), 0),
    ]
    assert rows_of(s)[-2:] == [
        ("global_avg_pool", "GlobalAveragePooling2D", (512,), 0),
        ("head", "Dense", (10,), 5_130),
    ]
    kinds = [r.type_name for r in s.rows]
    assert kinds.count("Add") == 8 and kinds.count("Activation") == 17
    assert "MaxPooling2D" not in kinds  # the CIFAR stem has no max-pool
    assert sum(r.is_module for r in s.rows) == 20 + 20 + 1  # stem + 16 + 3 proj convs, BNs, head
    assert "stage4_block2/add (Add)" in format_summary(s)


class Functional(nn.Module):
    """Functional layers written every way the models here write them."""

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = nn.Conv(8, (3, 3), name="conv")(x)  # (16, 16, 8)
        a = nn.avg_pool(x, (2, 2), strides=(2, 2))
        b = nn.avg_pool(x, (3, 3), strides=(2, 2), padding="SAME", count_include_pad=False)
        c = ops.max_pool(x, 2)  # lax.reduce_window with a max computation
        x = jnp.concatenate([jnp.maximum(a, 0), nn.sigmoid(b), jnp.tanh(c)], axis=-1)
        x = nn.Dense(4, name="fc")(x)  # (8, 8, 4)
        gate = nn.sigmoid(x.mean(axis=(1, 2), keepdims=True))
        x = jnp.minimum(nn.relu(x * gate), 6.0)
        x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))  # (9, 9, 4)
        x = adaptive_avg_pool(x[:, :8, :8], (4, 4))  # an even adaptive pool is nn.avg_pool
        return nn.max_pool(x, (2, 2), strides=(2, 2)).reshape((x.shape[0], -1))


def test_functional_layer_patterns():
    s = summarize(Functional(), (16, 16, 3))
    assert [(r.path, r.type_name, r.output_shapes[0]) for r in s.rows] == [
        ("conv", "Conv", (16, 16, 8)),
        ("avg_pool", "AveragePooling2D", (8, 8, 8)),
        ("avg_pool_1", "AveragePooling2D", (8, 8, 8)),
        ("max_pool", "MaxPooling2D", (8, 8, 8)),
        ("relu", "Activation", (8, 8, 8)),
        ("sigmoid", "Activation", (8, 8, 8)),
        ("tanh", "Activation", (8, 8, 8)),
        ("concatenate", "Concatenate", (8, 8, 24)),
        ("fc", "Dense", (8, 8, 4)),
        ("global_avg_pool", "GlobalAveragePooling2D", (1, 1, 4)),
        ("sigmoid_1", "Activation", (1, 1, 4)),
        ("multiply", "Multiply", (8, 8, 4)),
        ("relu6", "Activation", (8, 8, 4)),
        ("zero_padding", "ZeroPadding2D", (9, 9, 4)),
        ("avg_pool_2", "AveragePooling2D", (4, 4, 4)),
        ("max_pool_1", "MaxPooling2D", (2, 2, 4)),
        ("flatten", "Flatten", (16,)),
    ]
    assert s.macs == 16 * 16 * 8 * 27 + 8 * 8 * 4 * 24
    assert s.activation_bytes == (16 * 16 * 8 + 8 * 8 * 4) * 4  # module rows only


class Nested(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Conv(4, (3, 3), name="conv")(x))


class Outer(nn.Module):
    @nn.compact
    def __call__(self, x, *, train: bool):
        x = Nested(name="block")(x)
        x = nn.Dropout(0.5, deterministic=not train)(x)  # returns its input: still a row
        x = Nested(name="block2")(x)
        return x.reshape((x.shape[0], -1))


def test_functional_rows_are_named_inside_their_module():
    s = summarize(Outer(), (6, 6, 2))
    assert [r.path for r in s.rows] == [
        "block/conv",
        "block/relu",
        "Dropout_0",
        "block2/conv",
        "block2/relu",
        "flatten",
    ]


def test_module_rows_only_when_the_marks_cannot_be_traced(monkeypatch):
    """A lifted transform that rejected the marking primitive: traced again without it."""

    def reject(y, index):
        raise NotImplementedError("no rule for cnnjax_summary_row")

    monkeypatch.setattr("cnnjax.summary._mark_outputs", reject)
    s = summarize(get_model("lenet5", num_classes=10), (32, 32, 3))
    assert [r.path for r in s.rows] == ["conv1", "conv2", "fc1", "fc2", "head"]
    assert (s.total_params, s.macs) == (62_958, 849_320)
