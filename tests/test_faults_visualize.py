"""`--mode=visualize` where it cannot finish, through launch.py in a subprocess: a read-only
run (a real read-only mount, which binds root too) and SIGTERM while drawing."""

import os
import shutil
import signal
import subprocess
import time

import pytest
from launching import launch, start
from PIL import Image


def _mount_tmpfs(mount):
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")


def test_a_read_only_run_is_one_line_naming_the_folder_and_viz_dir(quickstart_20_steps, tmp_path):
    mount = tmp_path / "ro"
    _mount_tmpfs(mount)
    try:
        run = mount / "run"
        shutil.copytree(quickstart_20_steps, run)
        shutil.rmtree(run / "plots", ignore_errors=True)
        remount = subprocess.run(["mount", "-o", "remount,ro", str(mount)], capture_output=True)
        assert remount.returncode == 0, remount.stderr
        proc = launch(["--experiment=quickstart", f"--workdir={run}", "--mode=visualize"])
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert f"Cannot write the pictures into {run / 'plots'}: Read-only file system" in lines[0]
        assert "--config.viz.dir=" in lines[0]
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_sigterm_while_drawing_is_one_line_exit_143_and_whole_pictures(
    quickstart_20_steps, tmp_path
):
    """Also `viz.dir`: the pictures go there, and the run's folder is left alone."""
    plots = tmp_path / "plots"
    proc = start(
        [
            "--experiment=quickstart",
            f"--workdir={quickstart_20_steps}",
            "--mode=visualize",
            f"--config.viz.dir={plots}",
        ]
    )
    try:
        deadline = time.monotonic() + 240
        while not (plots.is_dir() and any(n.endswith(".png") for n in os.listdir(plots))):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no picture was drawn"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)  # The first picture is written: mid-drawing.
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, out + err
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "terminated (SIGTERM) while drawing" in lines[0], err
    assert str(plots) in lines[0]
    names = os.listdir(plots)
    assert not [n for n in names if n.startswith(".tmp-")], names
    for name in names:  # Each picture written is whole.
        with Image.open(plots / name) as image:
            image.load()
    assert not os.path.exists(quickstart_20_steps / "plots" / "filters.png")
