"""AlexNet and GoogLeNet (cnnjax/models/classic.py), checked against torchvision's counts."""

import jax.numpy as jnp
import numpy as np

from cnnjax.models import classic, get_model

IMAGENET = (224, 224, 3)


def test_alexnet_count(count_params):
    # torchvision docs, AlexNet_Weights.IMAGENET1K_V1: 61,100,840. By hand: convs 23,296 +
    # 307,392 + 663,936 + 884,992 + 590,080 = 2,469,696; fc 9,216·4,096 + 4,096 = 37,752,832,
    # 4,096·4,096 + 4,096 = 16,781,312, 4,096·1,000 + 1,000 = 4,097,000.
    assert count_params(get_model("alexnet", num_classes=1000), IMAGENET) == (61_100_840, 0)


def test_alexnet_lrn_has_no_parameters(count_params):
    assert count_params(classic.AlexNet(lrn=True), IMAGENET) == (61_100_840, 0)


def test_alexnet_lrn_forward(stand_in_variables, fast_jit):
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 64, 64, 3)), jnp.float32)
    outs = []
    for lrn in (False, True):
        model = classic.AlexNet(num_classes=4, lrn=lrn, fc_units=8)
        variables = stand_in_variables(model, x)
        outs.append(fast_jit(lambda v, x, m=model: m.apply(v, x, train=False))(variables, x))
    assert outs[1].shape == (2, 4)
    assert np.isfinite(np.asarray(outs[1])).all()
    assert not np.allclose(outs[0], outs[1])


def test_googlenet_count(count_params):
    # torchvision docs, GoogLeNet_Weights.IMAGENET1K_V1 (aux heads dropped): 6,624,904 trainable
    # (conv weights + BN scale/bias); 14,560 BN statistics.
    assert count_params(get_model("googlenet", num_classes=1000), IMAGENET) == (6_624_904, 14_560)


def test_googlenet_paper_5x5_branch(count_params):
    # The paper's 5×5 kernels add (25 - 9)·ch5x5red·ch5x5 weights per inception module.
    extra = sum(16 * c[3] * c[4] for c in classic.INCEPTION_CONFIG.values())
    model = classic.GoogLeNet(branch3_kernel=5)
    assert count_params(model, IMAGENET) == (6_624_904 + extra, 14_560)


def test_googlenet_ceil_mode_shapes(abstract_output):
    # torchvision: 112 -> 56 -> 28 -> 14 -> 7 with ceil_mode pools.
    out, _ = abstract_output(classic.GoogLeNet(num_classes=None), IMAGENET)
    assert {k: v.shape for k, v in out.items()} == {
        "stem": (2, 112, 112, 64),
        "stage1": (2, 56, 56, 192),
        "stage2": (2, 28, 28, 480),
        "stage3": (2, 14, 14, 832),
        "stage4": (2, 7, 7, 1024),
    }


def test_alexnet_features(abstract_output):
    out, _ = abstract_output(classic.AlexNet(num_classes=None), IMAGENET)
    assert {k: v.shape for k, v in out.items()} == {
        "stage1": (2, 55, 55, 64),
        "stage2": (2, 27, 27, 192),
        "stage3": (2, 13, 13, 256),
        "stage4": (2, 6, 6, 256),
    }


def test_names(abstract_output):
    _, variables = abstract_output(get_model("googlenet", num_classes=1000), IMAGENET)
    block = variables["params"]["inception4e"]
    assert set(block) == {"branch1", "branch2_reduce", "branch2", "branch3_reduce", "branch3",
                          "branch4"}  # fmt: skip
    assert set(block["branch2"]) == {"conv", "bn"}
    assert "bias" not in block["branch2"]["conv"]
    _, variables = abstract_output(get_model("alexnet", num_classes=1000), IMAGENET)
    assert set(variables["params"]) == {"conv1", "conv2", "conv3", "conv4", "conv5", "fc1",
                                        "fc2", "head"}  # fmt: skip


def test_bf16(check_bf16):
    check_bf16(classic.AlexNet(num_classes=10, dtype=jnp.bfloat16), (64, 64, 3), 10)
    check_bf16(classic.GoogLeNet(num_classes=10, dtype=jnp.bfloat16), (32, 32, 3), 10)
