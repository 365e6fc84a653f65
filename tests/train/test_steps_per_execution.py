"""`steps_per_execution`: k steps per device call train exactly what k = 1 trains, with log,
eval, checkpoint and epoch boundaries on their own steps, and each executable compiled once."""

import json
import logging
import os

import numpy as np
import orbax.checkpoint as ocp
import pytest

from cnnjax.train.loop import steps_until_boundary


@pytest.mark.parametrize(
    "step, per_call, total, intervals, marks, expected",
    [
        (0, 1, 100, (50,), (), 1),  # k = 1: always one step.
        (0, 8, 100, (50,), (), 8),
        (48, 8, 100, (50,), (), 2),  # Ends on the log step 50 ...
        (50, 8, 100, (50,), (), 8),  # ... and goes on from there.
        (90, 8, 97, (50,), (), 7),  # The run's last step.
        (40, 8, 100, (50, 0, 44), (), 4),  # The epoch ends at 44; 0 is "never".
        (40, 8, 100, (50,), (42,), 2),  # A phase starts at 42.
        (42, 8, 100, (50,), (42,), 8),  # Marks already passed do not count.
        (3, 4, 100, (5, 7), (), 2),  # The nearest of several intervals.
    ],
)
def test_steps_until_boundary(step, per_call, total, intervals, marks, expected):
    got = steps_until_boundary(
        step, per_call=per_call, total=total, intervals=intervals, marks=marks
    )
    assert got == expected


def _train(workdir, per_call: int, caplog, monkeypatch):
    import jax

    import experiments
    from cnnjax.overrides import apply_overrides
    from cnnjax.train import feeds, loop

    # The digits have 1,438 training images: 44 steps of 32 per epoch, so 50 steps cross an
    # epoch's end; logs every 6 steps do not divide it either. k = 4 then runs full calls,
    # shorter ones before each boundary, and single steps.
    config = apply_overrides(
        experiments.EXPERIMENTS["quickstart"].get_config(),
        [
            ("num_train_steps", "50"),
            ("batch_size", "32"),
            ("log_every_steps", "6"),
            ("eval_every_steps", "0"),
            ("checkpoint_every_steps", "0"),
            ("steps_per_execution", str(per_call)),
        ],
    )
    calls = []  # Steps run by each call of a compiled training function, in order.
    compile_feed = feeds.DeviceTrainFeed.compile
    compile_feed = getattr(compile_feed, "original", compile_feed)  # Not an earlier call's spy.

    def counted(fn, steps):
        def call(*args):
            calls.append(steps)
            return fn(*args)

        return call

    def spy(self, state, sums):
        compile_feed(self, state, sums)
        self._fn = counted(self._fn, 1)
        if self._many is not None:
            self._many = counted(self._many, self.per_call)

    spy.original = compile_feed
    monkeypatch.setattr(feeds.DeviceTrainFeed, "compile", spy)
    caplog.clear()
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level(logging.WARNING):
            outcome = loop.train_and_evaluate(config, str(workdir), write_report=False)
    finally:
        jax.config.update("jax_log_compiles", False)
    compiled = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        train = [e for e in map(json.loads, f) if e["kind"] == "train"]
    tree = ocp.PyTreeCheckpointer().restore(os.path.join(workdir, "checkpoints", "50", "default"))
    params = ocp.tree.to_flat_dict(tree["state"]["params"])
    return outcome, train, params, compiled, calls


def test_k_steps_per_call_train_what_single_steps_train(tmp_path, caplog, monkeypatch):
    one, train_one, params_one, _, calls_one = _train(tmp_path / "k1", 1, caplog, monkeypatch)
    four, train_four, params_four, compiled, calls = _train(tmp_path / "k4", 4, caplog, monkeypatch)
    assert calls_one == [1] * 50
    # Calls of 4 up to each boundary (log steps 6, 12, ..., the epoch's end at 44, step 50);
    # shorter stretches run as single steps.
    boundaries = sorted({*range(6, 49, 6), 44, 50})
    expected, step = [], 0
    for end in boundaries:
        while step < end:
            n = min(4, end - step)
            expected += [4] if n == 4 else [1] * n
            step += n
    assert sum(expected) == 50 and expected.count(4) == 8
    assert calls == expected

    # The same log steps (every 6th and the last), with the same running metrics.
    assert [e["step"] for e in train_four] == [*range(6, 49, 6), 50]
    assert [e["step"] for e in train_one] == [e["step"] for e in train_four]
    for a, b in zip(train_one, train_four, strict=True):
        np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-5)
        assert b["accuracy"] == pytest.approx(a["accuracy"], abs=1e-6)
    # The same parameters after 50 steps (float32 on the CPU; XLA may fuse the unrolled steps
    # differently, so not bit for bit), and the same test metrics.
    assert params_one.keys() == params_four.keys()
    for key in params_one:
        np.testing.assert_allclose(params_four[key], params_one[key], rtol=1e-4, atol=1e-6)
    assert four.eval_metrics["accuracy"] == pytest.approx(one.eval_metrics["accuracy"], abs=1e-6)
    np.testing.assert_allclose(four.eval_metrics["loss"], one.eval_metrics["loss"], rtol=1e-4)

    # One compile each: the single step, the 4-step call and the evaluation.
    for name in ("jit(fused)", "jit(fused_many)", "jit(evaluate)"):
        assert sum(name in m for m in compiled) == 1, (name, compiled)
