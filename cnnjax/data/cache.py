"""Decoded datasets kept as .npz files: loading the same files again reads arrays instead of
decoding every image (60,000 CIFAR-10 PNGs from TFDS take ~20 s to decode on a 2-core CPU).

Where: `$CNNJAX_DATA_CACHE` if set ("off" turns caching off), else ~/.cache/cnnjax (image
folders first try <folder>/.cnnjax_cache). Each cache file's name is "<family>-<key>.npz": the
family names a dataset read with given settings, the key hashes everything the arrays depend on
(files, sizes, mtimes), and a new file replaces the older files of its family (the same dataset
and settings before the files changed), so stale copies do not pile up. Cache trouble of any
kind (unreadable, unwritable, raced by another process) only costs a decode.
"""

import os
import tempfile
import zipfile

import numpy as np


def configured() -> str:
    """`$CNNJAX_DATA_CACHE`: "" (unset), "off", or a directory the user chose."""
    return os.environ.get("CNNJAX_DATA_CACHE", "")


def home() -> str | None:
    """The user-wide cache directory, or None when `CNNJAX_DATA_CACHE=off`."""
    if configured().lower() == "off":
        return None
    return configured() or os.path.join(os.path.expanduser("~"), ".cache", "cnnjax")


def writable(directory: str) -> bool:
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            return True
    except OSError:
        return False


def load(path: str) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file, or None if there is none (or it cannot be read)."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path) as cached:
            return {k: cached[k] for k in cached.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return None  # Unreadable (e.g. truncated): decoded again, and the save replaces it.


def save(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Writes `arrays` to `path` and removes the other files of its family."""
    directory = os.path.dirname(path)
    family = os.path.basename(path).split("-", 1)[0]
    # Write-then-rename: a crash or a concurrent reader never sees half a file, and processes
    # saving the same arrays at once each rename a whole file.
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        return  # A cache that cannot be written only costs the next load a decode.
    try:
        stale = [e.path for e in os.scandir(directory) if e.name.startswith(f"{family}-")]
    except OSError:
        return
    for file in stale:
        if file != path:
            try:
                os.remove(file)
            except OSError:
                pass  # Already removed by another process saving too, or not ours to remove.
