"""Whole-file writes: the one write-then-rename of cnnjax.

A file that a later command reads (config.json, the run's data record, a checkpoint manifest,
an export, a data cache) is written under a temporary name in its own folder, flushed to disk
and renamed over the old one, so a kill, a full disk or a concurrent reader never sees half a
file: either the previous file stays whole or the new one is complete.
"""

import json
import os
import tempfile

__all__ = ["write_atomic", "write_json_atomic"]


def write_atomic(path: str, data: bytes | str, *, durable: bool = True) -> None:
    """Writes `data` (text is UTF-8) to `path` through a temporary file beside it.

    durable: fsync before the rename, so the new content survives a power loss too (skip it
    for caches that can be rebuilt). The file gets the permissions `open()` would give it (not
    mkstemp's 0600). On any failure the temporary file is removed, the previous `path` is
    untouched, and the error (e.g. `OSError` ENOSPC) propagates."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix="-" + os.path.basename(path))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.remove(tmp)
        raise


def write_json_atomic(path: str, obj, *, indent: int | None = 2) -> None:
    """`obj` as JSON (keys sorted) to `path`, atomically (`write_atomic`)."""
    write_atomic(path, json.dumps(obj, indent=indent, sort_keys=True) + "\n")
