"""--mode=benchmark as a user sees it: the timing table, for a classifier and another task."""

import pytest
from launching import launch


@pytest.mark.parametrize(
    "args",
    [
        ["--experiment=quickstart"],
        ["--experiment=quickstart", "--config.steps_per_execution=2"],
        [
            "--experiment=detect_shapes",
            "--config.data.num_train=64",
            "--config.data.num_test=16",
            "--config.batch_size=16",
        ],
    ],
    ids=["classification", "two_steps_per_call", "detection"],
)
def test_benchmark_prints_the_timing_table(tmp_path, args):
    proc = launch(
        [
            *args,
            "--mode=benchmark",
            "--config.benchmark.steps=2",
            "--config.benchmark.warmup=1",
            "--config.benchmark.loop_steps=4",
        ],
        env={"HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for field in ("images/s", "ms/step", "compile", "MFU", "input, on device", "loop wall"):
        assert field in out, out
    # The images/s figures of the bare step and of the real loop are positive numbers.
    line = next(line for line in out.splitlines() if line.strip().startswith("images/s"))
    assert float(line.split()[-1].replace(",", "")) > 0
    loop = next(line for line in out.splitlines() if line.strip().startswith("loop "))
    assert float(loop.split()[1].replace(",", "")) > 0 and "over 4 steps" in loop
    assert "workdir:" not in out  # The loop's own console lines stay out of the report.
    if "--config.steps_per_execution=2" in args:
        assert "2 per device call" in out, out
