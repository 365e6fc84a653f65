"""`xception_transfer` end to end: both phases under mock tf_flowers with the backbone frozen
exactly in phase 1, and on the embedded shapes (the offline try). Shrunk: 71x71 inputs (Xception's
smallest), one middle-flow block instead of eight, a few steps."""

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorflow_datasets as tfds

import experiments
from cnnjax.overrides import apply_overrides
from cnnjax.train import experiment, loop, transfer

SMALL_XCEPTION = [
    ("data.image_size", "71"),
    ("model.middle_blocks", "0"),
    ("batch_size", "8"),
    ("eval_batch_size", "8"),
    ("log_every_steps", "1"),
    ("eval_every_steps", "0"),
]


def xception_config(overrides):
    return apply_overrides(
        experiments.EXPERIMENTS["xception_transfer"].get_config(), [*SMALL_XCEPTION, *overrides]
    )


def params_at(workdir, step) -> dict:
    tree = ocp.PyTreeCheckpointer().restore(
        os.path.join(workdir, "checkpoints", str(step), "default")
    )
    state = tree["state"]
    return transfer.flatten({"params": state["params"], "batch_stats": state["batch_stats"]})


def test_xception_transfer_under_mock_tf_flowers_freezes_the_backbone_exactly(tmp_path):
    config = xception_config(
        [
            ("data.data_dir", str(tmp_path / "tfds")),
            ("num_train_steps", "3"),
            ("transfer.freeze_steps", "2"),
            ("checkpoint_every_steps", "2"),
            ("keep_checkpoints", "5"),
        ]
    )
    assert config.data.name == "tf_flowers" and config.data.normalization == "inception"
    run = tmp_path / "run"
    with tfds.testing.mock_data(num_examples=16):
        exp = experiment.build(config)
        state = jax.device_get(exp.init_state())  # The run starts from this (same seed).
        initial = transfer.flatten({"params": state.params})
        initial_stats = transfer.flatten(state.batch_stats)
        outcome = loop.train_and_evaluate(config, str(run), experiment_name="xception_transfer")
    assert outcome.status == "completed" and outcome.step == 3
    assert outcome.eval_metrics["num_examples"] == 16
    assert np.isfinite(outcome.eval_metrics["loss"])
    np.testing.assert_array_equal(exp.data.mean, [0.5, 0.5, 0.5])  # [-1, 1] inputs.
    np.testing.assert_array_equal(exp.data.std, [0.5, 0.5, 0.5])

    # End of phase 1: every backbone parameter and BatchNorm statistic is bit-identical to its
    # initial value; only the head moved. Phase 2 then moves the backbone too.
    at_switch, final = params_at(run, 2), params_at(run, 3)
    backbone = [k for k in initial if not k.startswith("params/predictions/")]
    assert len(backbone) > 50
    for key in backbone:
        np.testing.assert_array_equal(at_switch[key], initial[key], err_msg=key)
    for key, value in initial_stats.items():
        np.testing.assert_array_equal(at_switch["batch_stats/" + key], value, err_msg=key)
    assert not np.array_equal(
        at_switch["params/predictions/kernel"], initial["params/predictions/kernel"]
    )
    assert not np.array_equal(
        final["params/block1_conv1/kernel"], initial["params/block1_conv1/kernel"]
    )

    with open(run / "metrics.jsonl") as f:
        events = [json.loads(line) for line in f]
    train = {e["step"]: e for e in events if e["kind"] == "train"}
    assert [train[s]["phase"] for s in (1, 2, 3)] == [1, 1, 2]
    assert [e["step"] for e in events if e["kind"] == "phase"] == [2]
    assert train[1]["lr"] == np.float32(0.2)  # Phase 1 peak; phase 2 starts at finetune_lr.
    assert train[3]["lr"] == np.float32(0.01)


def test_xception_transfer_runs_offline_on_shapes(tmp_path, capsys):
    config = xception_config(
        [
            ("data.name", "shapes"),
            ("num_train_steps", "2"),
            ("transfer.freeze_steps", "1"),
            ("checkpoint_every_steps", "0"),
        ]
    )
    with config.data.unlocked():  # The shapes source's own sizes: a CPU-sized test split.
        config.data.num_train, config.data.num_test = 32, 16
    outcome = loop.train_and_evaluate(config, str(tmp_path), experiment_name="xception_transfer")
    assert outcome.status == "completed" and outcome.step == 2
    assert outcome.eval_metrics["num_examples"] == 16
    out = capsys.readouterr().out
    assert "init: nothing to load" in out  # No Keras file given: a fresh start, said out loud.
    assert "phase 2 from step 1" in out and "optim changes nesterov=True" in out
