"""FCN-32s/16s/8s: output sizes for any input, bilinear upsampling, sizes, init, gradients."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.errors import UserError
from cnnjax.models import get_model
from cnnjax.models.fcn import FCN, BilinearUpsample, bilinear_kernel

VARIANTS = ("32s", "16s", "8s")
SIZES = ((33, 47), (64, 64), (32, 32), (95, 40))


def _params(variables):
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("backbone", ["vgg16", "resnet18", "resnet50", "small"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_output_is_input_sized(backbone, variant, abstract_output):
    model = FCN(num_classes=5, backbone=backbone, variant=variant, fc_width=16)
    for h, w in SIZES:
        out, _ = abstract_output(model, (h, w, 3))
        assert out.shape == (2, h, w, 5), (h, w)
        assert out.dtype == jnp.float32


def test_registry_names_fix_the_variant(abstract_output):
    for name, variant in (("fcn32s", "32s"), ("fcn16s", "16s"), ("fcn8s", "8s")):
        model = get_model(name, num_classes=4, backbone="small")
        assert model.variant == variant
        assert abstract_output(model, (33, 47, 3))[0].shape == (2, 33, 47, 4)
    assert get_model("fcn8s", num_classes=21).backbone == "vgg16"


def test_bf16_compute(abstract_output):
    out, variables = abstract_output(FCN(3, backbone="small", dtype=jnp.bfloat16), (33, 47, 3))
    assert out.dtype == jnp.bfloat16
    assert {leaf.dtype for leaf in jax.tree.leaves(variables["params"])} == {jnp.dtype("float32")}


def test_bilinear_kernel_is_the_fcn_filter_per_class():
    k = bilinear_kernel(2, 3)
    assert k.shape == (4, 4, 3, 3)
    tent = np.array([0.25, 0.75, 0.75, 0.25])
    np.testing.assert_allclose(k[:, :, 1, 1], np.outer(tent, tent))
    off_diagonal = k.copy()
    off_diagonal[:, :, np.arange(3), np.arange(3)] = 0
    assert not off_diagonal.any(), "classes must not mix"
    odd = bilinear_kernel(3, 1)[:, :, 0, 0]  # size 5, center 2: tent 1/3, 2/3, 1, 2/3, 1/3
    np.testing.assert_allclose(odd[2], [1 / 3, 2 / 3, 1, 2 / 3, 1 / 3], rtol=1e-6)


@pytest.mark.parametrize("learnable", [True, False])
def test_upsampling_keeps_a_constant_and_interpolates_a_ramp(learnable):
    up = BilinearUpsample(8, learnable=learnable)
    x = jnp.full((1, 5, 6, 2), 3.0)
    variables = up.init(jax.random.key(0), x, (47, 51))
    assert ("params" in variables) == learnable
    y = np.asarray(up.apply(variables, x, (47, 51)))
    assert y.shape == (1, 47, 51, 2)
    np.testing.assert_allclose(y[:, 8:-8, 8:-8], 3.0, rtol=1e-6)  # the interior
    np.testing.assert_allclose(y, 3.0, rtol=1e-6)  # edge padding: also the border

    # Cell i covers pixels [8i, 8i + 8): its center 8i + 3.5 gets value i, linear in between.
    ramp = jnp.broadcast_to(jnp.arange(5.0)[None, :, None, None], (1, 5, 3, 1))
    y = np.asarray(up.apply(up.init(jax.random.key(0), ramp, (40, 24)), ramp, (40, 24)))
    rows = np.arange(40)
    expected = np.clip((rows - 3.5) / 8, 0, 4)
    np.testing.assert_allclose(y[0, :, 10, 0], expected, atol=1e-6)


def test_trainable_counts_differ_by_the_skip_layers(count_params):
    """vgg16 backbone, 21 classes (the paper's PASCAL VOC setup); counts do not depend on H, W."""
    counts = {}
    for learnable in (True, False):
        for variant in VARIANTS:
            model = FCN(21, variant=variant, learnable_upsampling=learnable)
            trainable, stats = count_params(model, (32, 32, 3))
            assert stats == 0
            counts[variant, learnable] = trainable
    score_pool4, score_pool3 = 512 * 21 + 21, 256 * 21 + 21
    assert counts["16s", False] - counts["32s", False] == score_pool4
    assert counts["8s", False] - counts["16s", False] == score_pool3

    def up(f):
        return (2 * f) ** 2 * 21 * 21

    assert counts["32s", True] - counts["32s", False] == up(32)
    assert counts["16s", True] - counts["16s", False] == up(2) + up(16)
    assert counts["8s", True] - counts["8s", False] == 2 * up(2) + up(8)
    # VGG-16 convs 14,714,688 + fc6 102,764,544 + fc7 16,781,312 + score_fr 86,037.
    assert counts["32s", False] == 134_346_581
    assert counts["32s", True] == 136_152_917
    assert counts["16s", True] == 134_815_994
    assert counts["8s", True] == 134_489_759


def test_small_backbone_is_cpu_sized(count_params):
    trainable, stats = count_params(FCN(2, backbone="small"), (64, 64, 3))
    # Backbone 33,928; score layers 64·2+2, 32·2+2, 32·2+2; upsamplers ×2, ×2, ×8: (2f)²·2·2.
    assert trainable == 33_928 + 130 + 66 + 66 + (16 + 16 + 256) * 4
    assert stats == 2 * (8 + 16 + 32 + 32 + 64)


def _init(model, x, fast_jit):
    return fast_jit(lambda x: model.init(jax.random.key(0), x, train=False))(x)


def test_zero_skip_scores_make_8s_equal_32s_at_init(fast_jit):
    """Skip scores start at 0 and bilinear ×2 ×2 ×8 is bilinear ×32: 8s computes 32s."""
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 33, 47, 3)), jnp.float32)
    fcn8, fcn32 = (FCN(3, backbone="small", variant=v) for v in ("8s", "32s"))
    v8, v32 = _init(fcn8, x, fast_jit), _init(fcn32, x, fast_jit)
    for name in ("score_pool4", "score_pool3"):
        assert not np.asarray(v8["params"][name]["kernel"]).any()
    assert not np.asarray(v8["params"]["score_fr"]["kernel"]).any()  # zero as the paper
    # Random class scores, so the comparison is not 0 == 0; the same backbone in both.
    score_fr = jax.random.normal(jax.random.key(1), v8["params"]["score_fr"]["kernel"].shape)
    v8["params"]["score_fr"]["kernel"] = score_fr
    v32 = {
        "params": {**v8["params"], "upscore": v32["params"]["upscore"]},
        "batch_stats": v8["batch_stats"],
    }
    y8 = fast_jit(lambda v: fcn8.apply(v, x, train=False))(v8)
    y32 = fast_jit(lambda v: fcn32.apply(v, x, train=False))(v32)
    assert float(jnp.abs(y32).max()) > 0.1
    np.testing.assert_allclose(y8, y32, atol=1e-5)


def test_small_backbone_forward_backward_in_training(fast_jit):
    model = FCN(3, backbone="small", variant="8s")
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 32, 32, 3)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 3, (2, 32, 32)))
    variables = _init(model, x, fast_jit)

    @fast_jit
    def loss_and_grad(params, stats):
        def loss(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": stats},
                x,
                train=True,
                rngs={"dropout": jax.random.key(1)},
                mutable=["batch_stats"],
            )
            picked = jnp.take_along_axis(jax.nn.log_softmax(logits), labels[..., None], -1)
            return -picked.mean(), updates

        return jax.value_and_grad(loss, has_aux=True)(params)

    (loss, updates), grads = loss_and_grad(variables["params"], variables["batch_stats"])
    assert np.isfinite(float(loss))
    np.testing.assert_allclose(float(loss), math.log(3), rtol=1e-4)  # zero scores: uniform
    for leaf in jax.tree.leaves(grads):
        assert np.isfinite(np.asarray(leaf)).all()
    assert np.asarray(grads["score_fr"]["kernel"]).any()
    assert "batch_stats" in updates


def test_hashable_with_dict_backbone_kwargs(abstract_output):
    model = FCN(3, backbone="small", backbone_kwargs={"filters": (4, 4, 4, 4, 4)})
    hash(model)
    _, variables = abstract_output(model, (32, 32, 3))
    assert variables["params"]["backbone"]["block5_conv"]["kernel"].shape == (3, 3, 4, 4)


@pytest.mark.parametrize(
    "kwargs, shape, match",
    [
        ({"backbone": "alexnet"}, (64, 64, 3), "backbone must be one of"),
        ({"variant": "4s"}, (64, 64, 3), "variant must be one of"),
        ({"backbone": "small"}, (31, 64, 3), "at least 32×32"),
        ({"backbone": "small", "backbone_kwargs": {"depth": 3}}, (64, 64, 3), "no argument"),
        ({"backbone": "resnet18", "backbone_kwargs": {"stem": "cifar"}}, (64, 64, 3), "stem"),
        ({"num_classes": None}, (64, 64, 3), "num_classes"),
    ],
)
def test_user_errors(kwargs, shape, match):
    model = FCN(**{"num_classes": 3, **kwargs})
    x = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
    with pytest.raises(UserError, match=match):
        jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
