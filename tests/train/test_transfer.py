"""Transfer learning: initialization from another run, freezing (parameters and BatchNorm),
two phases in one run with a fresh optimizer, and exact resume across the phase boundary."""

import json
import os
import shutil
import signal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from launching import TINY_QUICKSTART, launch

from cnnjax.errors import UserError
from cnnjax.overrides import apply_overrides
from cnnjax.tasks.classification import for_labels
from cnnjax.train import experiment, steps, transfer
from cnnjax.train.state import create_train_state
from experiments import quickstart


def test_merge_loads_skips_and_reports():
    target = {
        "params": {
            "conv": {"kernel": np.zeros((3, 3, 1, 4))},
            "head": {"kernel": np.zeros((4, 10))},
            "extra": {"bias": np.zeros(2)},
        },
        "batch_stats": {},
    }
    source = {
        "params": {"conv": {"kernel": np.ones((3, 3, 1, 4))}, "head": {"kernel": np.ones((4, 5))}}
    }
    merged, report = transfer.merge(target, source, r"^head/")
    np.testing.assert_array_equal(merged["params"]["conv"]["kernel"], 1.0)
    np.testing.assert_array_equal(merged["params"]["head"]["kernel"], 0.0)  # Skipped: fresh.
    assert report["loaded"] == ["params/conv/kernel"]
    assert report["skipped"] == ["params/head/kernel"]
    assert report["new"] == ["params/extra/bias"]
    assert "loaded 1 arrays, skipped 1" in transfer.format_report(report)
    with pytest.raises(UserError, match=r"params/head/kernel has shape \(4, 5\) in the source"):
        transfer.merge(target, source, "")


class BNNet(nn.Module):
    @nn.compact
    def __call__(self, x, *, train: bool):
        x = nn.Conv(4, (3, 3), name="conv")(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.5, name="bn")(x)
        return nn.Dense(3, name="head")(nn.relu(x).mean(axis=(1, 2)))


def test_frozen_parameters_and_batchnorm_do_not_move_while_the_head_does():
    pattern = r"^(conv|bn)/"
    tx = transfer.freeze(optax.chain(optax.add_decayed_weights(0.1), optax.sgd(0.5, 0.9)), pattern)
    state = create_train_state(BNNet(), tx, jax.random.key(0), (8, 8, 1))
    state = state.replace(batch_stats=jax.tree.map(lambda s: s + 0.3, state.batch_stats))
    before = jax.tree.map(np.asarray, (state.params, state.batch_stats))
    step = jax.jit(steps.make_train_step(for_labels(3), freeze_pattern=pattern))
    x = jax.random.normal(jax.random.key(1), (16, 8, 8, 1)) * 3 + 1
    batch = {"image": x, "label": jnp.arange(16) % 3}
    for i in range(5):
        state, _ = step(state, batch, jax.random.key(i))
    for name in ("conv", "bn"):
        jax.tree.map(
            np.testing.assert_array_equal,
            before[0][name],
            jax.tree.map(np.asarray, state.params[name]),
        )
    jax.tree.map(
        np.testing.assert_array_equal, before[1], jax.tree.map(np.asarray, state.batch_stats)
    )
    assert not np.array_equal(before[0]["head"]["kernel"], state.params["head"]["kernel"])
    # A frozen BatchNorm normalizes with its running statistics, as in evaluation.
    train_out = transfer_apply(state, x, pattern)
    eval_out = state.apply_fn(state.variables, x, train=False)
    np.testing.assert_allclose(train_out, eval_out, rtol=1e-5, atol=1e-6)


def transfer_apply(state, x, pattern):
    with nn.intercept_methods(transfer.frozen_batchnorm(pattern)):
        out, _ = state.apply_fn(state.variables, x, train=True, mutable=["batch_stats"])
    return out


def events(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def params_at(workdir, step):
    tree = ocp.PyTreeCheckpointer().restore(
        os.path.join(workdir, "checkpoints", str(step), "default")
    )
    return ocp.tree.to_flat_dict(tree["state"]["params"])


def test_two_phase_fine_tune_from_a_checkpoint_resumes_exactly(tmp_path, quickstart_20_steps):
    source = quickstart_20_steps  # A finished 20-step tiny quickstart, read only.
    args = [
        *TINY_QUICKSTART,
        "--config.num_train_steps=30",
        "--config.checkpoint_every_steps=5",
        "--config.keep_checkpoints=10",
        f"--config.init.checkpoint={source}",
        "--config.transfer.freeze_pattern=^(conv|fc1)",
        "--config.transfer.freeze_steps=15",
        "--config.transfer.finetune_lr=0.0005",
        # Phase 1 is quickstart's Adam; phase 2 switches to SGD nesterov (another opt_state
        # structure, which the resume below must restore at the right step).
        "--config.transfer.finetune_optim.name=sgd",
        "--config.transfer.finetune_optim.nesterov=true",
        "--config.optim.weight_decay=0.01",
    ]
    reference = tmp_path / "reference"
    proc = launch([*args, f"--workdir={reference}"], check=True)
    assert "init: loaded" in proc.stdout and "skipped 2: params/head/bias" in proc.stdout
    assert "optim changes name=sgd, nesterov=True" in proc.stdout

    # Phase 1 moved only the unfrozen layers: conv1/conv2/fc1 equal the source's best params.
    src_step = max(
        e["step"]
        for e in events(source)
        if e["kind"] == "eval"
        and e["accuracy"] == max(x["accuracy"] for x in events(source) if x["kind"] == "eval")
    )
    loaded, at_switch = params_at(source, src_step), params_at(reference, 15)
    for key, value in loaded.items():
        if key[0] in ("conv1", "conv2", "fc1"):
            np.testing.assert_array_equal(at_switch[key], value, err_msg=str(key))
    assert not np.array_equal(at_switch[("fc2", "kernel")], loaded[("fc2", "kernel")])
    final = params_at(reference, 30)
    assert not np.array_equal(final[("conv1", "kernel")], loaded[("conv1", "kernel")])

    evs = events(reference)
    assert [e["step"] for e in evs if e["kind"] == "phase"] == [15]
    train = [e for e in evs if e["kind"] == "train"]
    assert {e["phase"] for e in train if e["step"] <= 15} == {1}
    assert {e["phase"] for e in train if e["step"] > 15} == {2}
    assert max(e["lr"] for e in train if e["phase"] == 2) <= 0.0005 + 1e-9

    # Killed in phase 2 (and once right at the boundary), then resumed: bit-identical.
    resumed = tmp_path / "resumed"
    for kill_at in (15, 22):
        proc = launch(
            [*args, f"--workdir={resumed}"], env={"CNNJAX_FAULT_KILL_AT_STEP": str(kill_at)}
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    launch([*args, f"--workdir={resumed}"], check=True)
    ours = params_at(resumed, 30)
    for key, value in final.items():
        np.testing.assert_array_equal(ours[key], value, err_msg=str(key))
    strip = lambda e: {
        k: v
        for k, v in e.items()
        if k not in ("wall_time", "elapsed_s", "images_per_sec", "seconds")
    }
    assert [strip(e) for e in events(resumed) if e["kind"] in ("train", "eval", "phase")] == [
        strip(e) for e in evs if e["kind"] in ("train", "eval", "phase")
    ]


def test_phase_two_optimizer_is_optim_updated_with_finetune_optim():
    config = apply_overrides(
        quickstart.get_config(),
        [
            ("num_train_steps", "10"),
            ("transfer.freeze_pattern", "^conv"),
            ("transfer.freeze_steps", "4"),
            ("transfer.finetune_lr", "0.01"),
            ("schedule.name", "constant"),
            ("schedule.warmup_epochs", "0"),
            ("transfer.finetune_optim.name", "sgd"),
            ("transfer.finetune_optim.nesterov", "true"),
            ("transfer.finetune_optim.momentum", "0.5"),
        ],
    )
    exp = experiment.build(config)
    one, two = exp.phases
    assert (one.start, one.end, two.start, two.end) == (0, 4, 4, 10)
    assert float(one.schedule(0)) == np.float32(3e-3) and float(two.schedule(0)) == np.float32(0.01)
    params = {"head": {"kernel": jnp.zeros((2, 3))}}
    grads = [{"head": {"kernel": jnp.full((2, 3), g)}} for g in (1.0, -2.0, 0.5)]

    def updates(tx):
        state, out = tx.init(params), []
        for g in grads:
            u, state = tx.update(g, state, params)
            out.append(np.asarray(u["head"]["kernel"]))
        return out

    nesterov = updates(optax.sgd(0.01, momentum=0.5, nesterov=True))
    for got, want in zip(updates(two.tx), nesterov, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    adam = updates(optax.adam(3e-3))  # quickstart's optimizer, unchanged in phase 1.
    for got, want in zip(updates(one.tx), adam, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_a_frozen_run_with_nothing_to_load_says_so():
    plain = quickstart.get_config()
    assert transfer.fresh_start_note(plain) == ""  # Nothing frozen: nothing to say.
    frozen = apply_overrides(plain, [("transfer.freeze_pattern", "^conv")])
    assert "init: nothing to load" in transfer.fresh_start_note(frozen)
    assert "--config.init.keras_weights=FILE.h5" in transfer.fresh_start_note(frozen)
    caffe = apply_overrides(frozen, [("data.normalization", "caffe")])
    assert "add --config.data.normalization=dataset" in transfer.fresh_start_note(caffe)
    loaded = apply_overrides(frozen, [("init.keras_weights", "x.h5")])
    assert transfer.fresh_start_note(loaded) == ""


def test_init_checkpoint_reads_the_best_step_verified_not_the_newest(tmp_path, quickstart_20_steps):
    """Issue 27: init.checkpoint ranked steps by a metrics file runs no longer write, so it
    always took the newest step. A run whose later steps are worse (resumed at a destructive
    learning rate) must give its best step; a damaged best step is warned about and skipped."""
    source = tmp_path / "source"
    shutil.copytree(quickstart_20_steps, source)
    launch(
        [
            *TINY_QUICKSTART,
            f"--workdir={source}",
            "--config.num_train_steps=40",
            "--config.eval_every_steps=10",
            "--config.keep_checkpoints=5",
            "--config.optim.lr=0.5",
        ],
        check=True,
    )
    evals = {e["step"]: e["accuracy"] for e in events(source) if e["kind"] == "eval"}
    best = max(evals, key=lambda s: (evals[s], s))
    newest = max(evals)
    assert best != newest and evals[best] > evals[newest] + 0.2, evals
    init = apply_overrides(quickstart.get_config(), [("init.checkpoint", str(source))]).init
    params = transfer.source_variables(init)["params"]
    for key, value in params_at(source, best).items():
        np.testing.assert_array_equal(ocp.tree.to_flat_dict(params)[key], value, err_msg=str(key))

    # The best step's array bytes flipped: its manifest catches it; the newest is read instead.
    data = next(
        p
        for p in (source / "checkpoints" / str(best)).rglob("*")
        if p.is_file() and p.stat().st_size > 1000 and "manifest" not in p.name
    )
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    proc = launch(
        [
            *TINY_QUICKSTART,
            f"--workdir={tmp_path / 'dst'}",
            "--config.num_train_steps=5",
            f"--config.init.checkpoint={source}",
        ],
        check=True,
    )
    assert f"warning: checkpoint at step {best}" in proc.stdout, proc.stdout
    assert f"init: reading step {newest} " in proc.stdout
