"""ResNet-18/34/50/101/152 (cnnjax/models/resnet.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.errors import UserError
from cnnjax.models import get_model, resnet

IMAGENET = (224, 224, 3)
CIFAR = (32, 32, 3)

# torchvision's model docs ("num_params"), 1000 classes. The BatchNorm statistics are twice the
# BN channels (conv widths), e.g. ResNet-50: 53,120 (also Keras' non-trainable count).
EXPECTED = {
    "resnet18": (11_689_512, 9_600),
    "resnet34": (21_797_672, 17_024),
    "resnet50": (25_557_032, 53_120),
    "resnet101": (44_549_160, 105_344),
    "resnet152": (60_192_808, 151_424),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_param_counts(name, count_params):
    assert count_params(get_model(name, num_classes=1000), IMAGENET) == EXPECTED[name]


def test_cifar_stem_count(count_params):
    # SPEC.md: 11,173,962 = 11,689,512 - (7·7·3·64 = 9,408) + (3·3·3·64 = 1,728)
    #                       - (512·1000 + 1000) + (512·10 + 10).
    model = get_model("resnet18", num_classes=10, stem="cifar")
    assert count_params(model, CIFAR) == (11_173_962, 9_600)


def test_keras_v1_variant_count(count_params):
    # keras.applications.ResNet50 (Keras 3.15.1): 25,583,592 trainable, 53,120 non-trainable
    # (total 25,636,712): v1 blocks (stride on the first 1×1 conv) and convs with bias.
    model = get_model(
        "resnet50", num_classes=1000, conv_bias=True, stride_on_3x3=False, bn_epsilon=1.001e-5
    )
    assert count_params(model, IMAGENET) == (25_583_592, 53_120)


def test_layer_names(abstract_output):
    _, variables = abstract_output(get_model("resnet50", num_classes=1000), IMAGENET)
    params = variables["params"]
    assert {"stem_conv", "stem_bn", "stage1_block1", "stage4_block3", "head"} <= set(params)
    block = params["stage1_block1"]
    assert set(block) == {"conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "proj_conv", "proj_bn"}
    assert "bias" not in block["conv1"]
    assert "proj_conv" not in params["stage1_block2"]
    # BasicBlock: no projection where neither stride nor width change.
    _, variables = abstract_output(get_model("resnet18", num_classes=1000), IMAGENET)
    assert "proj_conv" not in variables["params"]["stage1_block1"]
    assert "proj_conv" in variables["params"]["stage2_block1"]


def _conv_outputs(model, shape):
    """Output shapes of every conv inside a model, keyed by module path."""
    x = jax.ShapeDtypeStruct((1, *shape), jnp.float32)

    def run(x):
        variables = model.init(jax.random.key(0), x, train=False)
        _, state = model.apply(
            variables, x, train=False, capture_intermediates=True, mutable=["intermediates"]
        )
        return state["intermediates"]

    flat = jax.tree_util.tree_flatten_with_path(jax.eval_shape(run, x))[0]
    return {"/".join(k.key for k in path[:-2]): leaf.shape for path, leaf in flat}


def test_stride_placement():
    # torchvision v1.5: the stride is on the 3×3 conv; Keras v1: on the first 1×1 conv.
    v15 = _conv_outputs(resnet.resnet50(num_classes=10), (64, 64, 3))
    assert v15["stage2_block1/conv1"] == (1, 16, 16, 128)
    assert v15["stage2_block1/conv2"] == (1, 8, 8, 128)
    v1 = _conv_outputs(resnet.resnet50(num_classes=10, stride_on_3x3=False), (64, 64, 3))
    assert v1["stage2_block1/conv1"] == (1, 8, 8, 128)
    # ImageNet stem: 7×7/2 with padding 3 then 3×3/2 max-pool with padding 1: 64 -> 32 -> 16.
    stem = _conv_outputs(resnet.resnet18(num_classes=10), (64, 64, 3))
    assert stem["stem_conv"] == (1, 32, 32, 64)
    assert stem["stage1_block1/conv1"] == (1, 16, 16, 64)


def test_features_without_classifier(abstract_output):
    out, variables = abstract_output(resnet.resnet18(num_classes=None), IMAGENET)
    assert {k: v.shape for k, v in out.items()} == {
        "stem": (2, 112, 112, 64),
        "stage1": (2, 56, 56, 64),
        "stage2": (2, 28, 28, 128),
        "stage3": (2, 14, 14, 256),
        "stage4": (2, 7, 7, 512),
    }
    assert "head" not in variables["params"]
    out, _ = abstract_output(resnet.resnet50(num_classes=None, stem="cifar"), CIFAR)
    assert {k: v.shape for k, v in out.items()} == {
        "stem": (2, 32, 32, 64),
        "stage1": (2, 32, 32, 256),
        "stage2": (2, 16, 16, 512),
        "stage3": (2, 8, 8, 1024),
        "stage4": (2, 4, 4, 2048),
    }


def test_real_init_and_zero_init_residual(fast_jit):
    # A real `model.init` (the registry walk uses stand-in weights), on a tiny configuration.
    model = resnet.ResNet(
        stage_sizes=(1,), block_cls=resnet.Bottleneck, num_filters=4, num_classes=3,
        zero_init_residual=True,
    )  # fmt: skip
    x = jnp.ones((2, 16, 16, 3))
    variables = fast_jit(lambda k, x: model.init(k, x, train=False))(jax.random.key(0), x)
    block = variables["params"]["stage1_block1"]
    np.testing.assert_array_equal(block["bn3"]["scale"], 0.0)
    np.testing.assert_array_equal(block["bn1"]["scale"], 1.0)
    np.testing.assert_array_equal(block["proj_bn"]["scale"], 1.0)
    assert np.asarray(block["conv2"]["kernel"]).std() > 0
    np.testing.assert_array_equal(variables["batch_stats"]["stem_bn"]["var"], 1.0)


def test_unknown_stem(count_params):
    with pytest.raises(UserError, match="stem"):
        count_params(resnet.resnet18(num_classes=10, stem="tiny"), CIFAR)


def test_bf16(check_bf16):
    check_bf16(resnet.resnet18(num_classes=10, stem="cifar", dtype=jnp.bfloat16), CIFAR, 10)
    check_bf16(resnet.resnet50(num_classes=10, dtype=jnp.bfloat16), CIFAR, 10)
