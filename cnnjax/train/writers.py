"""Where metrics go: `metrics.jsonl` (one JSON object per event) and TensorBoard event files.

On resume from step `s`, events after `s` written by the interrupted run are dropped from
`metrics.jsonl`, and TensorBoard is told to purge them, so the logs read like one clean run.

A sink fails loudly and fast, never silently and never by blocking: a write the disk refuses
(full, read-only, ...) raises `MetricsWriteError` on the training thread, naming the file and
the OS error, at that event (metrics.jsonl) or the next one (TensorBoard). TensorBoard files are
written by a thread of their own from a bounded queue; the training thread waits on it at most
`_TB_WAIT_S` (in slices, so signal handlers run), and a thread that died is noticed.
"""

import contextlib
import itertools
import json
import math
import os
import queue
import socket
import sys
import threading
import time

import jax

from cnnjax import files
from cnnjax.errors import MetricsWriteError, UserError

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
_TB_QUEUE = 4096  # Events waiting for the TensorBoard thread (a few KB each at most).
_TB_WAIT_S = 10.0  # The longest the training thread waits for the TensorBoard thread.
_TB_FLUSH_S = 10.0  # How often the TensorBoard thread flushes (and fsyncs) its file.
_TB_FILES = itertools.count()  # Event files opened by this process.
_UPLOAD_S = 5.0  # metrics.jsonl in object storage: the most seconds between two uploads.


def read_events(workdir: str) -> list[dict]:
    """All events of a run's `metrics.jsonl`, in order ([] when there is none).

    A torn last line (a crash mid-write) is skipped quietly. Other lines that hold no event
    (bytes that are not UTF-8, not JSON, JSON that is not an object with an integer "step")
    are skipped with one warning line for the file. Something other than a file in its place
    is a `UserError` naming the path and the fix."""
    path = os.path.join(workdir, METRICS_FILE)
    try:
        chunks = files.read_bytes(path).split(b"\n")
    except FileNotFoundError:
        return []
    except OSError as e:  # A directory in its place (IsADirectoryError), no permission, ...
        raise UserError(
            f"{path} cannot be read as the run's metrics log ({os_reason(e)}): move it aside "
            "(training writes a new one)."
        ) from None
    events, bad = [], []
    for number, chunk in enumerate(chunks, 1):
        if not chunk.strip():
            continue
        event = _event(chunk)
        if event is not None:
            events.append(event)
        elif number < len(chunks):  # Not the last piece, which lacks its newline when torn.
            bad.append(number)
    if bad:
        print(
            f"warning: skipped {len(bad)} unreadable line{'s' if len(bad) > 1 else ''} of "
            f"{path} ({', '.join(map(str, bad[:3]))}{', ...' if len(bad) > 3 else ''}); the "
            "other events are used.",
            file=sys.stderr,
            flush=True,
        )
    return events


def _event(line: bytes) -> dict | None:
    """The event on one line of metrics.jsonl, or None if the line holds none."""
    try:
        event = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if isinstance(event, dict) and type(event.get("step")) is int:
        return event
    return None


def os_reason(e: OSError) -> str:
    """`[Errno 28] No space left on device`, without the file name (the message has it)."""
    return f"[Errno {e.errno}] {e.strerror}" if e.errno and e.strerror else str(e)


def _cannot_write(path: str, e: OSError) -> str:
    return f"could not write {path}: {os_reason(e)}"


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them readable rather than invalid.
    return value


def _before(event: dict, resume_step: int) -> bool:
    """Whether an interrupted run's event stays: everything up to the resume step, except a
    phase switch logged at that very step, which the resumed run performs (and logs) again."""
    step = event.get("step", 0)
    return step < resume_step or (step == resume_step and event.get("kind") != "phase")


class MetricWriter:
    """Writes events on process 0 only. `resume_step`: the step training restarts from.

    `__init__`, `write` and `close` raise `MetricsWriteError` when a sink cannot write."""

    def __init__(self, workdir: str, resume_step: int | None):
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, METRICS_FILE)
        self._fd = None
        self._tb = None
        if not self.enabled:
            return
        kept = [e for e in read_events(workdir) if resume_step and _before(e, resume_step)]
        try:
            # Rewritten whole or not at all: a full disk or a kill keeps the previous log.
            self._lines = [json.dumps(e) + "\n" for e in kept]
            files.write_atomic(self.path, "".join(self._lines))
            self._uploaded = time.monotonic()
            # Unbuffered, one write per event: nothing is left in a buffer that a later flush
            # (or the interpreter's exit) would try again and fail on. Object storage cannot
            # append: there the whole log is uploaded again, at most every _UPLOAD_S and at
            # the end.
            if not files.is_uri(self.path):
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except OSError as e:
            raise MetricsWriteError(_cannot_write(self.path, e)) from None
        self._tb = _TensorBoard(
            os.path.join(workdir, TENSORBOARD_DIR), (resume_step + 1) if resume_step else None
        )

    def write(self, event: dict) -> None:
        """event: {"step": int, "kind": "train"|"eval"|..., name: number, ...}."""
        if not self.enabled:
            return
        self._tb.check()
        line = json.dumps({k: _jsonable(v) for k, v in event.items()}) + "\n"
        try:
            if self._fd is None:  # Object storage.
                self._lines.append(line)
                if time.monotonic() - self._uploaded >= _UPLOAD_S:
                    self._upload()
            else:
                data = memoryview(line.encode("utf-8"))
                while data:
                    data = data[os.write(self._fd, data) :]
        except OSError as e:
            raise MetricsWriteError(_cannot_write(self.path, e)) from None
        kind = event.get("kind", "train")
        scalars = [
            (f"{kind}/{name}", float(value))
            for name, value in event.items()
            if name not in ("step", "kind") and isinstance(value, int | float)
        ]
        self._tb.put((event["step"], time.time(), scalars))

    def close(self) -> None:
        """Closes metrics.jsonl and waits (at most `_TB_WAIT_S`) for the TensorBoard file."""
        if self._tb is None:
            return
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        else:
            try:
                self._upload()
            except OSError as e:
                raise MetricsWriteError(_cannot_write(self.path, e)) from None
        tb, self._tb = self._tb, None
        tb.close()

    def _upload(self) -> None:
        files.write_atomic(self.path, "".join(self._lines))
        self._uploaded = time.monotonic()


class _TensorBoard:
    """TensorBoard event files, written by a thread of its own.

    The thread imports tensorboardX (1.4-2.4 s: it imports torch when torch is installed), which
    then overlaps the step's compilation (XLA releases the GIL) instead of coming before it,
    and writes the events the training thread queues. It writes records with tensorboardX's
    `RecordWriter`, not its `SummaryWriter`: that one's own writer thread dies on a refused
    write (a full disk), after which its bounded queue blocks `add_scalar` forever (SIGTERM
    included), and its exit hook blocks again on the same queue."""

    _CLOSE = None  # The last item: flush, close, end the thread.

    def __init__(self, logdir: str, purge_step: int | None):
        self.logdir = logdir
        self._queue = queue.Queue(_TB_QUEUE)
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(purge_step,), name="tensorboard-writer", daemon=True
        )
        self._thread.start()

    def check(self) -> None:
        """Raises what stopped the thread: `MetricsWriteError` for a refused write; any other
        error (a bug, a broken install) as it is."""
        error = self._error
        if error is None and self._thread.is_alive():
            return
        if error is None or isinstance(error, OSError):
            reason = os_reason(error) if error else "its writer thread ended"
            raise MetricsWriteError(f"could not write {self.logdir}: {reason}") from None
        raise error

    def put(self, item) -> None:
        """Queues `item` for the thread; waits at most `_TB_WAIT_S` for room in the queue."""
        deadline = time.monotonic() + _TB_WAIT_S
        while True:
            self.check()
            try:
                self._queue.put(item, timeout=0.1)  # Short waits: signal handlers run between.
                return
            except queue.Full:
                if time.monotonic() > deadline:
                    raise MetricsWriteError(
                        f"could not write {self.logdir}: its writer took no event for "
                        f"{_TB_WAIT_S:.0f} s (a stalled disk?)"
                    ) from None

    def close(self) -> None:
        self.put(self._CLOSE)
        self._thread.join(_TB_WAIT_S)
        if self._thread.is_alive():
            raise MetricsWriteError(
                f"could not write {self.logdir}: its file was not closed within "
                f"{_TB_WAIT_S:.0f} s (a stalled disk?)"
            )
        if self._error is not None:
            self.check()

    def _run(self, purge_step: int | None) -> None:
        writer = None
        try:
            # Local: only a training run needs it.
            from tensorboardX.proto.event_pb2 import Event, SessionLog
            from tensorboardX.record_writer import RecordWriter
            from tensorboardX.summary import scalar

            files.makedirs(self.logdir)
            # tensorboardX's file name, plus the process and a count: a re-run in the same
            # second gets a file of its own instead of truncating the previous one.
            name = (
                f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}."
                f"{os.getpid()}.{next(_TB_FILES)}"
            )
            writer = RecordWriter(os.path.join(self.logdir, name))
            first = [Event(wall_time=time.time(), file_version="brain.Event:2")]
            if purge_step:  # TensorBoard hides the events at and after it from earlier files.
                first += [
                    Event(wall_time=time.time(), step=purge_step, file_version="brain.Event:2"),
                    Event(
                        wall_time=time.time(),
                        step=purge_step,
                        session_log=SessionLog(status=SessionLog.START),
                    ),
                ]
            for event in first:
                writer.write(event.SerializeToString())
            flushed, pending = float("-inf"), True  # The first events are flushed at once.
            while True:
                try:
                    item = self._queue.get(timeout=_TB_FLUSH_S)
                except queue.Empty:
                    item = ()
                if item is self._CLOSE:
                    writer.flush()
                    writer.close()
                    return
                if item:
                    step, wall_time, scalars = item
                    for tag, value in scalars:
                        event = Event(wall_time=wall_time, step=step, summary=scalar(tag, value))
                        writer.write(event.SerializeToString())
                    pending = True
                if pending and time.monotonic() - flushed >= _TB_FLUSH_S:
                    writer.flush()
                    flushed, pending = time.monotonic(), False
        except BaseException as e:  # Raised on the training thread by check().
            self._error = e
            if writer is not None:
                # Closes the file, dropping what the disk refused, so that nothing tries
                # to write it again when the process exits.
                with contextlib.suppress(Exception):
                    writer.close()
