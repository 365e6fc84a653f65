"""Decoded datasets kept as .npz files: loading the same files again reads arrays instead of
decoding every image (60,000 CIFAR-10 PNGs from TFDS take ~20 s to decode on a 2-core CPU).

Where: `$CNNJAX_DATA_CACHE` if set ("off" turns caching off), else ~/.cache/cnnjax. Each cache
file's name is "<family>-<key>.npz": the key hashes everything the arrays depend on (files,
sizes, mtimes, settings), and a new file replaces the other files of its family (the same
dataset read with other settings or after it changed), so stale copies do not pile up.
"""

import os
import tempfile

import numpy as np


def home() -> str | None:
    """The user-wide cache directory, or None when `CNNJAX_DATA_CACHE=off`."""
    configured = os.environ.get("CNNJAX_DATA_CACHE", "")
    if configured.lower() == "off":
        return None
    return configured or os.path.join(os.path.expanduser("~"), ".cache", "cnnjax")


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
    except (OSError, ValueError, EOFError):
        return None  # Unreadable: decoded again, and the save below replaces it.


def save(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Writes `arrays` to `path` and removes the other files of its family."""
    directory = os.path.dirname(path)
    family = os.path.basename(path).split("-", 1)[0]
    # Write-then-rename: a crash or a concurrent reader never sees half a file.
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError:
        if os.path.exists(tmp):
            os.remove(tmp)
        return  # A cache that cannot be written only costs the next load a decode.
    for entry in os.scandir(directory):
        if entry.name.startswith(f"{family}-") and entry.path != path:
            os.remove(entry.path)
