"""Checkpoint retention (last N plus best, newest always kept) and corrupt-checkpoint fallback
(more damage in test_checkpoint_faults.py)."""

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
    # The unreadable one is moved aside, not deleted, so step 3 can be re-saved.
    assert ckpts.steps() == [1, 2]
    assert len(list(tmp_path.glob("corrupt-3-*"))) == 1
    ckpts.save(3, tree(3))
    ckpts.close()


def test_restore_on_empty_directory(tmp_path):
    ckpts = Checkpoints(str(tmp_path), keep=1)
    assert ckpts.restore_latest(target()) == (None, None)
    ckpts.close()


def test_another_configs_checkpoint_is_refused_and_kept(tmp_path):
    """A readable checkpoint of other shapes (the config changed) is not "corrupt": restoring
    says how to resume and deletes nothing."""
    import pytest

    from cnnjax.errors import UserError
    from cnnjax.train.checkpoint import CheckpointMismatch

    ckpts = Checkpoints(str(tmp_path), keep=3)
    for step in (1, 2):
        ckpts.save(step, tree(step))
    ckpts.close()
    wider = {"w": jax.ShapeDtypeStruct((5,), jnp.float32), "step": target()["step"]}
    ckpts = Checkpoints(str(tmp_path), keep=3)
    with pytest.raises(CheckpointMismatch) as raised:
        ckpts.restore_latest(wider)
    assert isinstance(raised.value, UserError)  # launch.py: one line, exit 2.
    message = str(raised.value)
    assert "step 2" in message and "config.json" in message and "--workdir" in message
    assert "(4,)" in message and "(5,)" in message
    assert ckpts.steps() == [1, 2]
    step, restored = ckpts.restore_latest(target())  # The run's own shapes still restore.
    assert step == 2
    np.testing.assert_array_equal(restored["w"], np.full((4,), 2.0))
    ckpts.close()


def test_save_returns_before_the_write_and_survives_donation(tmp_path):
    """`save` snapshots the arrays on device: deleting (donating) them right after does not
    change what lands on disk."""
    ckpts = Checkpoints(str(tmp_path), keep=2)
    live = tree(7)
    ckpts.save(7, live)
    for x in jax.tree.leaves(live):
        x.delete()  # What a donating train step does to the state's buffers.
    ckpts.wait()
    _, restored = ckpts.restore_latest(target())
    np.testing.assert_array_equal(restored["w"], np.full((4,), 7.0))
    ckpts.close()


def test_best_by_loss_keeps_the_lowest(tmp_path):
    ckpts = Checkpoints(str(tmp_path), keep=1, best_metric="loss")
    for step, loss in {1: 0.9, 2: 0.2, 3: 0.5, 4: 0.7}.items():
        ckpts.save(step, tree(step), metrics={"loss": loss})
        ckpts.wait()
    assert ckpts.best_step() == 2
    assert ckpts.steps() == [2, 4]  # The lowest loss plus the newest.
    ckpts.close()


def test_processes_split_the_hashing_of_a_step_by_size():
    """With several processes each hashes a share of a step's files when it is restored
    (`_hash_share`): every file exactly once, about the same bytes each, the same split on
    every process (it depends on the manifest alone)."""
    from cnnjax.train.checkpoint import _hash_share

    sizes = [184_614_912, 151_924_736, 33_189_888, 4_534_272, 3_856_749, 347_143, 195_737]
    listed = {f"f{i}": {"size": s, "sha256": ""} for i, s in enumerate(sizes)}
    assert _hash_share(listed, 0, 1) == sorted(listed)
    for n in (2, 3, 4):
        shares = [_hash_share(listed, p, n) for p in range(n)]
        assert sorted(sum(shares, [])) == sorted(listed)
        if n == 2:
            loads = [sum(listed[r]["size"] for r in share) for share in shares]
            assert max(loads) < 0.55 * sum(sizes)
