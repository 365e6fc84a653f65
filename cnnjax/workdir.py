"""A run's directory and its `config.json`: the one place that writes, compares and reads back
the settings a run was trained with.

- training writes `config.json` (`write_config`) once the run's checkpoints are known to fit;
- a resumed run says which keys differ from it (`note_changes`);
- eval, predict and visualize read a run with its own settings (`with_run_settings`), so a run
  trained with other values needs only `--experiment` and `--workdir`;
- training also records where its experiment came from and the versions (`write_run_record`,
  `run.json`), so those modes need only `--workdir`;
- a training run holds the workdir's lock (`exclusive`) from before it reads its checkpoints
  until it ends, so a second writer stops at once instead of interleaving with the first.
  Read-only modes never take it.
"""

import contextlib
import fcntl
import json
import os
import socket

import jax

from cnnjax import files, lease
from cnnjax.errors import MetricsWriteError, UserError
from cnnjax.overrides import apply_overrides

CONFIG_FILE = "config.json"
DATA_FILE = "data.json"  # What the run was trained on (cnnjax.data.record).
RUN_FILE = "run.json"  # Where the experiment came from, and the versions (cnnjax.modes.origin).
LOCK_FILE = ".cnnjax.lock"


def config_path(workdir: str) -> str:
    return os.path.join(workdir, CONFIG_FILE)


def as_tree(config) -> dict:
    """A ConfigDict as the nested plain dict that config.json holds."""
    return json.loads(config.to_json_best_effort())


def make(workdir: str) -> None:
    """Creates the run directory (and its parents); a UserError when the OS refuses."""
    try:
        files.makedirs(workdir)
    except OSError as e:
        raise UserError(
            f"Cannot create --workdir={workdir} ({e.strerror or type(e).__name__}): give a "
            "directory you can write to."
        ) from None


def write_config(config, workdir: str) -> None:
    """Writes config.json (process 0 only), atomically: a full disk or a kill leaves the
    previous file whole, never a torn one that every later command would refuse."""
    if jax.process_index() == 0:
        _write(config_path(workdir), as_tree(config))


def read_config(workdir: str) -> dict | None:
    """The settings saved in the run's config.json, or None when the run has none.

    A config.json that is not a JSON object (damaged, truncated, or something else) is a
    UserError naming the file and the fix: training never guesses a run's settings."""
    return _read_object(
        config_path(workdir),
        "training writes a new one with the experiment's settings and your --config overrides",
    )


def read_data_record(workdir: str) -> dict | None:
    """What the run was trained on (`cnnjax.data.record`), or None for a run without one (new,
    or trained before runs recorded it). Damaged: a UserError, as for config.json."""
    return _read_object(
        os.path.join(workdir, DATA_FILE),
        "training records the data as it is now; other modes then use today's classes",
    )


def write_data_record(workdir: str, record: dict) -> None:
    """Records what the run is trained on (process 0 only), atomically."""
    if jax.process_index() == 0:
        _write(os.path.join(workdir, DATA_FILE), record)


def read_run_record(workdir: str) -> dict | None:
    """Where the run's experiment came from and what it ran on (`cnnjax.modes.origin.record`), or
    None for a run without one (new, or trained before runs recorded it). Damaged: a UserError."""
    return _read_object(
        os.path.join(workdir, RUN_FILE),
        "the next training run writes a new one; the other modes then need --experiment",
    )


def write_run_record(workdir: str, record: dict) -> None:
    """Records where the run's experiment came from (process 0 only), atomically."""
    if jax.process_index() == 0:
        _write(os.path.join(workdir, RUN_FILE), record)


def _write(path: str, tree: dict) -> None:
    """`tree` as JSON to `path`, atomically; a refused write (a full disk) is one line, exit 4."""
    try:
        files.write_json_atomic(path, tree)
    except OSError as e:
        reason = f"[Errno {e.errno}] {e.strerror}" if e.errno and e.strerror else str(e)
        raise MetricsWriteError(
            f"could not write {path}: {reason}; the file before it (if any) is intact"
        ) from None


def _read_object(path: str, without_it: str) -> dict | None:
    """The JSON object in `path`; None when absent; a UserError when it is no JSON object."""
    if not files.exists(path):
        return None
    try:
        saved = json.loads(files.read_bytes(path).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        problem = f"is not valid JSON ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
    except OSError as e:
        problem = f"cannot be read ({e.strerror or type(e).__name__})"
    else:
        if isinstance(saved, dict):
            return saved
        problem = f"holds a JSON {type(saved).__name__}, not the object training writes"
    raise UserError(
        f"{path} {problem}. Restore it from a copy, or move it aside (the run's checkpoints "
        f"stay; {without_it})."
    )


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"optim": {"lr": 0.1}} -> {"optim.lr": 0.1}."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def changed_keys(saved: dict, config) -> list[str]:
    """The dotted keys whose values differ between a saved tree and `config`, sorted; a key
    only one side has counts as changed."""
    old, new = flatten(saved), flatten(as_tree(config))
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def describe_changes(config, workdir: str) -> str:
    """ "optim.grad_clip_norm 0.0 -> 1.0, ..." for the keys whose values differ from the run's
    config.json ("" when it has none or nothing differs)."""
    saved = read_config(workdir)
    if saved is None:
        return ""
    old, new = flatten(saved), flatten(as_tree(config))

    def known(key: str) -> bool:  # Not a section a newer version added since the run.
        section = saved
        for part in key.split(".")[:-1]:
            section = section.get(part) if isinstance(section, dict) else None
        return isinstance(section, dict)

    return ", ".join(
        f"{k} {json.dumps(old.get(k))} -> {json.dumps(new.get(k))}"
        for k in changed_keys(saved, config)
        if known(k)
    )


def note_changes(config, workdir: str) -> None:
    """On resume, says which keys differ from the run's saved config.json."""
    saved = read_config(workdir)
    changed = changed_keys(saved, config) if saved is not None else []
    if changed:
        print(
            f"note: resuming with a config that differs from {config_path(workdir)} in: "
            f"{', '.join(changed)}",
            flush=True,
        )


def with_run_settings(config, workdir: str):
    """`config` with the values of the run's config.json where they differ (the command's own
    --config overrides are applied after, so they still win). Keys this version no longer has,
    values it cannot take, and unset (null) values are left out."""
    saved = read_config(workdir)
    if saved is None:
        return config
    values = flatten(saved)
    changed = []
    for key in changed_keys(saved, config):
        value = values.get(key)
        if key not in values or value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        try:
            config = apply_overrides(config, [(key, text)])
        except UserError:
            continue
        changed.append(key)
    if changed:
        print(
            f"using the run's settings from {config_path(workdir)}: {', '.join(changed)}",
            flush=True,
        )
    return config


@contextlib.contextmanager
def exclusive(workdir: str):
    """Holds the workdir's lock: an exclusive `flock` on `WORKDIR/.cnnjax.lock`. The OS drops
    it when the process ends in any way (kill -9 included), so a crashed run never leaves a
    stale lock. In object storage (`gs://`), a lease object (`cnnjax.lease`) that a crashed
    run stops renewing. Only process 0 of a multi-process run takes it: the others write no
    files of their own. A UserError when another process holds it, naming that process."""
    if jax.process_index() != 0:
        yield
        return
    holder = f"process {os.getpid()} on {socket.gethostname()}"
    path = os.path.join(workdir, LOCK_FILE)
    if files.is_uri(workdir):
        held = lease.Lease(path, holder)
        held.acquire()
        try:
            yield
        finally:
            held.release()
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UserError(
            f"Cannot write into --workdir={workdir} ({e.strerror}): give a directory you can "
            "write to."
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            raise UserError(
                f"--workdir={workdir} is in use by {holder}, which is training in it. Wait for "
                "it to end (or stop it), or give another --workdir."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        yield
    finally:
        os.close(fd)  # Releases the lock.
