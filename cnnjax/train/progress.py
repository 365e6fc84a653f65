"""The console progress bar: step, loss, accuracy, images/s and ETA.

A tqdm bar on a terminal; plain lines at each log step when output goes to a file or CI log.
"""

import sys
import time

import jax
from tqdm import tqdm


def _format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    def __init__(self, *, total: int, initial: int, desc: str):
        self.total, self.start, self.desc = total, initial, desc
        self.enabled = jax.process_index() == 0
        self.tty = sys.stderr.isatty()
        self.t0 = time.perf_counter()
        self._bar = None
        if self.enabled and self.tty:
            self._bar = tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit="step",
                dynamic_ncols=True,
                file=sys.stderr,
                smoothing=0.1,
            )

    def update(
        self, step: int, *, loss: float, accuracy: float, images_per_sec: float, extra: str = ""
    ) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            postfix = f"loss={loss:.4f} acc={accuracy:.3f} {images_per_sec:,.0f} img/s"
            self._bar.set_postfix_str(postfix + (f" {extra}" if extra else ""), refresh=True)
            return
        done = step - self.start
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / done * (self.total - step) if done > 0 else 0.0
        print(
            f"{self.desc} step {step}/{self.total} ({100 * step / self.total:.0f}%) "
            f"loss={loss:.4f} acc={accuracy:.3f} {images_per_sec:,.0f} img/s "
            f"ETA {_format_duration(eta)}" + (f" {extra}" if extra else ""),
            flush=True,
        )

    def write(self, message: str) -> None:
        """Prints a line without breaking the bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
