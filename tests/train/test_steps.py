"""Pure train/eval steps on tiny models: the loss falls, BatchNorm statistics move only in
training, and evaluation over a padded last batch is exact."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnjax.core import metrics
from cnnjax.data import pipeline
from cnnjax.models import get_model
from cnnjax.tasks.classification import for_labels
from cnnjax.train import steps
from cnnjax.train.state import create_train_state


class TinyBN(nn.Module):
    num_classes: int = 3

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = nn.Conv(4, (3, 3), name="conv")(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn")(x)
        x = nn.relu(x).mean(axis=(1, 2))
        x = nn.Dropout(0.5, deterministic=not train)(x)
        return nn.Dense(self.num_classes, name="head")(x)


def _batch(n=16, size=8, c=1, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": jnp.asarray(rng.normal(size=(n, size, size, c)), jnp.float32),
        "label": jnp.asarray(rng.integers(0, classes, n), jnp.int32),
    }


def test_loss_falls_on_a_fixed_batch():
    model = get_model("lenet5", num_classes=10)
    tx = optax.adam(1e-3)
    state = create_train_state(model, tx, jax.random.key(0), (32, 32, 1))
    batch = _batch(n=32, size=32, classes=10)
    step = jax.jit(steps.make_train_step(for_labels(10)))
    losses = []
    for i in range(30):
        state, sums = step(state, batch, jax.random.key(i))
        losses.append(float(sums["loss_sum"] / sums["count"]))
    assert int(state.step) == 30
    assert losses[-1] < 0.2 * losses[0], losses


def test_batch_stats_change_only_in_training():
    model = TinyBN()
    state = create_train_state(model, optax.sgd(0.1), jax.random.key(0), (8, 8, 1))
    before = jax.tree.map(np.asarray, state.batch_stats)
    batch = _batch()
    new_state, _ = jax.jit(steps.make_train_step(for_labels(3)))(state, batch, jax.random.key(1))
    moved = jax.tree.map(lambda a, b: not np.allclose(a, b), before, new_state.batch_stats)
    assert all(jax.tree.leaves(moved)), "training must update the running statistics"

    eval_step = jax.jit(steps.make_eval_step(for_labels(3)))
    eval_step(new_state, {**batch, "weight": jnp.ones(16)})
    after_eval = jax.tree.map(np.asarray, new_state.batch_stats)
    jax.tree.map(
        np.testing.assert_array_equal, after_eval, jax.tree.map(np.asarray, new_state.batch_stats)
    )


def test_dropout_uses_the_step_rng():
    model = TinyBN()
    state = create_train_state(model, optax.sgd(0.0), jax.random.key(0), (8, 8, 1))
    step = jax.jit(steps.make_train_step(for_labels(3)))
    batch = _batch()
    _, a = step(state, batch, jax.random.key(1))
    _, b = step(state, batch, jax.random.key(1))
    _, c = step(state, batch, jax.random.key(2))
    assert float(a["loss_sum"]) == float(b["loss_sum"])
    assert float(a["loss_sum"]) != float(c["loss_sum"])


def test_eval_is_exact_over_a_padded_last_batch():
    model = get_model("lenet5", num_classes=10)
    state = create_train_state(model, optax.sgd(0.1), jax.random.key(0), (32, 32, 1))
    rng = np.random.default_rng(0)
    n = 23  # 3 batches of 8 with one padded row.
    images = rng.integers(0, 256, (n, 32, 32, 1)).astype(np.uint8)
    labels = rng.integers(0, 10, n).astype(np.int32)
    eval_step = jax.jit(steps.make_eval_step(for_labels(10)))

    def run(batch_size):
        padded = pipeline.pad_for_eval({"image": images, "label": labels}, batch_size)
        total = None
        for i in range(len(padded["image"])):
            x = pipeline.normalize(padded["image"][i], np.zeros(1), np.ones(1))
            s = eval_step(
                state, {"image": x, "label": padded["label"][i], "weight": padded["weight"][i]}
            )
            total = s if total is None else metrics.add(total, s)
        return metrics.summarize(total), np.asarray(total["confusion"])

    full, conf_full = run(n)  # One unpadded batch: the reference.
    padded, conf_padded = run(8)
    assert padded["num_examples"] == n
    np.testing.assert_allclose(padded["loss"], full["loss"], rtol=1e-5)
    assert padded["accuracy"] == full["accuracy"]
    assert padded["top5_accuracy"] == full["top5_accuracy"]
    np.testing.assert_array_equal(conf_padded, conf_full)
    assert conf_full.sum() == n


def test_bfloat16_compute_keeps_float32_parameters():
    model = get_model("lenet5", num_classes=10, dtype=jnp.bfloat16)
    state = create_train_state(model, optax.sgd(0.1), jax.random.key(0), (32, 32, 1))
    batch = _batch(n=8, size=32, classes=10)
    logits = model.apply(state.variables, batch["image"], train=False)
    assert logits.dtype == jnp.bfloat16
    new_state, sums = jax.jit(steps.make_train_step(for_labels(10)))(
        state, batch, jax.random.key(1)
    )
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(new_state.params))
    assert sums["loss_sum"].dtype == jnp.float32 and np.isfinite(float(sums["loss_sum"]))


def test_flip_tta_averages_the_probabilities_of_image_and_mirror():
    model = TinyBN()
    state = create_train_state(model, optax.sgd(0.1), jax.random.key(0), (8, 8, 1))
    batch = {**_batch(n=6), "weight": jnp.ones(6)}
    apply = lambda x: model.apply(state.variables, x, train=False)  # noqa: E731
    p = (
        jax.nn.softmax(apply(batch["image"])) + jax.nn.softmax(apply(batch["image"][:, :, ::-1]))
    ) / 2  # By hand: the mean of the two probability vectors.
    sums = jax.jit(steps.make_eval_step(for_labels(3), flip_tta=True))(state, batch)
    nll = -np.log(np.asarray(p)[np.arange(6), np.asarray(batch["label"])]).sum()
    np.testing.assert_allclose(float(sums["loss_sum"]), nll, rtol=1e-5)
    correct = (np.asarray(p).argmax(-1) == np.asarray(batch["label"])).sum()
    assert float(sums["correct"]) == correct

    # On mirror-symmetric images TTA changes nothing.
    sym = batch["image"] + batch["image"][:, :, ::-1]
    plain = jax.jit(steps.make_eval_step(for_labels(3)))(state, {**batch, "image": sym})
    tta = jax.jit(steps.make_eval_step(for_labels(3), flip_tta=True))(
        state, {**batch, "image": sym}
    )
    np.testing.assert_allclose(float(tta["loss_sum"]), float(plain["loss_sum"]), rtol=1e-5)
