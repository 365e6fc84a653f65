"""Scale: the same experiment on 1 device, 8 fake devices and 2 real processes; checkpoints move
between device counts and process counts; a stop is agreed by all processes; each step
function compiles once; `--distributed` joins what JAX detects."""

import glob
import json
import logging
import os
import shutil
import signal

import numpy as np
import pytest
from launching import TINY_QUICKSTART, launch, launch_processes

from cnnjax.train.checkpoint import MANIFEST, Checkpoints

EIGHT = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}


def eval_events(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [e for e in map(json.loads, f) if e["kind"] == "eval"]


@pytest.fixture(scope="module")
def eight_device_run(tmp_path_factory):
    """(workdir, stdout) of the 20-step tiny quickstart finished on 8 fake devices: the run
    `quickstart_20_steps` (tests/conftest.py) makes on one. Read-only: copy it to resume it."""
    workdir = tmp_path_factory.mktemp("eight_devices") / "run"
    args = [*TINY_QUICKSTART, "--config.num_train_steps=20", f"--workdir={workdir}"]
    return workdir, launch(args, env=EIGHT, check=True).stdout


def test_eight_devices_train_like_one(eight_device_run, quickstart_20_steps):
    workdir, stdout = eight_device_run
    assert "on 8 cpu device(s)" in stdout
    one, eight = eval_events(quickstart_20_steps)[-1], eval_events(workdir)[-1]
    assert one["step"] == eight["step"] == 20
    np.testing.assert_allclose(eight["loss"], one["loss"], rtol=1e-4)
    assert abs(eight["accuracy"] - one["accuracy"]) <= 1 / 359


def test_checkpoint_from_8_devices_restores_on_1_and_continues(eight_device_run, tmp_path):
    shutil.copytree(eight_device_run[0], tmp_path, dirs_exist_ok=True)
    args = [*TINY_QUICKSTART, f"--workdir={tmp_path}"]
    proc = launch([*args, "--config.num_train_steps=30"], check=True)
    assert "Resuming from the checkpoint at step 20" in proc.stdout
    assert "on 1 cpu device(s)" in proc.stdout
    final = eval_events(tmp_path)[-1]
    assert final["step"] == 30 and np.isfinite(final["loss"]) and final["accuracy"] > 0.3


def test_two_processes_train_together_like_one_process_with_two_devices(tmp_path):
    args = [*TINY_QUICKSTART, "--config.num_train_steps=20"]
    launch(
        [*args, f"--workdir={tmp_path / 'one'}"],
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
        check=True,
    )
    outs = run_processes(args, tmp_path / "two", 2)  # One cpu device each.
    assert "on 2 cpu device(s)" in outs[0].stdout
    one, two = eval_events(tmp_path / "one"), eval_events(tmp_path / "two")
    assert [e["step"] for e in one] == [e["step"] for e in two]
    for a, b in zip(one, two, strict=True):
        np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-4)
        assert abs(a["accuracy"] - b["accuracy"]) <= 1 / 359


def test_each_step_function_compiles_once(tmp_path, caplog):
    import jax

    import experiments
    from cnnjax.overrides import apply_overrides
    from cnnjax.train import loop

    config = apply_overrides(
        experiments.EXPERIMENTS["quickstart"].get_config(),
        [
            ("num_train_steps", "30"),
            ("batch_size", "32"),
            ("eval_every_steps", "10"),
            ("log_every_steps", "5"),
            ("checkpoint_every_steps", "0"),
        ],
    )
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level(logging.WARNING):
            loop.train_and_evaluate(config, str(tmp_path))
    finally:
        jax.config.update("jax_log_compiles", False)
    compiled = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    # 30 steps over 2 epochs, 3 evaluations: still one compilation each.
    assert sum("jit(fused)" in m for m in compiled) == 1, compiled
    assert sum("jit(evaluate)" in m for m in compiled) == 1, compiled


# ---- Several processes behave like one (issue 24): a stop agreed by all, checkpoints that
# move between process counts and are verified by all, `--distributed`.

STREAMED = [*TINY_QUICKSTART, "--config.data.feeding=stream"]  # 40 steps, saves every 10.


def run_processes(args, workdir, n, **kwargs):
    """Runs `launch.py ARGS --workdir=WORKDIR` as `n` processes; all must exit 0."""
    outs = launch_processes([*args, f"--workdir={workdir}"], n, **kwargs)
    for i, out in enumerate(outs):
        assert out.returncode == 0, f"process {i} exited {out.returncode}:\n{out.stderr[-3000:]}"
        assert "Traceback" not in out.stderr, out.stderr[-3000:]
    return outs


def saved_steps(workdir):
    return sorted(int(p) for p in os.listdir(os.path.join(workdir, "checkpoints")) if p.isdigit())


def final_params(workdir):
    """(step, {path: NumPy array}) of the parameters of the newest checkpoint (verified)."""
    import orbax.checkpoint as ocp

    ckpts = Checkpoints(os.path.join(workdir, "checkpoints"), keep=9, read_only=True)
    step = ckpts.steps()[-1]
    params = ckpts.read_arrays(step)["state"]["params"]
    ckpts.close()
    return step, ocp.tree.to_flat_dict(params)


def events(workdir, kind):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [
            {k: v for k, v in e.items() if k not in ("wall_time", "elapsed_s", "images_per_sec")}
            for e in map(json.loads, f)
            if e["kind"] == kind
        ]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """The workdir of the tiny quickstart, streamed, trained to the end by 2 processes without
    interruption (checkpoints 20, 30, 40 kept). Read-only: copy it to resume it."""
    workdir = tmp_path_factory.mktemp("two_processes") / "run"
    run_processes(STREAMED, workdir, 2)
    return workdir


def test_sigterm_to_one_process_stops_all_at_one_step_and_resumes_bit_identically(
    two_process_run, tmp_path
):
    """Process 1 alone gets SIGTERM at step 13 (it used to enter the save's collectives while
    process 0 entered step 14's: a hang). They agree at the next vote: both save that step
    and exit 0, and the same command resumes to the uninterrupted run's very parameters."""
    from cnnjax.train import loop

    every = loop._AGREE_EVERY_STEPS
    agreed = (13 // every + 1) * every
    assert agreed < 40
    workdir = tmp_path / "run"
    outs = run_processes(STREAMED, workdir, 2, envs=[{}, {"CNNJAX_FAULT_SIGTERM_AT_STEP": "13"}])
    assert f"Stopped by signal 15 at step {agreed}; checkpoint saved" in outs[0].stdout
    (preempted,) = events(workdir, "preempted")
    assert preempted["step"] == agreed and preempted["signal"] == signal.SIGTERM
    assert saved_steps(workdir)[-1] == agreed
    assert os.path.exists(os.path.join(workdir, "checkpoints", str(agreed), MANIFEST))

    outs = run_processes(STREAMED, workdir, 2)
    assert f"Resuming from the checkpoint at step {agreed}" in outs[0].stdout
    (step_a, a), (step_b, b) = final_params(two_process_run), final_params(workdir)
    assert step_a == step_b == 40 and a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=str(key))
    assert events(workdir, "train") == events(two_process_run, "train")


def test_a_checkpoint_of_two_processes_restores_on_one_and_on_four(two_process_run, tmp_path):
    """The 2-process run resumes on 1 process (1 device, on-device input) and on 4 processes
    (8 devices). For the 4, one bit of step 40 is flipped in a file only process 3 hashes (each
    hashes its share): all four agree the step is unreadable and resume from step 30."""
    from cnnjax.train import checkpoint

    one, four = tmp_path / "one", tmp_path / "four"
    shutil.copytree(two_process_run, one)
    shutil.copytree(two_process_run, four)
    args = [*STREAMED, "--config.num_train_steps=45"]

    proc = launch([*args, "--config.data.feeding=device", f"--workdir={one}"], check=True)
    assert "Resuming from the checkpoint at step 40" in proc.stdout
    assert "on 1 cpu device(s)" in proc.stdout
    final = eval_events(one)[-1]
    assert final["step"] == 45 and final["accuracy"] > 0.5

    step_dir = four / "checkpoints" / "40"
    with open(step_dir / MANIFEST) as f:
        listed = json.load(f)["files"]
    rel = max(checkpoint._hash_share(listed, 3, 4), key=lambda r: listed[r]["size"])
    assert rel not in checkpoint._hash_share(listed, 0, 4)
    with open(step_dir / rel, "r+b") as f:
        f.seek(listed[rel]["size"] // 2)
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 0x01]))
    eight = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    outs = run_processes(args, four, 4, env=eight)
    assert "on 8 cpu device(s)" in outs[0].stdout
    for out in outs:  # Every process names the file, whichever hashed it.
        assert (
            f"checkpoint at step 40 in {four / 'checkpoints'} is unreadable (ChangedFile: {rel}"
            in out.stdout
        )
    assert "Resuming from the checkpoint at step 30" in outs[0].stdout
    assert len(glob.glob(str(four / "checkpoints" / "corrupt-40-*"))) == 1
    final = eval_events(four)[-1]
    assert final["step"] == 45 and final["accuracy"] > 0.5


def test_distributed_on_without_a_cluster_and_off_with_a_coordinator_are_one_line_exit_2():
    for flags, says in (
        (["--distributed=on"], "could not join a multi-process run (--distributed=on)"),
        (
            ["--distributed=off", "--coordinator_address=localhost:1"],
            "--distributed=off runs one process",
        ),
    ):
        proc = launch([*TINY_QUICKSTART, *flags, "--mode=summary"], env=NO_CLUSTER)
        assert proc.returncode == 2, proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith("error: ") and says in line, line


# No cluster around, and a GCE metadata server that cannot be reached (never the real one).
NO_CLUSTER = {
    "GCE_METADATA_HOST": "127.0.0.1:9",
    "GCE_METADATA_IP": "127.0.0.1:9",
    "GCE_METADATA_ROOT": "127.0.0.1:9",
    "NO_GCE_CHECK": "true",
}
_CLUSTER_VARIABLES = ("SLURM_", "OMPI_", "TPU_", "MEGASCALE_", "KUBERNETES_", "JOB_COMPLETION")


@pytest.fixture
def no_cluster(monkeypatch):
    """This process outside any cluster, JAX's initialize recorded instead of run (and the
    gloo setting with it); returns the list of initialize calls."""
    import jax

    for name in os.environ:
        if name.startswith(_CLUSTER_VARIABLES) or name == "JAX_COORDINATOR_ADDRESS":
            monkeypatch.delenv(name)
    for name, value in NO_CLUSTER.items():
        monkeypatch.setenv(name, value)
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    monkeypatch.setattr(jax.config, "update", lambda *a: None)
    return calls


@pytest.fixture
def tpu_vm(monkeypatch, no_cluster):
    """As on a Cloud TPU VM (JAX found libtpu and chips); returns the fake metadata server's
    attributes (None: unreachable, the real function against 127.0.0.1:9)."""
    from jax._src.clusters import cloud_tpu_cluster

    monkeypatch.setattr(cloud_tpu_cluster, "running_in_cloud_tpu_vm", True)
    metadata = {}

    def get_metadata(key):
        if metadata.get("unreachable"):
            return real(key)
        return metadata[key], 200

    real = cloud_tpu_cluster.get_metadata
    monkeypatch.setattr(cloud_tpu_cluster, "get_metadata", get_metadata)
    return metadata


@pytest.mark.parametrize(
    "env, joins",
    [
        ({}, False),
        ({"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n1", "SLURM_NTASKS": "1"}, False),
        ({"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "2"}, True),
        ({"OMPI_MCA_orte_hnp_uri": "1.0;tcp://10.0.0.1:4", "OMPI_COMM_WORLD_SIZE": "4"}, True),
        ({"OMPI_MCA_orte_hnp_uri": "1.0;tcp://10.0.0.1:4", "OMPI_COMM_WORLD_SIZE": "1"}, False),
        ({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, False),  # A pod, not an indexed Job.
        ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, True),
        ({"TPU_WORKER_HOSTNAMES": "a,b"}, False),  # Not a TPU VM: JAX would not join either.
    ],
)
def test_auto_joins_a_cluster_of_several_processes(no_cluster, monkeypatch, env, joins):
    from cnnjax import parallel

    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_LOCALID", "0")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    parallel.initialize_distributed()
    assert len(no_cluster) == int(joins)
    parallel.initialize_distributed(mode="off")
    assert len(no_cluster) == int(joins)


def test_explicit_flags_join_in_auto_and_on(no_cluster):
    from cnnjax import parallel

    parallel.initialize_distributed("h:1", 2, 1)
    parallel.initialize_distributed("h:1", 2, 1, mode="on")
    parallel.initialize_distributed(mode="on")  # JAX's own detection decides (and may fail).
    want = {"coordinator_address": "h:1", "num_processes": 2, "process_id": 1}
    assert no_cluster == [want, want, dict.fromkeys(want)]


def test_a_tpu_vm_asks_the_metadata_server_for_the_slice(tpu_vm, no_cluster, capsys):
    """Only the metadata server knows a TPU VM's slice (decisions.md): a slice of 4 hosts
    joins, a single-host TPU VM runs alone, and an unreachable server is one warning line."""
    from cnnjax import parallel

    tpu_vm.update({"agent-worker-number": "2", "worker-network-endpoints": "a,b,c,d"})
    tpu_vm["tpu-env"] = ""
    assert parallel.detect_cluster() == ("TPU VM slice", 4)
    parallel.initialize_distributed()
    assert len(no_cluster) == 1

    tpu_vm.update({"agent-worker-number": "0", "worker-network-endpoints": "a"})
    parallel.initialize_distributed()
    assert len(no_cluster) == 1

    tpu_vm["unreachable"] = True  # The real request, to 127.0.0.1:9: refused at once.
    parallel.initialize_distributed()
    assert len(no_cluster) == 1
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("warning: this looks like a TPU VM slice") and "one process" in line


def test_a_tpu_vm_told_to_skip_the_metadata_server_is_not_asked(tpu_vm, monkeypatch):
    from cnnjax import parallel

    monkeypatch.setenv("TPU_SKIP_MDS_QUERY", "1")  # tpu_vm's dict is empty: any ask fails.
    assert parallel.detect_cluster() is None
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "a,b")  # GKE: the hosts come from variables.
    monkeypatch.setenv("MEGASCALE_NUM_SLICES", "2")
    assert parallel.detect_cluster() == ("GKE TPU slice", 4)
