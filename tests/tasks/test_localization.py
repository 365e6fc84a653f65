"""Localization: box losses and metrics by hand, the head on different backbones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.tasks import localization

SETTINGS = {"class_weight": 0.8, "box_weight": 0.2, "box_loss": "mse", "beta": 0.05}


def test_box_losses_by_hand():
    pred = jnp.array([[0.1, 0.2, 0.5, 0.6]])
    true = jnp.array([[0.0, 0.0, 0.5, 0.5]])
    # Errors 0.1, 0.2, 0, 0.1.
    mse = localization.box_loss(pred, true, "mse")
    np.testing.assert_allclose(mse, [(0.01 + 0.04 + 0.0 + 0.01) / 4], rtol=1e-5)
    # Smooth-L1, beta 0.05: |e| - beta/2 above beta, 0.5 e^2 / beta below.
    sl1 = localization.box_loss(pred, true, "smooth_l1", beta=0.05)
    np.testing.assert_allclose(sl1, [(0.075 + 0.175 + 0.0 + 0.075) / 4], rtol=1e-5)
    small = localization.box_loss(jnp.array([[0.02, 0, 0, 0]]), jnp.zeros((1, 4)), "smooth_l1")
    np.testing.assert_allclose(small, [0.5 * 0.02**2 / 0.05 / 4], rtol=1e-5)


def test_localization_sums_by_hand_and_padding_is_excluded():
    logits = jnp.array([[4.0, 0.0, 0.0], [0.0, 0.0, 4.0], [9.0, 0.0, 0.0]])
    labels = jnp.array([0, 1, 0])
    true = jnp.array([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    pred = jnp.array([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 1.0, 0.5], [0.9, 0.9, 1.0, 1.0]])
    weight = jnp.array([1.0, 1.0, 0.0])  # The third row is padding.
    s = localization.localization_sums(
        {"logits": logits, "box": pred}, labels, true, weight, num_classes=3, settings=SETTINGS
    )
    assert float(s["count"]) == 2 and float(s["correct"]) == 1
    # IoUs: identical 1, half of the image inside the whole image 0.5.
    np.testing.assert_allclose(float(s["iou_sum"]), 1.5, rtol=1e-6)
    assert float(s["iou50"]) == 2  # IoU >= 0.5 counts.
    ce = -jax.nn.log_softmax(logits, axis=-1)[jnp.arange(3), labels]
    box = np.array([0.0, 0.25 / 4, 0.0])
    expected = 0.8 * (ce[0] + ce[1]) + 0.2 * (box[0] + box[1])
    np.testing.assert_allclose(float(s["loss_sum"]), float(expected), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(s["confusion"]), [[1, 0, 0], [0, 0, 1], [0, 0, 0]])


@pytest.mark.parametrize(
    "name,kwargs,shape",
    [
        ("small", {"filters": (8, 8, 16)}, (32, 32, 3)),  # feature dict, flattened
        ("lenet5", {}, (32, 32, 1)),  # a vector of features
        ("resnet18", {"stem": "cifar"}, (32, 32, 3)),  # stage dict, deepest stage
    ],
)
def test_the_head_fits_any_backbone(name, kwargs, shape):
    backbone = localization.make_backbone(name, jnp.float32, **kwargs)
    model = localization.Localizer(backbone, num_classes=5, hidden=16)
    out, variables = jax.eval_shape(
        lambda x: model.init_with_output(jax.random.key(0), x, train=False),
        jax.ShapeDtypeStruct((2, *shape), jnp.float32),
    )
    assert out["logits"].shape == (2, 5) and out["box"].shape == (2, 4)
    assert set(variables["params"]["head"]) == {"class_hidden", "box_hidden", "class", "box"}


def test_predicted_boxes_are_sigmoid_bounded():
    head = localization.LocalizationHead(num_classes=3, hidden=0)
    features = jnp.asarray(np.random.default_rng(0).normal(size=(3, 2, 2, 8)) * 50, jnp.float32)
    out, _ = head.init_with_output(jax.random.key(0), features)
    box = np.asarray(out["box"])
    assert box.shape == (3, 4) and (box >= 0).all() and (box <= 1).all()
    assert out["logits"].shape == (3, 3)
