"""The training state: one pytree with everything that changes during training."""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


class TrainState(flax.struct.PyTreeNode):
    """step: int32 scalar; params/batch_stats: flax variable collections; opt_state: optax state.

    `apply_fn` and `tx` are static: they are code, not data, and are not checkpointed.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    apply_fn: Any = flax.struct.field(pytree_node=False)
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    @property
    def variables(self) -> dict:
        """The variables to pass to `model.apply`."""
        if self.batch_stats:
            return {"params": self.params, "batch_stats": self.batch_stats}
        return {"params": self.params}


def init_variables(model, rng: jax.Array, input_shape: tuple[int, ...]) -> dict:
    """Initializes `model` on a dummy batch of shape (1, *input_shape)."""
    params_rng, dropout_rng = jax.random.split(rng)
    dummy = jnp.zeros((1, *input_shape), jnp.float32)
    return model.init({"params": params_rng, "dropout": dropout_rng}, dummy, train=False)


def create_train_state(model, tx, rng: jax.Array, input_shape: tuple[int, ...]) -> TrainState:
    """A fresh state for `model` with optimizer `tx`; jit it with `out_shardings` to place it."""
    variables = init_variables(model, rng, input_shape)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        apply_fn=model.apply,
        tx=tx,
    )
