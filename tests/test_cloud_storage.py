"""Runs in object storage (issue 24): a `gs://` workdir and a `gs://` TFDS data_dir against a
real GCS JSON API on localhost (tests/gcs_server.py), through launch.py in subprocesses, as a
TPU VM user would run them."""

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
from gcs_server import gcs_server
from launching import ROOT, TINY_QUICKSTART, launch, start
from PIL import Image
from test_faults_tfds import SHARED_TFDS, VERSION, make_small_mnist

pytest.importorskip("gcsfs")
pytest.importorskip("google.cloud.storage")


@pytest.fixture(scope="module")
def small_mnist(tmp_path_factory):
    return make_small_mnist(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def gcs():
    with gcs_server() as server:
        yield server


def _events(text: str) -> list[dict]:
    drop = ("wall_time", "elapsed_s", "images_per_sec", "seconds")
    events = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [
        {k: v for k, v in e.items() if k not in drop}
        for e in events
        if e["kind"] in ("train", "eval")
    ]


def _read(gcs, name: str) -> bytes:
    import urllib.parse
    import urllib.request

    quoted = urllib.parse.quote(name, safe="")
    with urllib.request.urlopen(f"{gcs.url}/storage/v1/b/{gcs.bucket}/o/{quoted}?alt=media") as r:
        return r.read()


def test_a_gs_workdir_trains_resumes_bit_identical_and_every_mode_reads_it(gcs, tmp_path):
    # Both runs first train 20 steps with num_train_steps=20, then go on to 40 (the second
    # gs:// command is killed at step 30, after its first run's saves have completed).
    local = tmp_path / "local"
    launch([*TINY_QUICKSTART, f"--workdir={local}", "--config.num_train_steps=20"], check=True)
    launch([*TINY_QUICKSTART, f"--workdir={local}"], check=True)

    run = gcs.uri("runs/qs")
    launch([*TINY_QUICKSTART, f"--workdir={run}", "--config.num_train_steps=20"], env=gcs.env)
    killed = launch(
        [*TINY_QUICKSTART, f"--workdir={run}"], env={**gcs.env, "CNNJAX_FAULT_KILL_AT_STEP": "30"}
    )
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    resumed = launch([*TINY_QUICKSTART, f"--workdir={run}"], env=gcs.env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Resuming from the checkpoint at step " in resumed.stdout, resumed.stdout
    assert not os.path.exists(os.path.join(ROOT, "gs:"))  # No URI taken for a local path.

    names = gcs.names("runs/qs/")
    for name in ("config.json", "data.json", "metrics.jsonl", "summary.txt"):
        assert f"runs/qs/{name}" in names, names
    assert any(n.startswith("runs/qs/tensorboard/events.out.tfevents.") for n in names)
    assert any(n.startswith("runs/qs/checkpoints/40/") for n in names)
    assert "runs/qs/.cnnjax.lock" not in names  # Released at the end.
    # Bit-identical to the uninterrupted local run: every logged loss and metric.
    ours = _events(_read(gcs, "runs/qs/metrics.jsonl").decode())
    assert ours == _events((local / "metrics.jsonl").read_text())

    args = ["--experiment=quickstart", f"--workdir={run}"]
    evaluated = launch([*args, "--mode=eval"], env=gcs.env)
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    reference = launch([*args[:1], f"--workdir={local}", "--mode=eval"], check=True)
    assert evaluated.stdout.splitlines()[-1] == reference.stdout.splitlines()[-1].replace(
        str(local), run
    )
    image = tmp_path / "digit.png"
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(image)
    gcs.upload("images/digit.png", image.read_bytes())
    remote_image = gcs.uri("images/digit.png")
    predicted = launch([*args, "--mode=predict", f"--images={image},{remote_image}"], env=gcs.env)
    assert predicted.returncode == 0, predicted.stdout + predicted.stderr
    lines = predicted.stdout.splitlines()
    top = lambda path: lines[lines.index(f"{path}:") + 1 :][:5]  # noqa: E731
    assert top(image) == top(remote_image), predicted.stdout  # The same file, read from GCS.
    started = launch(
        [*TINY_QUICKSTART, "--config.num_train_steps=5", f"--config.init.checkpoint={run}"]
        + [f"--workdir={tmp_path / 'from_gs'}"],
        env=gcs.env,
    )
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"init: reading step 40 of {run}/checkpoints (its best by accuracy)" in started.stdout
    exported = launch([*args, "--mode=export", "--config.export.formats=onnx"], env=gcs.env)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    drawn = launch([*args, "--mode=visualize", "--config.viz.max_eval_images=16"], env=gcs.env)
    assert drawn.returncode == 0, drawn.stdout + drawn.stderr
    names = gcs.names("runs/qs/")
    assert {"runs/qs/export/model.onnx", "runs/qs/export/model.json"} <= set(names)
    assert "runs/qs/plots/filters.png" in names


def test_a_second_run_on_a_gs_workdir_exits_2_and_a_crashed_runs_lock_expires(gcs, tmp_path):
    run = gcs.uri("runs/locked")
    lease = {**gcs.env, "CNNJAX_LOCK_LEASE_S": "3"}
    long_run = [
        *TINY_QUICKSTART,
        f"--workdir={run}",
        "--config.num_train_steps=100000",
        "--config.eval_every_steps=0",
        "--config.checkpoint_every_steps=0",
        "--config.log_every_steps=100",
    ]
    first = start(long_run, env=lease, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "runs/locked/.cnnjax.lock" not in gcs.names("runs/locked/"):
            assert first.poll() is None, first.stdout.read()
            assert time.monotonic() < deadline
            time.sleep(0.5)
        second = launch([*TINY_QUICKSTART, f"--workdir={run}"], env=lease, timeout=120)
        assert second.returncode == 2, second.stdout + second.stderr
        line = second.stderr.strip()
        assert len(line.splitlines()) == 1 and "Traceback" not in second.stdout + line
        assert f"is in use by process {first.pid} on " in line, line
    finally:
        first.kill()  # kill -9: the lease is not released, only no longer renewed.
        first.wait(timeout=30)
    time.sleep(3.5)
    taken = launch([*TINY_QUICKSTART, f"--workdir={run}", "--config.num_train_steps=10"], env=lease)
    assert taken.returncode == 0, taken.stdout + taken.stderr
    assert f"note: took over the lock of process {first.pid} on " in taken.stdout


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_TFDS, VERSION)), reason="no ../shared")
def test_a_prepared_tfds_dataset_in_a_bucket_trains_like_the_local_copy(gcs, small_mnist, tmp_path):
    """TFDS reads dataset_info.json through etils (gcsfs) and the array_record shards through
    google-cloud-cpp: both from the bucket, and the run learns what the local copy teaches."""
    for name in sorted(os.listdir(small_mnist / VERSION)):
        gcs.upload(f"tfds/{VERSION}/{name}", (small_mnist / VERSION / name).read_bytes())
    args = [*TINY_QUICKSTART, "--config.num_train_steps=8", "--config.data.name=mnist"]
    args += ["--config.eval_every_steps=8", "--config.checkpoint_every_steps=8"]
    local = launch([*args, f"--config.data.data_dir={small_mnist}", f"--workdir={tmp_path / 'a'}"])
    assert local.returncode == 0, local.stdout + local.stderr
    remote = launch(
        [*args, f"--config.data.data_dir={gcs.uri('tfds')}", f"--workdir={gcs.uri('runs/mnist')}"],
        env=gcs.env,
    )
    assert remote.returncode == 0, remote.stdout + remote.stderr
    assert "on mnist (256 train / 64 test)" in remote.stdout
    assert (
        remote.stdout.splitlines()[-1].split(";")[0] == local.stdout.splitlines()[-1].split(";")[0]
    )


@pytest.mark.parametrize("feeding", ["device", "stream"])
def test_an_image_folder_in_a_bucket_trains_like_the_local_folder(gcs, tmp_path, feeding):
    """`folder:gs://...`: listed with one request per folder, decoded from the bucket (in memory,
    cached on this machine; or streamed), and the run matches the one on the local copy."""
    from test_faults_inputs import TINY_FOLDER_RUN, write_folder

    root = tmp_path / "animals"
    write_folder(str(root), ["cat", "dog", "fish"])
    for file in sorted(root.rglob("*.png")):
        gcs.upload(f"animals-{feeding}/{file.relative_to(root)}", file.read_bytes())
    args = [*TINY_FOLDER_RUN, f"--config.data.feeding={feeding}"]
    local = launch([*args, f"--config.data.name=folder:{root}", f"--workdir={tmp_path / 'a'}"])
    assert local.returncode == 0, local.stdout + local.stderr
    remote = launch(
        [
            *args,
            f"--config.data.name=folder:{gcs.uri(f'animals-{feeding}')}",
            f"--workdir={tmp_path / 'b'}",
        ],
        env={**gcs.env, "CNNJAX_DATA_CACHE": str(tmp_path / "cache")},
    )
    assert remote.returncode == 0, remote.stdout + remote.stderr
    assert "(12 train / 6 test)" in remote.stdout, remote.stdout
    assert (
        remote.stdout.splitlines()[-1].split(";")[0] == local.stdout.splitlines()[-1].split(";")[0]
    )
