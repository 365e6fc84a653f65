"""Damaged TFDS data as a user meets it, through launch.py in a subprocess: an empty split, a
missing, truncated or zeroed array_record file, a garbled dataset_info.json, a damaged record
read into memory or met mid-stream, and a training split that holds the test split.

The data is a small prepared copy of the real MNIST in ../shared (256 training and 64 test
records, rewritten with array_record's own writer); skipped when ../shared is absent."""

import json
import os
import shutil

import pytest
from launching import ROOT, launch

SHARED_TFDS = os.path.join(ROOT, "..", "shared", "tensorflow_datasets")
VERSION = os.path.join("mnist", "3.0.1")
pytestmark = pytest.mark.skipif(
    not os.path.isdir(os.path.join(SHARED_TFDS, VERSION)),
    reason="../shared/tensorflow_datasets/mnist is absent",
)
SIZES = {"train": 256, "test": 64}


def _file(data_dir, split):
    return os.path.join(data_dir, VERSION, f"mnist-{split}.array_record-00000-of-00001")


@pytest.fixture(scope="module")
def small_mnist(tmp_path_factory):
    return make_small_mnist(tmp_path_factory.mktemp("tfds"))


def make_small_mnist(data_dir):
    """A prepared data dir (a pathlib.Path) holding the first SIZES records of each split of
    ../shared's MNIST; returns it."""
    from array_record.python import array_record_module

    os.makedirs(data_dir / VERSION)
    with open(os.path.join(SHARED_TFDS, VERSION, "dataset_info.json"), encoding="utf-8") as f:
        info = json.load(f)
    for split in info["splits"]:
        n = SIZES[split["name"]]
        reader = array_record_module.ArrayRecordReader(_file(SHARED_TFDS, split["name"]))
        records = reader.read(list(range(n)))
        reader.close()
        writer = array_record_module.ArrayRecordWriter(
            _file(data_dir, split["name"]), "group_size:1"
        )
        for record in records:
            writer.write(record)
        writer.close()
        split["shardLengths"], split["numBytes"] = [str(n)], str(sum(map(len, records)))
    (data_dir / VERSION / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    shutil.copy(os.path.join(SHARED_TFDS, VERSION, "features.json"), data_dir / VERSION)
    return data_dir


def _copy(small_mnist, tmp_path):
    data_dir = tmp_path / "tfds"
    shutil.copytree(small_mnist, data_dir)
    return data_dir


def _run(data_dir, workdir, *extra, steps=8):
    return launch(
        [
            "--experiment=quickstart",
            f"--config.num_train_steps={steps}",
            "--config.batch_size=32",
            "--config.log_every_steps=4",
            f"--config.eval_every_steps={steps}",
            "--config.checkpoint_every_steps=4",
            "--config.data.name=mnist",
            f"--config.data.data_dir={data_dir}",
            f"--workdir={workdir}",
            *extra,
        ]
    )


def _zero(path, start, length):
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(bytes(length))


def _one_line_error(proc):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def _missing(data_dir):
    os.remove(_file(data_dir, "train"))
    return _file(data_dir, "train"), "is missing"


def _truncated(data_dir):
    path = _file(data_dir, "train")
    os.truncate(path, os.path.getsize(path) // 2)
    return path, "is damaged"


def _zeroed(data_dir):
    path = _file(data_dir, "test")
    _zero(path, 0, os.path.getsize(path))
    return path, "is damaged"


def _garbled_info(data_dir):
    path = os.path.join(data_dir, VERSION, "dataset_info.json")
    with open(path, "w", encoding="utf-8") as f:
        f.write('{"name": "mnist", "splits": [{"na')
    return path, "cannot be read"


# Both feeds check the files when they open the splits; each damage is tried with one of them.
DAMAGES = [
    (_missing, "device"),
    (_truncated, "stream"),
    (_zeroed, "device"),
    (_garbled_info, "stream"),
]


@pytest.mark.parametrize("damage, feeding", DAMAGES, ids=[d.__name__[1:] for d, _ in DAMAGES])
def test_damaged_files_are_exit_2_naming_the_file_before_training(
    small_mnist, tmp_path, damage, feeding
):
    data_dir = _copy(small_mnist, tmp_path)
    path, what = damage(data_dir)
    proc = _run(data_dir, tmp_path / "run", f"--config.data.feeding={feeding}")
    line = _one_line_error(proc)
    assert f"{path} {what}" in line, line
    assert f"Move {os.path.dirname(path)} aside" in line
    assert f"tfds build mnist --data_dir={data_dir}" in line and "--config.data.data_dir" in line
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_an_empty_split_is_exit_2_naming_it(small_mnist, tmp_path):
    proc = _run(small_mnist, tmp_path / "run", "--config.data.train_split=train[:0]")
    line = _one_line_error(proc)
    assert "Split 'train[:0]' of TFDS dataset 'mnist' has no examples" in line
    assert "train (256), test (64)" in line


def _damage_a_record_in_the_middle(data_dir):
    path = _file(data_dir, "train")
    _zero(path, os.path.getsize(path) // 3, 2000)
    return path


def test_a_damaged_record_read_into_memory_is_exit_2_naming_it(small_mnist, tmp_path):
    data_dir = _copy(small_mnist, tmp_path)
    path = _damage_a_record_in_the_middle(data_dir)
    proc = _run(data_dir, tmp_path / "run", "--config.data.feeding=device")
    line = _one_line_error(proc)
    assert f"{path} is damaged at record " in line and "tfds build mnist" in line
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_a_damaged_record_met_mid_stream_is_skipped_with_one_warning(small_mnist, tmp_path):
    """Up front the file opens and its first and last records read; the damage in between is
    met while training, which goes on: the records are skipped as an image folder's
    unreadable files are, with one warning line for the file, and every checkpoint is kept."""
    data_dir = _copy(small_mnist, tmp_path)
    path = _damage_a_record_in_the_middle(data_dir)
    run = tmp_path / "run"
    proc = _run(data_dir, run, "--config.data.feeding=stream", steps=12)  # 1.5 epochs.
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Traceback" not in out and "Event loop is closed" not in out
    warnings = [line for line in proc.stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, warnings
    assert f"skipping damaged records of {path} (first: record " in warnings[0]
    assert "tfds build mnist" in warnings[0]
    assert "done: test accuracy" in proc.stdout
    assert sorted(int(s) for s in os.listdir(run / "checkpoints") if s.isdigit())[-1] == 12


@pytest.mark.parametrize(
    "train_split, shared", [("test", "64 of the 64"), ("train+test[:16]", "16 of the 64")]
)
def test_training_on_the_test_split_is_one_warning(small_mnist, tmp_path, train_split, shared):
    proc = _run(small_mnist, tmp_path / "run", f"--config.data.train_split={train_split}", steps=2)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    warnings = [line for line in proc.stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, proc.stdout
    assert f"holds {shared} examples of the test split 'test'" in warnings[0]
    assert "not a held-out measure" in warnings[0]


def test_disjoint_slices_of_one_split_are_no_warning(small_mnist, tmp_path):
    proc = _run(
        small_mnist,
        tmp_path / "run",
        "--config.data.train_split=train[:75%]",
        "--config.data.test_split=train[75%:]",
        steps=2,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "warning:" not in proc.stdout
