"""launch.py as a user sees it: exit codes, one-line errors, files written, metrics that move."""

import json
import os

import numpy as np
import pytest
from launching import TINY_QUICKSTART, launch


def assert_user_error(proc, *needles):
    """Exit code 2, one clear line on stderr, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_list_shows_experiments_with_descriptions():
    proc = launch(["--list"], check=True)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("quickstart"))
    assert "LeNet-5" in line


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--experiment=quickstrat"], ["Unknown experiment 'quickstrat'", "'quickstart'"]),
        ([], ["--experiment=NAME"]),
        (
            ["--experiment=quickstart", "--config.optim.lrr=0.1"],
            ["Unknown config key 'optim.lrr'", "'optim.lr'"],
        ),
        (
            ["--experiment=quickstart", "--config.optim.lr=fast"],
            ["--config.optim.lr=fast", "expected a number"],
        ),
        (["--experiment=quickstart", "--config.batch_size=2.5"], ["expected an integer"]),
        (["--experiment=quickstart", "--config.optim.nesterov=maybe"], ["true or false"]),
        (
            ["--experiment=quickstart", "--config.model.name=lenet6"],
            ["Unknown model 'lenet6'", "'lenet5'"],
        ),
        (
            ["--experiment=quickstart", "--config.data.name=digitz"],
            ["Unknown dataset 'digitz'", "'digits'"],
        ),
        (
            ["--experiment=quickstart", "--config.optim.name=sgdd"],
            ["Unknown optimizer 'sgdd'", "'sgd'"],
        ),
        (["--experiment=quickstart", "--experimnt=x"], ["Unknown flag --experimnt", "experiment"]),
        (["--experiment=quickstart", "--mode=trian"], ["trian"]),
        (["--experiment=quickstart", "--config.batch_size=5000"], ["batch_size=5000"]),
        (
            ["--experiment=quickstart", "--config.data.image_size=4"],
            ["cannot be built", "image_size"],
        ),
        (["--experiment=quickstart", "--config.batch_size=0"], ["batch_size=0", "at least 1"]),
        (
            ["--experiment=quickstart", "--config.num_train_steps=-5"],
            ["num_train_steps=-5", "-1"],
        ),
        (["--experiment=quickstart", "--config.num_train_steps=0"], ["num_train_steps=0"]),
        (
            ["--experiment=quickstart", "--config.num_epochs=-1"],
            ["num_epochs=-1.0 trains nothing"],
        ),
        (
            ["--experiment=quickstart", "--config.steps_per_execution=0"],
            ["steps_per_execution=0", "at least 1"],
        ),
        (["--experiment=quickstart", "--workdir=README.md"], ["README.md is a file"]),
        (
            ["--experiment=quickstart", "--config.model.num_classes=5"],
            ["model.num_classes", "from the dataset"],
        ),
        (
            ["--experiment=quickstart", "--config.best_metric=acc"],
            ["best_metric='acc'", "'accuracy'"],
        ),
        (
            ["--experiment=quickstart", "--config.model.name=fcn8s"],
            ["'fcn8s' does not fit task 'classification'"],
        ),
        (
            ["--experiment=quickstart", "--mode=eval", "--workdir=/nonexistent/run"],
            ["No readable checkpoint"],
        ),
    ],
)
def test_user_mistakes_exit_2_with_one_line(args, needles):
    assert_user_error(launch(args), *needles)


def test_quickstart_end_to_end_shrunk(tmp_path):
    workdir = tmp_path / "run"
    # Trained with a non-default head; eval, visualize and predict below are not told so:
    # they read the run's own settings from its config.json.
    trained = [*TINY_QUICKSTART, "--config.model.dense=(120,64)"]
    proc = launch([*trained, f"--workdir={workdir}"], check=True)
    assert "done: test accuracy" in proc.stdout
    for name in (
        "config.json",
        "metrics.jsonl",
        "summary.txt",
        "plots/training_curves.png",
        "plots/confusion_matrix.png",
    ):
        assert (workdir / name).is_file(), name
    assert any(
        p.name.startswith("events.out.tfevents") for p in (workdir / "tensorboard").iterdir()
    )
    config = json.loads((workdir / "config.json").read_text())
    assert config["num_train_steps"] == 40 and config["model"]["name"] == "lenet5"

    events = [json.loads(ln) for ln in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [e for e in events if e["kind"] == "train"]
    evals = [e for e in events if e["kind"] == "eval"]
    assert [e["step"] for e in train] == list(range(5, 41, 5))
    assert [e["step"] for e in evals] == [20, 40]
    for e in train:
        assert {"epoch", "wall_time", "images_per_sec", "loss", "accuracy", "lr"} <= set(e)
        assert e["images_per_sec"] > 0
    # Metrics that move: the loss falls and the model beats chance (10%) by far.
    assert train[-1]["loss"] < 0.6 * train[0]["loss"]
    assert evals[-1]["accuracy"] > 0.5
    assert {"top5_accuracy", "macro_f1", "loss"} <= set(evals[-1])

    summary = (workdir / "summary.txt").read_text()
    assert "accuracy" in summary and "precision" in summary
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == 40  # The newest checkpoint always survives retention.

    # --mode=eval on the finished run reports the best checkpoint's metrics.
    proc = launch([*TINY_QUICKSTART, f"--workdir={workdir}", "--mode=eval"], check=True)
    best = max(evals, key=lambda e: e["accuracy"])
    assert f"accuracy {best['accuracy']:.4f}" in proc.stdout
    assert "using the run's settings" in proc.stdout and "model.dense" in proc.stdout

    # --mode=visualize draws every kind of picture of the run from its best checkpoint.
    proc = launch([*TINY_QUICKSTART, f"--workdir={workdir}", "--mode=visualize"], check=True)
    kinds = (
        "filters",
        "filter_histograms",
        "feature_maps",
        "gradcam",
        "confusion_matrix",
        "training_curves",
        "classic_kernels",
        "mistakes",
        "score_grid",  # LeNet-5 convolutionalized over 3x3 test digits.
    )
    for kind in kinds:
        png = workdir / "plots" / f"{kind}.png"
        assert png.stat().st_size > 10_000, kind
        assert str(png) in proc.stdout
    assert "FRESH" not in proc.stdout

    # --mode=predict prints named top-5 classes per image; a missing file is one line.
    from PIL import Image

    from cnnjax.data import digits

    image = digits.load()["test_images"][0][..., 0]
    Image.fromarray(np.kron(image, np.ones((8, 8), np.uint8))).save(workdir / "digit.png")
    proc = launch(
        [
            *TINY_QUICKSTART,
            f"--workdir={workdir}",
            "--mode=predict",
            f"--images={workdir / 'digit.png'},{workdir / 'missing.png'}",
        ],
        check=True,
    )
    assert "digit.png:" in proc.stdout and "  5. " in proc.stdout
    assert "error: cannot read" in proc.stderr and "missing.png" in proc.stderr  # Not stdout.

    # Re-running the finished run resumes at the end: nothing retrained, no duplicate events.
    proc = launch([*trained, f"--workdir={workdir}"], check=True)
    assert "Resuming from the checkpoint at step 40" in proc.stdout
    events_again = [json.loads(ln) for ln in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events_again] == [e["step"] for e in events]


def test_summary_mode_prints_the_keras_style_table():
    proc = launch(["--experiment=quickstart", "--mode=summary"], check=True)
    assert "Trainable params: 62,558" in proc.stdout  # LeNet-5 on 1-channel digits.
    assert "Forward FLOPs per image" in proc.stdout and "conv1 (Conv)" in proc.stdout
    assert "1,438 train / 359 test" in proc.stdout


def test_summary_needs_no_prepared_dataset(tmp_path):
    """The README's `vgg_blocks_cifar --mode=summary` works on a fresh install: the shapes come
    from the TFDS description when CIFAR-10 is not prepared."""
    proc = launch(
        ["--experiment=vgg_blocks_cifar", "--mode=summary"],
        env={"TFDS_DATA_DIR": str(tmp_path)},
        check=True,
    )
    assert "Trainable params: 1,186,378" in proc.stdout
    assert "cifar10, images of (32, 32, 3), 10 classes" in proc.stdout
    assert "not prepared here" in proc.stdout


def test_predict_without_images_or_a_run_is_a_clear_error():
    assert_user_error(launch(["--experiment=quickstart", "--mode=predict"]), "--images=")
    assert_user_error(
        launch(["--experiment=quickstart", "--mode=predict", "--images=a.png"]), "--workdir=RUN_DIR"
    )


def test_visualize_without_a_run_draws_fresh_weights_and_says_so(tmp_path):
    proc = launch(
        ["--experiment=quickstart", "--mode=visualize", f"--workdir={tmp_path}"], check=True
    )
    assert "freshly initialized" in proc.stdout
    assert (tmp_path / "plots" / "filters.png").is_file()
    assert not (tmp_path / "plots" / "training_curves.png").exists()


def test_default_workdir_is_fresh_under_runs():
    from cnnjax.modes.train import default_workdir

    path = default_workdir("quickstart")
    assert os.path.dirname(path) == "runs"
    assert os.path.basename(path).startswith("quickstart-")
