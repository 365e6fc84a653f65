"""The workdir: config.json read back defensively, and one training writer at a time."""

import os
import shutil

import pytest
from launching import TINY_QUICKSTART, launch

from cnnjax import workdir
from cnnjax.errors import UserError


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"\x8f\x02garbage\xff", "is not valid JSON"),
        (b'{"seed": 1,', "is not valid JSON"),
        (b"[]", "holds a JSON list"),
    ],
)
def test_a_damaged_config_json_is_one_user_error_naming_it(tmp_path, content, problem):
    (tmp_path / "config.json").write_bytes(content)
    with pytest.raises(UserError, match=problem) as raised:
        workdir.read_config(str(tmp_path))
    message = str(raised.value)
    assert str(tmp_path / "config.json") in message and "move it aside" in message
    assert "\n" not in message


def test_no_config_json_is_none(tmp_path):
    assert workdir.read_config(str(tmp_path)) is None


def test_changed_keys_diff_nested_trees():
    import ml_collections

    config = ml_collections.ConfigDict({"optim": {"lr": 0.1, "name": "sgd"}, "seed": 0})
    saved = {"optim": {"lr": 0.2, "name": "sgd"}, "seed": 0, "gone": 1}
    assert workdir.changed_keys(saved, config) == ["gone", "optim.lr"]


def test_a_damaged_config_json_stops_every_mode_with_exit_2(quickstart_20_steps, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(quickstart_20_steps, run)
    before = sorted(os.listdir(run / "checkpoints"))
    (run / "config.json").write_text("[]")
    for mode in ("train", "eval", "visualize"):
        proc = launch([*TINY_QUICKSTART, f"--workdir={run}", f"--mode={mode}"])
        assert proc.returncode == 2, (mode, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "config.json holds a JSON list" in lines[0], proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
    assert (run / "config.json").read_text() == "[]"  # Left for the user to mend.
    assert sorted(os.listdir(run / "checkpoints")) == before


def test_a_second_writer_exits_2_at_once_naming_the_first(quickstart_20_steps, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(quickstart_20_steps, run)
    metrics = (run / "metrics.jsonl").read_bytes()
    with workdir.exclusive(str(run)):  # This test process is "the first run".
        proc = launch([*TINY_QUICKSTART, f"--workdir={run}", "--config.num_train_steps=30"])
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and f"is in use by process {os.getpid()}" in lines[0], lines
        # Read-only modes need no lock: the run can be evaluated while it trains.
        evaluated = launch([*TINY_QUICKSTART, f"--workdir={run}", "--mode=eval"], check=True)
        assert "@ step 20" in evaluated.stdout
    assert (run / "metrics.jsonl").read_bytes() == metrics  # The second writer wrote nothing.
    # Once the first one ends (a kill -9 too: the OS drops the lock), training may go on.
    launch([*TINY_QUICKSTART, f"--workdir={run}", "--config.num_train_steps=30"], check=True)


def test_the_lock_is_released_when_its_holder_ends(tmp_path):
    with workdir.exclusive(str(tmp_path)):
        pass
    with workdir.exclusive(str(tmp_path)):  # Not stale.
        pass


def test_an_unwritable_workdir_is_a_user_error(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only directories")
    os.chmod(tmp_path, 0o500)
    try:
        with pytest.raises(UserError, match="Cannot write into"):
            with workdir.exclusive(str(tmp_path)):
                pass
    finally:
        os.chmod(tmp_path, 0o700)
