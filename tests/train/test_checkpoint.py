"""Checkpoint retention (last N plus best, newest always kept) and corrupt-checkpoint fallback."""

import os

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.train.checkpoint import Checkpoints


def tree(step):
    return {"w": jnp.full((4,), float(step)), "step": jnp.asarray(step, jnp.int32)}


def target():
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree(0))


def test_latest_survives_when_it_is_not_the_best(tmp_path):
    ckpts = Checkpoints(str(tmp_path), keep=2)
    accuracies = {10: 0.5, 20: 0.9, 30: 0.6, 40: 0.4, 50: 0.3}
    for step, acc in accuracies.items():
        ckpts.save(step, tree(step), metrics={"accuracy": acc})
        ckpts.wait()
    steps = ckpts.steps()
    assert 50 in steps and 40 in steps, steps  # Last 2 ...
    assert 20 in steps, steps  # ... plus the best ...
    assert steps == [20, 40, 50], steps  # ... and nothing else.
    assert ckpts.best_step() == 20
    ckpts.close()


def test_checkpoints_without_metrics_count_as_latest_only(tmp_path):
    ckpts = Checkpoints(str(tmp_path), keep=1)
    ckpts.save(1, tree(1), metrics={"accuracy": 0.8})
    for step in (2, 3, 4):
        ckpts.save(step, tree(step))
    ckpts.wait()
    assert ckpts.steps() == [1, 4]
    ckpts.close()


def test_corrupt_latest_falls_back_to_previous(tmp_path, capsys):
    ckpts = Checkpoints(str(tmp_path), keep=3)
    for step in (1, 2, 3):
        ckpts.save(step, tree(step))
    ckpts.close()
    # Truncate every data file of the newest checkpoint, as a disk-full crash would.
    for root, _, files in os.walk(tmp_path / "3"):
        for name in files:
            with open(os.path.join(root, name), "r+b") as f:
                f.truncate(max(0, os.path.getsize(os.path.join(root, name)) // 3))
    ckpts = Checkpoints(str(tmp_path), keep=3)
    step, restored = ckpts.restore_latest(target())
    assert step == 2
    np.testing.assert_array_equal(restored["w"], np.full((4,), 2.0))
    assert "step 3" in capsys.readouterr().out
    assert ckpts.steps() == [1, 2]  # The unreadable one is gone, so step 3 can be re-saved.
    ckpts.save(3, tree(3))
    ckpts.close()


def test_restore_on_empty_directory(tmp_path):
    ckpts = Checkpoints(str(tmp_path), keep=1)
    assert ckpts.restore_latest(target()) == (None, None)
    ckpts.close()
