"""Where metrics go: `metrics.jsonl` (one JSON object per event) and TensorBoard event files.

On resume from step `s`, events after `s` written by the interrupted run are dropped from
`metrics.jsonl`, and TensorBoard is told to purge them, so the logs read like one clean run.
"""

import json
import math
import os
import threading

import jax

METRICS_FILE = "metrics.jsonl"


def read_events(workdir: str) -> list[dict]:
    """All events of a run's `metrics.jsonl` (a torn last line from a crash is skipped)."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    events = []
    with open(path) as f:
        for line in f:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


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
    """Writes events on process 0 only. `resume_step`: the step training restarts from."""

    def __init__(self, workdir: str, resume_step: int | None):
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, METRICS_FILE)
        self._tb = None
        self._tb_thread = None
        if not self.enabled:
            return
        kept = [e for e in read_events(workdir) if resume_step and _before(e, resume_step)]
        with open(self.path, "w") as f:
            f.writelines(json.dumps(e) + "\n" for e in kept)
        self._file = open(self.path, "a")  # noqa: SIM115 - closed in close().
        # The TensorBoard writer is made on a thread: importing tensorboardX takes 1.4-2.4 s
        # (it imports torch when torch is installed), which then overlaps the step's
        # compilation (XLA releases the GIL) instead of coming before it.
        self._tb_error = None
        self._tb_thread = threading.Thread(
            target=self._open_tensorboard,
            args=(os.path.join(workdir, "tensorboard"), resume_step),
            name="tensorboard-writer",
            daemon=True,
        )
        self._tb_thread.start()

    def _open_tensorboard(self, logdir: str, resume_step: int | None) -> None:
        try:
            from tensorboardX import SummaryWriter  # Local: only a training run needs it.

            self._tb = SummaryWriter(
                logdir, purge_step=(resume_step + 1) if resume_step else None, flush_secs=10
            )
        except BaseException as e:  # Re-raised on the caller's thread by _tensorboard().
            self._tb_error = e

    def _tensorboard(self):
        if self._tb_thread is not None:
            self._tb_thread.join()
            self._tb_thread = None
            if self._tb_error is not None:
                raise self._tb_error
        return self._tb

    def write(self, event: dict) -> None:
        """event: {"step": int, "kind": "train"|"eval"|..., name: number, ...}."""
        if not self.enabled:
            return
        self._file.write(json.dumps({k: _jsonable(v) for k, v in event.items()}) + "\n")
        self._file.flush()
        kind = event.get("kind", "train")
        for name, value in event.items():
            if name in ("step", "kind") or not isinstance(value, int | float):
                continue
            self._tensorboard().add_scalar(f"{kind}/{name}", value, global_step=event["step"])

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            self._tensorboard().close()
