"""docs/tpu.md's commands that can run here, word for word: the blocks marked
`<!-- tested: NAME -->`, run by bash with the installed `cnnjax` command. Only $RUN, $PORT and
$BUCKET are filled in, and the run is shortened (a shell function adds tiny --config overrides
to every `cnnjax` call). Two CPU processes stand in for two TPU workers; a GCS API server on
localhost stands in for the bucket."""

import os
import re
import subprocess
import sys

import pytest
from gcs_server import _free_port, gcs_server
from launching import ROOT, TINY_QUICKSTART, launch_env

DOC = os.path.join(ROOT, "docs", "tpu.md")
CNNJAX = os.path.join(os.path.dirname(sys.executable), "cnnjax")
SHORT = " ".join(a for a in TINY_QUICKSTART if a.startswith("--config."))


def block(name: str) -> str:
    text = open(DOC, encoding="utf-8").read()
    found = re.search(rf"<!-- tested: {name} -->\n```bash\n(.*?)```", text, re.S)
    assert found, f"docs/tpu.md has no block marked tested: {name}"
    return found.group(1)


def run_block(name: str, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    script = f'cnnjax() {{ "{CNNJAX}" "$@" {SHORT}; }}\nset -e\n{block(name)}'
    return subprocess.run(
        ["bash", "-c", script],
        cwd=ROOT,
        env=launch_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_two_process_block_trains_one_run(tmp_path):
    assert os.path.exists(CNNJAX), "the cnnjax command is not installed (pip install -e .)"
    run = tmp_path / "run"
    proc = run_block("two-processes", {"RUN": str(run), "PORT": str(_free_port())})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "on 2 cpu device(s)" in proc.stdout  # One program over both processes' devices.
    assert (run / "checkpoints" / "40").is_dir() and (run / "summary.txt").exists()


def test_the_bucket_block_trains_and_evaluates_in_object_storage():
    pytest.importorskip("gcsfs")
    with gcs_server() as gcs:
        proc = run_block("bucket", {**gcs.env, "BUCKET": gcs.bucket})
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "test loss" in proc.stdout.splitlines()[-1], proc.stdout[-2000:]
        assert "runs/qs/checkpoints/40/" in " ".join(gcs.names("runs/qs/"))
