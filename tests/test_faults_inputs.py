"""Bad input as a user meets it, through launch.py in a subprocess: damaged files in a streamed
image folder, class folders named in other scripts (or not in UTF-8 at all), and
`--mode=predict` on a huge picture, a missing file or something that is no image."""

import os
import struct
import unicodedata
import zlib

import numpy as np
import pytest
from launching import launch
from PIL import Image

# LeNet-5 (the quickstart's model) on 32x32 folder images, a few steps of 4, one eval at the end.
TINY_FOLDER_RUN = [
    "--experiment=quickstart",
    "--config.data.image_size=32",
    "--config.num_train_steps=6",
    "--config.batch_size=4",
    "--config.log_every_steps=3",
    "--config.eval_every_steps=6",
    "--config.checkpoint_every_steps=6",
]


def write_folder(root, classes, *, train=4, test=2, size=8):
    """train/<class>/i.png and test/<class>/i.png, one solid-ish colour per class; the names
    may be str or bytes (a folder named in another encoding)."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        for k, name in enumerate(classes):
            folder = os.path.join(os.fsencode(root), split.encode(), os.fsencode(name))
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                pixels = np.full((size, size, 3), 30 + 60 * k, np.uint8)
                pixels += rng.integers(0, 20, pixels.shape, dtype=np.uint8)
                Image.fromarray(pixels).save(os.path.join(folder, f"{i}.png".encode()))


def write_header_only_png(path, width, height):
    """A PNG whose header claims width x height and that holds no pixels: what PIL reads first."""

    def chunk(kind, data):
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))


def damage(root):
    """Four files that are no readable image, in both splits: junk named .png, an empty .jpg,
    a truncated PNG, and a PNG over PIL's decompression-bomb limit. Returns their paths."""
    bad = {
        "junk": os.path.join(root, "train", "a", "junk.png"),
        "empty": os.path.join(root, "train", "b", "empty.jpg"),
        "truncated": os.path.join(root, "test", "b", "truncated.png"),
        "bomb": os.path.join(root, "train", "a", "zz_bomb.png"),
    }
    with open(bad["junk"], "w") as f:
        f.write("<html>404 not found</html>\n")
    open(bad["empty"], "wb").close()
    with open(os.path.join(root, "test", "b", "0.png"), "rb") as f:
        head = f.read()[:60]
    with open(bad["truncated"], "wb") as f:
        f.write(head)
    write_header_only_png(bad["bomb"], 20000, 20000)
    return bad


def assert_no_traceback(proc):
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out and "Warning:" not in out, out


def assert_one_error_line(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert_no_traceback(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def warnings_of(proc):
    return [line for line in proc.stdout.splitlines() if line.startswith("warning: skipping ")]


def support(summary: str) -> dict[str, int]:
    """class -> support from summary.txt's per-class table."""
    rows = summary.split("support\n", 1)[1].strip().splitlines()
    return {row.split()[0]: int(row.split()[-1]) for row in rows}


@pytest.mark.parametrize("feeding", ["stream", "device"])
def test_unreadable_files_in_an_image_folder_are_one_warning_each_and_skipped(tmp_path, feeding):
    """Streamed (read file by file in grain's threads) as in memory: each unreadable file is
    one warning line naming it, once, and evaluation counts only the readable test images."""
    root = str(tmp_path / "pets")
    write_folder(root, ["a", "b"], train=4, test=2)
    bad = damage(root)
    run = tmp_path / "run"
    proc = launch(
        [
            *TINY_FOLDER_RUN,
            f"--config.data.name=folder:{root}",
            f"--config.data.feeding={feeding}",
            f"--workdir={run}",
        ]
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_no_traceback(proc)
    warnings = warnings_of(proc)
    assert len(warnings) == len(bad), warnings
    for path in bad.values():
        assert sum(f"warning: skipping {path}: not a readable image (" in w for w in warnings) == 1
    assert "decompression bomb" in next(w for w in warnings if "zz_bomb" in w)
    # The one unreadable test image is left out of the metrics, as it is in memory.
    assert support((run / "summary.txt").read_text(encoding="utf-8")) == {"a": 2, "b": 2}
    evaluated = launch(["--experiment=quickstart", f"--workdir={run}", "--mode=eval"])
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    assert_no_traceback(evaluated)
    assert "on 4 images" in evaluated.stdout  # Of the 5 test files.


@pytest.mark.parametrize("feeding", ["stream", "device"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_a_split_with_no_readable_image_is_exit_2_before_training(tmp_path, feeding, split):
    root = str(tmp_path / "pets")
    write_folder(root, ["a", "b"], train=2, test=1)
    for dirpath, _, names in os.walk(os.path.join(root, split)):
        for name in names:
            with open(os.path.join(dirpath, name), "wb") as f:
                f.write(b"junk")
    run = tmp_path / "run"
    proc = launch(
        [
            *TINY_FOLDER_RUN,
            f"--config.data.name=folder:{root}",
            f"--config.data.feeding={feeding}",
            f"--workdir={run}",
        ]
    )
    assert_one_error_line(proc, f"No readable image in {root}/{split}/")
    assert not (run / "checkpoints").exists()


def test_an_unreadable_first_image_does_not_stop_the_size_probe(tmp_path):
    """With image_size=0 the feeding choice reads the first training image's header: a junk
    first file is skipped there too (it used to be a traceback)."""
    root = str(tmp_path / "pets")
    write_folder(root, ["a", "b"], train=4, test=2, size=32)
    with open(os.path.join(root, "train", "a", "0.png"), "wb") as f:
        f.write(b"junk")
    proc = launch(
        [
            *TINY_FOLDER_RUN,
            "--config.data.image_size=0",
            f"--config.data.name=folder:{root}",
            f"--workdir={tmp_path / 'run'}",
        ]
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_no_traceback(proc)
    assert len(warnings_of(proc)) == 1 and "train/a/0.png" in warnings_of(proc)[0]


def columns(text: str) -> int:
    """Terminal columns: 2 for CJK letters."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def test_class_names_in_other_scripts_train_evaluate_and_predict(tmp_path):
    """Class folders "café", "猫", "ñandú" (and, where the file system allows it, one named in
    Latin-1, not UTF-8): training, summary.txt, the plots, eval and predict all work, and
    predict prints the names as written, its columns aligned."""
    names = ["café", "猫", "ñandú"]
    latin1 = b"caf\xe9s"  # Shown as caf\xe9s: its bytes are no UTF-8.
    root = str(tmp_path / "animals")
    write_folder(root, names)
    try:
        write_folder(root, [latin1])
        expected = ["café", "caf\\xe9s", "ñandú", "猫"]  # Sorted by name, as on disk.
    except OSError:  # A file system that takes only UTF-8 names (macOS).
        expected = sorted(names)
    run = tmp_path / "run"
    args = ["--experiment=quickstart", f"--workdir={run}"]
    proc = launch([*TINY_FOLDER_RUN, f"--config.data.name=folder:{root}", f"--workdir={run}"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_no_traceback(proc)
    assert "missing from font" not in proc.stderr  # matplotlib's warnings: one note at most.
    assert [line for line in proc.stderr.splitlines() if line.strip()] == []
    summary = (run / "summary.txt").read_text(encoding="utf-8")
    assert list(support(summary)) == expected
    for plot in ("confusion_matrix.png", "training_curves.png"):
        assert (run / "plots" / plot).stat().st_size > 1000

    evaluated = launch([*args, "--mode=eval"])
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    assert_no_traceback(evaluated)
    assert f"on {2 * len(expected)} images" in evaluated.stdout

    images = [os.path.join(root, "test", name, "0.png") for name in names]
    proc = launch([*args, f"--images={','.join(images)}", "--mode=predict"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_no_traceback(proc)
    lines = proc.stdout.splitlines()
    for image in images:
        block = lines[lines.index(f"{image}:") + 1 :][: len(expected)]
        assert sorted(line.split()[1] for line in block) == sorted(expected), block
        assert len({columns(line) for line in block}) == 1, block  # Percentages line up.

    # A terminal that shows only ASCII (LC_ALL=C without Python's UTF-8 mode): escapes.
    ascii_env = {"LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    proc = launch([*args, f"--images={images[1]}", "--mode=predict"], env=ascii_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_no_traceback(proc)
    assert "\\u732b" in proc.stdout  # 猫


def test_predict_on_a_huge_image_and_on_files_that_are_no_images(quickstart_20_steps, tmp_path):
    """A 9500x9500 PNG (solid, so small on disk; over PIL's warning limit of 89 MP) is fitted
    and classified without a warning; each missing, empty, truncated, junk or over-limit file
    is one line on stderr naming it, and the others are still classified."""
    huge = tmp_path / "huge.png"
    Image.new("L", (9500, 9500), 128).save(huge)
    missing = tmp_path / "missing.png"
    junk = tmp_path / "notes.jpg"
    junk.write_text("not a picture\n")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(huge.read_bytes()[:200])
    bomb = tmp_path / "bomb.png"
    write_header_only_png(bomb, 20000, 20000)
    folder = tmp_path / "a folder.png"
    folder.mkdir()
    bad = [missing, junk, empty, truncated, bomb, folder]
    args = ["--experiment=quickstart", f"--workdir={quickstart_20_steps}", "--mode=predict"]

    proc = launch([*args, f"--images={','.join(map(str, [huge, *bad]))}"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_no_traceback(proc)
    lines = proc.stdout.splitlines()
    assert f"{huge}:" in lines and "  5. " in lines[lines.index(f"{huge}:") + 5]
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == len(bad), errors
    for path, line in zip(bad, errors, strict=True):
        assert line.startswith(f"error: cannot read {path}: "), line
    assert errors[0].endswith(": no such file") and errors[-1].endswith(": is a directory")
    assert "too big to decode: 400,000,000 pixels" in errors[4]

    # Nothing readable: exit 2, each file one line.
    for path in bad[:2]:
        assert_one_error_line(launch([*args, f"--images={path}"]), f"cannot read {path}: ")
