"""Schedules and optimizers against hand computations."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnjax.errors import UserError
from cnnjax.train import optim
from experiments import base


def config(**changes):
    c = base.get_base_config()
    for key, value in changes.items():
        node = c
        *path, leaf = key.split(".")
        for p in path:
            node = node[p]
        node[leaf] = value
    return c


def test_cosine_with_warmup_endpoints():
    s = optim.create_schedule(config(**{"optim.lr": 0.4, "schedule.warmup_steps": 10}), 110, 10)
    assert float(s(0)) == 0.0
    np.testing.assert_allclose(float(s(5)), 0.2, rtol=1e-6)
    np.testing.assert_allclose(float(s(10)), 0.4, rtol=1e-6)
    np.testing.assert_allclose(float(s(60)), 0.2, rtol=1e-5)  # Half-way down the cosine.
    np.testing.assert_allclose(float(s(110)), 0.0, atol=1e-7)


def test_warmup_epochs_count_in_steps():
    s = optim.create_schedule(config(**{"optim.lr": 1.0, "schedule.warmup_epochs": 2.0}), 100, 5)
    np.testing.assert_allclose(float(s(5)), 0.5, rtol=1e-6)  # 2 epochs x 5 steps = 10 steps.


def test_piecewise_boundaries_are_fractions_of_the_run():
    s = optim.create_schedule(
        config(
            **{
                "optim.lr": 1.0,
                "schedule.name": "piecewise",
                "schedule.boundaries": (0.5, 0.75),
                "schedule.decay_factor": 0.1,
            }
        ),
        100,
        10,
    )
    assert [round(float(s(i)), 6) for i in (0, 49, 50, 74, 75, 99)] == [
        1.0,
        1.0,
        0.1,
        0.1,
        0.01,
        0.01,
    ]


def test_onecycle_peaks_at_pct_start():
    s = optim.create_schedule(
        config(**{"optim.lr": 0.1, "schedule.name": "onecycle", "schedule.pct_start": 0.25}),
        100,
        10,
    )
    values = np.array([float(s(i)) for i in range(101)])
    assert int(values.argmax()) == 25
    np.testing.assert_allclose(values[0], 0.1 / 25, rtol=1e-5)
    np.testing.assert_allclose(values.max(), 0.1, rtol=1e-5)
    assert values[-1] < 1e-5


def test_decay_mask_skips_biases_and_norm_parameters():
    params = {
        "conv": {"kernel": jnp.ones((3, 3, 1, 2)), "bias": jnp.ones(2)},
        "bn": {"scale": jnp.ones(2), "bias": jnp.ones(2)},
    }
    mask = optim.decay_mask(params, "kernels")
    assert mask == {"conv": {"kernel": True, "bias": False}, "bn": {"scale": False, "bias": False}}


def _one_update(cfg, params, grads, steps=1):
    tx = optim.create_optimizer(cfg, optax.constant_schedule(cfg.optim.lr))
    opt_state = tx.init(params)
    for _ in range(steps):
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
    return params


def test_sgd_coupled_weight_decay_matches_pytorch_semantics():
    # PyTorch SGD(momentum=0.9, weight_decay=wd): g' = g + wd*w; buf = 0.9*buf + g'; w -= lr*buf.
    w, g, lr, wd = 2.0, 0.5, 0.1, 0.01
    cfg = config(**{"optim.lr": lr, "optim.weight_decay": wd, "optim.weight_decay_mask": "all"})
    out = _one_update(cfg, {"w": jnp.array([w])}, {"w": jnp.array([g])}, steps=2)
    buf1 = g + wd * w
    w1 = w - lr * buf1
    buf2 = 0.9 * buf1 + (g + wd * w1)
    np.testing.assert_allclose(float(out["w"][0]), w1 - lr * buf2, rtol=1e-6)


def test_decoupled_weight_decay_bypasses_momentum():
    w, g, lr, wd = 2.0, 0.5, 0.1, 0.01
    cfg = config(
        **{
            "optim.lr": lr,
            "optim.weight_decay": wd,
            "optim.weight_decay_mask": "all",
            "optim.decoupled_weight_decay": True,
        }
    )
    out = _one_update(cfg, {"w": jnp.array([w])}, {"w": jnp.array([g])}, steps=2)
    w1 = w - lr * (g + wd * w)
    w2 = w1 - lr * ((0.9 * g + g) + wd * w1)
    np.testing.assert_allclose(float(out["w"][0]), w2, rtol=1e-6)


def test_adamw_equals_optax_adamw():
    params = {"k": jnp.arange(6.0).reshape(2, 3)}
    grads = {"k": jnp.ones((2, 3)) * 0.3}
    cfg = config(**{"optim.name": "adamw", "optim.lr": 0.01, "optim.weight_decay": 0.1})
    ours = _one_update(cfg, params, grads, steps=3)
    tx = optax.adamw(0.01, weight_decay=0.1)
    state, ref = tx.init(params), params
    for _ in range(3):
        u, state = tx.update(grads, state, ref)
        ref = optax.apply_updates(ref, u)
    np.testing.assert_allclose(ours["k"], ref["k"], rtol=1e-6)


def test_gradient_clipping():
    cfg = config(**{"optim.lr": 1.0, "optim.momentum": 0.0, "optim.grad_clip_norm": 1.0})
    out = _one_update(cfg, {"w": jnp.zeros(2)}, {"w": jnp.array([3.0, 4.0])})
    np.testing.assert_allclose(out["w"], [-0.6, -0.8], rtol=1e-6)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop"])
def test_every_optimizer_descends(name):
    cfg = config(**{"optim.name": name, "optim.lr": 0.01, "optim.nesterov": True})
    f = lambda p: jnp.sum((p["w"] - 3.0) ** 2)
    params = {"w": jnp.zeros(3)}
    tx = optim.create_optimizer(cfg, optax.constant_schedule(0.01))
    state = tx.init(params)
    for _ in range(20):
        u, state = tx.update(jax.grad(f)(params), state, params)
        params = optax.apply_updates(params, u)
    assert float(f(params)) < 27.0


def test_unknown_names_are_user_errors():
    with pytest.raises(UserError, match="Did you mean 'cosine'"):
        optim.create_schedule(config(**{"schedule.name": "cosin"}), 10, 1)
    with pytest.raises(UserError, match="Unknown optimizer 'adamm'"):
        optim.create_optimizer(config(**{"optim.name": "adamm"}), optax.constant_schedule(1.0))


def test_steps_for_epochs_and_explicit_steps():
    assert optim.steps_for(config(**{"batch_size": 10, "num_epochs": 2.5}), 105) == (10, 25)
    assert optim.steps_for(config(**{"batch_size": 10, "num_train_steps": 7}), 105) == (10, 7)
    with pytest.raises(UserError, match="batch_size=200"):
        optim.steps_for(config(**{"batch_size": 200}), 105)


def _updates(tx, grads_seq, params):
    state, out = tx.init(params), []
    for g in grads_seq:
        u, state = tx.update(g, state, params)
        out.append(u)
    return out


def test_phase_overrides_change_the_optimizer():
    """transfer.finetune_optim: optim.* updated with the given keys (here momentum SGD ->
    nesterov with another momentum), the rest (lr schedule, clipping) unchanged."""
    cfg = config(**{"optim.momentum": 0.9, "optim.nesterov": False})
    params = {"w": jnp.zeros(2)}
    grads = [{"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([0.5, 3.0])}]
    schedule = optax.constant_schedule(0.1)
    plain = _updates(optim.create_optimizer(cfg, schedule), grads, params)
    changed = optim.create_optimizer(cfg, schedule, {"nesterov": True, "momentum": 0.5})
    reference = _updates(optax.sgd(0.1, momentum=0.5, nesterov=True), grads, params)
    for got, want in zip(_updates(changed, grads, params), reference, strict=True):
        np.testing.assert_allclose(got["w"], want["w"], rtol=1e-6)
    for got, want in zip(plain, _updates(optax.sgd(0.1, momentum=0.9), grads, params), strict=True):
        np.testing.assert_allclose(got["w"], want["w"], rtol=1e-6)
    assert not np.allclose(plain[1]["w"], reference[1]["w"])
    assert cfg.optim.nesterov is False  # The config itself is untouched.
    with pytest.raises(UserError, match="finetune_optim has lr, momentom"):
        optim.create_optimizer(cfg, schedule, {"momentom": 0.5, "lr": 1.0})
