"""`detect_shapes` end to end through launch.py, shrunk: train, eval, visualize."""

import json

from launching import launch

TINY_DETECT = [
    "--experiment=detect_shapes",
    "--config.data.num_train=256",
    "--config.data.num_test=60",
    "--config.batch_size=32",
    "--config.eval_batch_size=25",  # 60 = 2 full batches + 10: the last one is padded.
    "--config.num_train_steps=24",
    "--config.log_every_steps=8",
    "--config.eval_every_steps=12",
]


def test_detect_shapes_trains_evaluates_and_draws(tmp_path):
    workdir = tmp_path / "run"
    proc = launch([*TINY_DETECT, f"--workdir={workdir}"], check=True)
    assert "done: test map50" in proc.stdout
    with open(workdir / "metrics.jsonl") as f:
        events = [json.loads(line) for line in f]
    train = [e for e in events if e["kind"] == "train"]
    evals = [e for e in events if e["kind"] == "eval"]
    assert [e["step"] for e in evals] == [12, 24]
    for e in evals:
        assert 0.0 <= e["map50"] <= 1.0 and e["num_examples"] == 60
        assert {"ap50_circle", "ap50_square", "ap50_triangle", "class_accuracy"} <= set(e)
    assert train[-1]["loss"] < train[0]["loss"]
    summary = (workdir / "summary.txt").read_text()
    assert "mAP@0.5" in summary and "triangle" in summary

    proc = launch([*TINY_DETECT, f"--workdir={workdir}", "--mode=eval"], check=True)
    best = max(evals, key=lambda e: e["map50"])
    assert f"map50 {best['map50']:.4f}" in proc.stdout

    proc = launch([*TINY_DETECT, f"--workdir={workdir}", "--mode=visualize"], check=True)
    png = workdir / "plots" / "detections.png"
    assert png.stat().st_size > 10_000 and str(png) in proc.stdout
