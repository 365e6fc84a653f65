"""What a user sees while a big dataset is decoded into memory (a first run's wait): a tqdm bar
on a terminal, else a line before and a line after, from process 0 only. Sets under
`MIN_IMAGES` decode in about a second and stay quiet."""

import sys
import time

MIN_IMAGES = 2048


def _process_zero() -> bool:
    import jax

    return jax.process_index() == 0


class DecodeProgress:
    def __init__(self, total: int, desc: str, *, cached: bool):
        """total: images to decode; desc: e.g. "cifar10 train"; cached: whether the arrays will
        be kept for the next run (`cnnjax.data.cache`), which the first line says."""
        self.total, self.desc = total, desc
        self.enabled = total >= MIN_IMAGES and _process_zero()
        self.t0 = time.perf_counter()
        self._bar = None
        if not self.enabled:
            return
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, desc=f"decoding {desc}", unit="img", file=sys.stderr, leave=False
            )
        else:
            later = " once; later runs read the decoded cache" if cached else ""
            print(f"{desc}: decoding {total:,} images{later}", flush=True)

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        seconds = time.perf_counter() - self.t0
        print(
            f"{self.desc}: {self.total:,} images decoded in {seconds:.1f} s "
            f"({self.total / max(seconds, 1e-9):,.0f} images/s)",
            flush=True,
        )
