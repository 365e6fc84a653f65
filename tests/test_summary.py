"""Tests for cnnjax/summary.py: parameter, FLOP and memory counts checked against hand counts.

Everything is traced abstractly (jax.eval_shape / jax.make_jaxpr), so even VGG-16 at 224x224 is
summarized in about a second on a CPU.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from cnnjax.models import get_model, list_models
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
    assert [r.path for r in s.rows] == ["up", "raw", "fc"]  # no row for remat's wrapper
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
