"""The workdir lock on object storage: a lease object that only one run can create.

Object stores have no `flock`, so a run that trains in a `gs://` workdir creates
`WORKDIR/.cnnjax.lock` with the store's own atomic create (a generation precondition:
"write only if no object exists", `if_generation_match=0`). The object names its holder and the
lease length; the holder rewrites it every third of the lease (again only if it is still the
version it wrote), and deletes it when the run ends.

- A second run finds the object younger than its lease: exit 2 naming the holder and when its
  lease runs out.
- A crashed run (kill -9, a lost VM) stops renewing: once the lease has run out since the last
  renewal (by the store's clock), the next run takes the lock over, replacing the object only if
  it is still the expired version, and says whose lock it took. So a crashed run blocks its
  workdir for at most `lease_seconds()` (60 s by default, `CNNJAX_LOCK_LEASE_S`); at once when
  the holder was a process on the same host that no longer runs (a restarted VM keeps its
  hostname, and its old process ids are gone).
- A holder whose renewal finds another version (its lease ran out while it was stalled, and
  another run took over) warns once: two writers may then overlap, as the message says.

Uses `google-cloud-storage` (the `[gcs]` extra); `STORAGE_EMULATOR_HOST` points it at an
emulator (the tests start one on localhost).
"""

import datetime
import json
import os
import socket
import sys
import threading

from cnnjax.errors import UserError

DEFAULT_LEASE_S = 60.0


def lease_seconds() -> float:
    """How long a lease lasts without renewal (`CNNJAX_LOCK_LEASE_S`, default 60 s)."""
    return max(1.0, float(os.environ.get("CNNJAX_LOCK_LEASE_S", DEFAULT_LEASE_S)))


def _split(uri: str) -> tuple[str, str]:
    scheme, rest = uri.split("://", 1)
    if scheme != "gs":
        raise UserError(
            f"--workdir={uri}: training can lock a gs:// workdir (or a local one), not {scheme}://."
        )
    bucket, _, name = rest.partition("/")
    return bucket, name


def _storage():
    try:
        from google.api_core import exceptions
        from google.cloud import storage
    except ImportError:
        raise UserError(
            "A gs:// workdir needs Google Cloud Storage support: pip install 'cnnjax[gcs]'."
        ) from None
    return storage, exceptions


def _dead_here(holder: dict) -> bool:
    """Whether the lock's holder was a process on this host that no longer runs (a run killed
    here: its lock need not wait for the lease to run out)."""
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # Alive, another user's.
        return False
    return False


class Lease:
    """Holds the lock object at `uri` for `holder` (a line naming the process) while open."""

    def __init__(self, uri: str, holder: str, *, seconds: float | None = None):
        self.uri, self.holder = uri, holder
        self.seconds = lease_seconds() if seconds is None else seconds
        storage, self._errors = _storage()
        bucket, name = _split(uri)
        self._blob = storage.Client().bucket(bucket).blob(name)
        self._generation = None
        self._stop = threading.Event()
        self._thread = None

    def _body(self) -> str:
        return json.dumps(
            {
                "holder": self.holder,
                "lease_seconds": self.seconds,
                "host": socket.gethostname(),
                "pid": os.getpid(),
            }
        )

    def _write(self, if_generation_match: int) -> None:
        self._blob.upload_from_string(
            self._body(), content_type="application/json", if_generation_match=if_generation_match
        )
        self._generation = self._blob.generation

    def acquire(self) -> None:
        """Takes the lock, or raises a UserError naming the live holder."""
        try:
            self._write(if_generation_match=0)
        except self._errors.PreconditionFailed:
            self._take_over_expired()
        self._thread = threading.Thread(target=self._renew, name="cnnjax-lease", daemon=True)
        self._thread.start()

    def _take_over_expired(self) -> None:
        blob = self._blob
        try:
            blob.reload()
            other = json.loads(blob.download_as_bytes(if_generation_match=blob.generation))
        except self._errors.NotFound:  # Released meanwhile: try once more from scratch.
            self._write(if_generation_match=0)
            return
        except (self._errors.PreconditionFailed, ValueError):
            other = {}
        seconds = float(other.get("lease_seconds", self.seconds))
        age = (datetime.datetime.now(datetime.UTC) - blob.updated).total_seconds()
        holder = other.get("holder", "another process")
        if age < seconds and not _dead_here(other):
            raise UserError(
                f"--workdir={os.path.dirname(self.uri)} is in use by {holder}, which is "
                f"training in it (its lock's lease, renewed {max(age, 0):.0f} s ago, runs out "
                f"in {seconds - age:.0f} s unless renewed; a crashed run's lock is taken over "
                "then). Wait for it to end (or stop it), or give another --workdir."
            )
        try:
            self._write(if_generation_match=blob.generation)
        except self._errors.PreconditionFailed:
            raise UserError(
                f"--workdir={os.path.dirname(self.uri)}: another run took its expired lock "
                "at the same moment; give another --workdir or try again."
            ) from None
        why = (
            "that process has ended"
            if age < seconds
            else f"its lease ran out {age - seconds:.0f} s ago"
        )
        print(
            f"note: took over the lock of {holder} in {os.path.dirname(self.uri)}: {why} (a "
            "crashed run)",
            flush=True,
        )

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                self._write(if_generation_match=self._generation)
            except self._errors.PreconditionFailed:
                sys.stderr.write(
                    f"warning: the lock {self.uri} was taken over by another run (this run's "
                    "lease ran out while it was stalled): two runs may now write this workdir.\n"
                )
                return
            except Exception:  # noqa: BLE001 - a network hiccup: the next renewal retries.
                continue

    def release(self) -> None:
        """Stops renewing and deletes the lock object if it is still this run's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.seconds)
        if self._generation is not None:
            try:
                self._blob.delete(if_generation_match=self._generation)
            except Exception:  # noqa: BLE001 - taken over or gone: nothing of ours to delete.
                pass
