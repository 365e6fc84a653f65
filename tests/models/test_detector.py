"""The grid detector: output layout, any input size, parameter count, objectness prior."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.models import get_model
from cnnjax.models.detector import GridDetector


def test_parameter_count_and_grid_for_any_size():
    model = get_model("grid_detector", num_classes=3)
    for size in ((64, 64), (96, 72)):
        x = jax.ShapeDtypeStruct((2, *size, 3), jnp.float32)
        out, variables = jax.eval_shape(
            lambda x: model.init_with_output(jax.random.key(0), x, train=False), x
        )
        assert out.shape == (2, size[0] // 8, size[1] // 8, 8)
    n = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))
    assert n == 98_200  # The figure in detector.py's docstring.


def test_objectness_starts_near_one_percent():
    model = GridDetector(num_classes=3, filters=(4, 4, 4), extra_convs=(4,))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 32, 32, 3)), jnp.float32)
    variables = model.init(jax.random.key(0), x, train=False)
    out = model.apply(variables, x, train=False)
    assert out.shape == (1, 4, 4, 8)
    np.testing.assert_allclose(jax.nn.sigmoid(out[..., 0]), 0.01, atol=0.003)


def test_too_small_input_is_refused():
    with pytest.raises(ValueError, match="at least 8x8"):
        GridDetector(num_classes=3).init(jax.random.key(0), jnp.zeros((1, 4, 4, 3)), train=False)
