"""Files and folders, local or in object storage: the one path layer of cnnjax, and its one
write-then-rename.

Every file cnnjax reads or writes in a run (config.json, data.json, metrics.jsonl, manifests,
summary.txt, plots, exports, TensorBoard) takes a path string that is either local (`~`
expanded) or a URI such as `gs://bucket/runs/qs`. Paths are joined with `os.path.join`, which
keeps a URI's `scheme://` intact; what touches storage goes through the functions here, which
use the OS for local paths and `etils.epath` (gcsfs for `gs://`, the `[gcs]` extra) for URIs.
Nothing calls `os.path.abspath` on a URI (`absolute`).

Whole-file writes (`write_atomic`): a local file is written under a temporary name in its own
folder, flushed to disk and renamed over the old one, so a kill, a full disk or a concurrent
reader never sees half a file. An object store's upload is already all-or-nothing (the object
is replaced only when the upload completes), so a URI is written in one upload.
"""

import dataclasses
import importlib.util
import json
import os
import tempfile

from cnnjax.errors import UserError

__all__ = [
    "absolute",
    "exists",
    "is_uri",
    "isdir",
    "isfile",
    "listdir",
    "makedirs",
    "open_file",
    "read_bytes",
    "remove",
    "rename",
    "scan",
    "size",
    "walk_files",
    "write_atomic",
    "write_json_atomic",
]


def is_uri(path) -> bool:
    """Whether `path` names object storage (`gs://...`, any `scheme://`), not a local file."""
    return "://" in os.fspath(path)


def _epath(path):
    from etils import epath  # Local: a local-only run never imports the remote backends.

    path = os.fspath(path)
    if path.startswith("gs://") and importlib.util.find_spec("gcsfs") is None:
        raise UserError(
            f"{path}: Google Cloud Storage paths need gcsfs: pip install 'cnnjax[gcs]'."
        )
    return epath.Path(path)


def absolute(path) -> str:
    """A local path made absolute (`~` expanded); a URI as it is."""
    path = os.fspath(path)
    return path if is_uri(path) else os.path.abspath(os.path.expanduser(path))


def exists(path) -> bool:
    """Whether anything is at `path` (a dangling local link counts, as with `lexists`)."""
    return _epath(path).exists() if is_uri(path) else os.path.lexists(path)


def isdir(path) -> bool:
    return _epath(path).is_dir() if is_uri(path) else os.path.isdir(path)


def isfile(path) -> bool:
    return _epath(path).is_file() if is_uri(path) else os.path.isfile(path)


def makedirs(path) -> None:
    """Creates the folder and its parents (object storage has no folders: nothing to do)."""
    if is_uri(path):
        _epath(path).mkdir(parents=True, exist_ok=True)
    else:
        os.makedirs(path, exist_ok=True)


def listdir(path) -> list[str]:
    """The names in a folder (`FileNotFoundError` / `NotADirectoryError` as `os.listdir`)."""
    if is_uri(path):
        return [p.name for p in _epath(path).iterdir()]
    return os.listdir(path)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One entry of a folder listing (`scan`)."""

    name: str
    path: str
    is_dir: bool
    size: int
    mtime: str  # A version stamp: the local st_mtime_ns, or the object's update time.


def scan(path) -> list[Entry]:
    """The entries of a folder with their kind, size and modification stamp: one `os.scandir`
    locally, one listing request in object storage (not one request per file)."""
    path = os.fspath(path)
    if not is_uri(path):
        out = []
        for e in os.scandir(path):
            if e.is_dir():
                out.append(Entry(e.name, e.path, True, 0, ""))
            elif e.is_file():  # Not a broken link, a socket, ...
                st = e.stat()
                out.append(Entry(e.name, e.path, False, st.st_size, str(st.st_mtime_ns)))
        return out
    import fsspec

    _epath(path)  # The [gcs] extra's check.
    fs = fsspec.filesystem(path.split("://", 1)[0])
    base = path.rstrip("/")
    out = []
    for info in fs.ls(base, detail=True):
        name = info["name"].rstrip("/").rsplit("/", 1)[-1]
        is_dir = info.get("type") == "directory"
        stamp = str(info.get("generation") or info.get("updated") or info.get("mtime") or "")
        out.append(Entry(name, f"{base}/{name}", is_dir, int(info.get("size") or 0), stamp))
    return out


def open_file(path, mode: str = "rb"):
    """`open(path, mode)` for local paths; the object's stream for a URI."""
    return _epath(path).open(mode) if is_uri(path) else open(path, mode)  # noqa: SIM115


def read_bytes(path) -> bytes:
    with open_file(path, "rb") as f:
        return f.read()


def size(path) -> int:
    return _epath(path).stat().length if is_uri(path) else os.path.getsize(path)


def remove(path) -> None:
    if is_uri(path):
        _epath(path).unlink()
    else:
        os.remove(path)


def rename(src, dst) -> None:
    """Moves a file or folder (in object storage: a copy of every object, then a delete)."""
    if is_uri(src):
        _epath(src).rename(_epath(dst))
    else:
        os.rename(src, dst)


def walk_files(root) -> list[str]:
    """The paths of every file below `root`, relative to it with "/" separators, sorted."""
    if is_uri(root):
        out, pending = [], [("", _epath(root))]
        while pending:  # Folder by folder: object stores list one prefix per request.
            prefix, folder = pending.pop()
            for child in folder.iterdir():
                rel = f"{prefix}{child.name}"
                if child.is_dir():
                    pending.append((rel + "/", child))
                else:
                    out.append(rel)
        return sorted(out)
    out = []
    for folder, _, names in os.walk(root):
        for name in names:
            rel = os.path.relpath(os.path.join(folder, name), root)
            out.append(rel.replace(os.sep, "/"))
    return sorted(out)


def write_atomic(path: str, data: bytes | str, *, durable: bool = True) -> None:
    """Writes `data` (text is UTF-8) to `path` through a temporary file beside it.

    durable: fsync before the rename, so the new content survives a power loss too (skip it
    for caches that can be rebuilt). The file gets the permissions `open()` would give it (not
    mkstemp's 0600). On any failure the temporary file is removed, the previous `path` is
    untouched, and the error (e.g. `OSError` ENOSPC) propagates."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if is_uri(path):
        _epath(path).write_bytes(data)  # One upload: the object changes only when it completes.
        return
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
