"""Helpers for the model tests.

Most checks are shape-only: `jax.eval_shape(model.init_with_output)` traces the whole model once
(every initializer, every shape) without drawing a weight or compiling anything, so checking a
140M-parameter VGG costs one trace; traces are cached per (model, input shape, dtype). Where
numbers must flow, `stand_in_variables` fills the abstract variables from NumPy, because drawing
them with `model.init` compiles one random-number kernel per parameter: seconds per model on a
2-core CPU. `fast_jit` compiles without XLA's optimizations and with XLA:CPU's older (non
"fusion emitter") code generator, which cuts compile time 2-4× for a function run once.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

FAST_COMPILE = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
    "xla_cpu_use_fusion_emitters": False,
}


@functools.cache
def _abstract_init(model, shape, batch, dtype):
    x = jax.ShapeDtypeStruct((batch, *shape), dtype)
    return jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x, train=False), x)


def abstract_init(model, shape, batch=2, dtype=jnp.float32):
    """(eval-mode output, variables) of `model.init_with_output`, as shapes and dtypes only."""
    return _abstract_init(model, tuple(shape), batch, jnp.dtype(dtype))


def _size(tree):
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


@pytest.fixture
def count_params():
    """count_params(model, (H, W, C)) -> (trainable, non_trainable): 'params' vs the rest."""

    def count(model, shape):
        variables = abstract_init(model, shape)[1]
        return _size(variables["params"]), _size(
            {k: v for k, v in variables.items() if k != "params"}
        )

    return count


@pytest.fixture
def abstract_output():
    """abstract_output(model, (H, W, C)) -> (eval-mode output, variables) for a batch of 2."""
    return abstract_init


@pytest.fixture
def check_bf16():
    """Asserts bf16 compute: bf16 logits from a float32 input, every parameter float32."""

    def check(model, shape, num_classes):
        out, variables = abstract_init(model, shape)
        assert out.shape == (2, num_classes)
        assert out.dtype == jnp.bfloat16
        dtypes = {leaf.dtype for leaf in jax.tree.leaves(variables["params"])}
        assert dtypes == {jnp.dtype(jnp.float32)}

    return check


# Stand-in weights are cut from one pool of normal samples: drawing 60M fresh ones takes seconds.
_POOL = np.random.default_rng(0).standard_normal(1 << 20).astype(np.float32)


def _fill(path, leaf, offset):
    """He-normal-like kernels; BatchNorm scale and variance 1; biases and means 0."""
    name = path[-1].key
    if name in ("scale", "var"):
        return np.ones(leaf.shape, leaf.dtype)
    if leaf.ndim == 1:
        return np.zeros(leaf.shape, leaf.dtype)
    fan_in = math.prod(leaf.shape[:-1])
    scale = np.float32(math.sqrt(2.0 / fan_in))
    return (np.resize(_POOL[offset % _POOL.size :], leaf.shape) * scale).astype(leaf.dtype)


@pytest.fixture
def stand_in_variables():
    """stand_in_variables(model, x) -> variables shaped as `model.init` makes them (see above)."""

    def make(model, x):
        abstract = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
        leaves = iter(range(1, 1 << 30, 7919))  # a different cut of the pool for every leaf
        return jax.tree_util.tree_map_with_path(lambda p, v: _fill(p, v, next(leaves)), abstract)

    return make


@pytest.fixture
def fast_jit():
    """jax.jit without XLA's optimizations: for functions run once per test."""
    return lambda f: jax.jit(f, compiler_options=FAST_COMPILE)
