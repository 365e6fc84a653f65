"""A run remembers what it was trained on (cnnjax.data.record, WORKDIR/data.json): renamed,
added or removed classes and moved statistics stop a resume and an eval with one line instead of
a silently wrong answer, and predict needs no training data at all."""

import json
import os
import shutil

import numpy as np
import pytest
from launching import TINY_QUICKSTART, launch
from PIL import Image

from cnnjax import data as data_lib
from cnnjax.data import record
from cnnjax.errors import UserError

FOLDER_RUN = [
    "--experiment=quickstart",
    "--config.data.image_size=32",
    "--config.num_train_steps=8",
    "--config.batch_size=4",
    "--config.log_every_steps=4",
    "--config.eval_every_steps=8",
    "--config.checkpoint_every_steps=8",
    "--compilation_cache=off",
]


def write_folder(root, classes, *, train=6, test=3, size=8):
    """train/<class>/i.png and test/<class>/i.png, one colour per class."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        for k, name in enumerate(classes):
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                pixels = np.full((size, size, 3), 30 + 80 * k, np.uint8)
                pixels += rng.integers(0, 20, pixels.shape, dtype=np.uint8)
                Image.fromarray(pixels).save(os.path.join(folder, f"{i}.png"))


def one_error_line(proc) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_a_renamed_class_stops_eval_and_resume_and_predict_needs_no_data(tmp_path):
    root, run = tmp_path / "animals", tmp_path / "run"
    write_folder(str(root), ["cat", "dog", "fish"])
    train = [*FOLDER_RUN, f"--config.data.name=folder:{root}", f"--workdir={run}"]
    launch(train, check=True)
    saved = json.loads((run / "data.json").read_text())
    assert saved["class_names"] == ["cat", "dog", "fish"]
    assert saved["image_shape"] == [32, 32, 3] and saved["num_train"] == 18
    assert len(saved["mean"]) == len(saved["std"]) == 3
    args = ["--experiment=quickstart", f"--workdir={run}", "--compilation_cache=off"]
    good = launch([*args, "--mode=eval"])
    assert good.returncode == 0, good.stdout + good.stderr

    for split in ("train", "test"):
        os.rename(root / split / "cat", root / split / "zebra")
    for mode_args in (["--mode=eval"], ["--mode=visualize"]):
        line = one_error_line(launch([*args, *mode_args]))
        assert "classes renamed: 'cat' -> 'zebra'" in line, line
        assert "--config.data.accept_changes=true" in line
    line = one_error_line(launch([*train, "--config.num_train_steps=12"]))  # A resume.
    assert "classes renamed: 'cat' -> 'zebra'" in line
    accepted = launch([*args, "--mode=eval", "--config.data.accept_changes=true"])
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert json.loads((run / "data.json").read_text()) == saved  # Written once.

    # Predict needs the recorded classes and statistics only: the training data is gone.
    image = tmp_path / "fish.png"
    shutil.copy(root / "test" / "fish" / "0.png", image)
    shutil.rmtree(root)
    proc = launch([*args, "--mode=predict", f"--images={image}"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("  ")]
    assert sorted(names) == ["cat", "dog", "fish"], proc.stdout


def test_images_added_to_a_class_move_the_statistics_and_stop_eval(tmp_path):
    root, run = tmp_path / "animals", tmp_path / "run"
    write_folder(str(root), ["cat", "dog"])
    launch([*FOLDER_RUN, f"--config.data.name=folder:{root}", f"--workdir={run}"], check=True)
    white = np.full((8, 8, 3), 255, np.uint8)
    for i in range(20):
        Image.fromarray(white).save(root / "train" / "dog" / f"white{i}.png")
    line = one_error_line(launch(["--experiment=quickstart", f"--workdir={run}", "--mode=eval"]))
    assert "normalization mean moved from [" in line, line


def test_the_quickstart_records_its_data_and_resumes_against_it(quickstart_20_steps, tmp_path):
    saved = json.loads((quickstart_20_steps / "data.json").read_text())
    assert saved["source"] == "digits" and saved["class_names"] == [str(d) for d in range(10)]
    assert saved["format"] == record.FORMAT and len(saved["fingerprint"]) == 16
    run = tmp_path / "run"
    shutil.copytree(quickstart_20_steps, run)
    proc = launch([*TINY_QUICKSTART, f"--workdir={run}", "--config.num_train_steps=25"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "note:" not in proc.stdout.replace("note: resuming with a config", "")


def tiny(classes=("a", "b"), n=6, value=40):
    images = np.full((n, 4, 4, 3), value, np.uint8)
    images[::2] += 50
    labels = np.arange(n, dtype=np.int32) % len(classes)
    mean = images.mean(axis=(0, 1, 2)) / 255
    return data_lib.Dataset(
        name="tiny",
        class_names=tuple(classes),
        mean=mean.astype(np.float32),
        std=np.full(3, 0.2, np.float32),
        train_images=images,
        train_labels=labels,
        test_images=images[:2],
        test_labels=labels[:2],
    )


def config(**data):
    import ml_collections

    return ml_collections.ConfigDict({"normalization": "dataset", **data})


def test_differences_name_each_kind_of_change():
    saved = record.of(tiny(("cat", "dog", "fish")), config())
    assert record.differences(saved, tiny(("cat", "dog", "fish"))) == []
    assert record.differences(saved, tiny(("dog", "fish", "zebra"))) == [
        "classes renamed: 'cat' -> 'zebra'"
    ]
    assert record.differences(saved, tiny(("cat", "dog"))) == ["classes removed: 'fish'"]
    assert record.differences(saved, tiny(("cat", "dog", "eel", "fish"))) == [
        "classes added: 'eel'"
    ]
    assert record.differences(saved, tiny(("dog", "cat", "fish"))) == ["classes in another order"]
    moved = record.differences(saved, tiny(("cat", "dog", "fish"), value=90))
    assert len(moved) == 1 and moved[0].startswith("normalization mean moved from [0.2549,")


def test_matched_gives_the_recorded_facts_or_names_the_change(capsys):
    data = tiny(("cat", "dog"))
    saved = record.of(data, config())
    changed = tiny(("cat", "dogs"))
    with pytest.raises(UserError, match=r"classes renamed: 'dog' -> 'dogs'"):
        record.matched(saved, changed)
    accepted = record.matched(saved, changed, accept_changes=True)
    assert accepted.class_names == ("cat", "dogs")
    np.testing.assert_array_equal(accepted.mean, np.asarray(saved["mean"], np.float32))
    more = data_lib.Dataset(**{**data.__dict__, "test_images": data.train_images})
    more = data_lib.Dataset(**{**more.__dict__, "test_labels": data.train_labels})
    assert record.matched(saved, more).class_names == ("cat", "dog")
    assert "note: tiny is not the data this run was trained on" in capsys.readouterr().out


def test_stand_in_has_the_recorded_facts_and_blank_examples():
    saved = json.loads(json.dumps(record.of(tiny(("cat", "dog")), config())))  # As stored.
    data = record.stand_in(saved, target_keys=("label", "box"))
    assert data.class_names == ("cat", "dog") and data.image_shape == (4, 4, 3)
    assert (data.num_train, data.num_test) == (6, 2)
    np.testing.assert_array_equal(data.mean, np.asarray(saved["mean"], np.float32))
    assert data.train_targets["box"].shape == (6, 4) and not data.train_images.any()


def test_reading_modes_take_a_device_count_that_does_not_divide_the_training_batch(
    quickstart_20_steps, tmp_path
):
    """Predict, export and visualize only run the model: 3 devices and a training batch of 32
    used to be refused (issue 25, item 8)."""
    image = tmp_path / "digit.png"
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(image)
    run = tmp_path / "run"
    shutil.copytree(quickstart_20_steps, run)
    three = {"XLA_FLAGS": "--xla_force_host_platform_device_count=3"}
    args = [*TINY_QUICKSTART, f"--workdir={run}", "--compilation_cache=off"]
    # (visualize opens the run the same way: runs.open_experiment without training feeds.)
    proc = launch([*args, "--mode=predict", f"--images={image}"], env=three)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    line = one_error_line(launch([*args, "--config.num_train_steps=30"], env=three))
    assert "not divisible by the 3 devices" in line  # Training still needs it.
