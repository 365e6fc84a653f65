"""Random access to {"image", "label"} records: the one format the streaming feed reads."""

import threading
from collections.abc import Callable

import numpy as np

from cnnjax.errors import UserError, first_line


class Records:
    """{"image", "label"} record `i` of a split, at random access.

    `Records(source, image_key, label_key)` reads a random-access source whose records name the
    two fields otherwise (a TFDS data source); `Records.of_arrays(images, labels)` reads an
    in-memory split (images (N, H, W, C), labels (N,)).

    A source's record that cannot be read (a damaged file met mid-stream) is skipped as
    `folder.FolderSource` skips an unreadable image: its slot takes the next readable record
    with "weight" 0 (evaluation leaves it out), so a run is not lost hours in, and the stream
    stays a pure function of the files. One warning line per damaged file, naming it and the
    first damaged record through `report(i, error) -> (file, "record P: reason")`, and saying
    what to do (`fix`)."""

    def __init__(
        self,
        source,
        image_key: str = "image",
        label_key: str = "label",
        *,
        report: Callable[[int, Exception], tuple[str, str]] | None = None,
        fix: str = "",
    ):
        self.source, self.image_key, self.label_key = source, image_key, label_key
        self.report, self.fix = report, fix
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None
        self._unreadable: set[int] = set()  # Indices known damaged; grows as they are met.
        self._warned: set[str] = set()  # Files already named in a warning.
        self._lock = threading.Lock()

    @classmethod
    def of_arrays(cls, images: np.ndarray, labels: np.ndarray) -> "Records":
        records = cls(None)
        records._arrays = (images, labels)
        return records

    def __len__(self) -> int:
        return len(self._arrays[1]) if self._arrays is not None else len(self.source)

    def __getitem__(self, i: int) -> dict:
        if self._arrays is not None:
            images, labels = self._arrays
            return {"image": images[i], "label": labels[i]}
        n = len(self.source)
        for k in range(n):
            j = (int(i) + k) % n
            record = self._read(j)
            if record is not None:
                return {
                    "image": record[self.image_key],
                    "label": record[self.label_key],
                    "weight": np.float32(k == 0),
                }
        raise UserError(f"No record of this split can be read (see the warnings above). {self.fix}")

    def _read(self, i: int):
        """Record `i` of the source, or None (its file named once) when it cannot be read."""
        if i in self._unreadable:
            return None
        try:
            return self.source[i]
        except Exception as e:  # noqa: BLE001 - any failure to read or decode a stored record.
            if self.report:
                file, detail = self.report(i, e)
            else:
                file, detail = "the data", f"record {i}: {first_line(e, 160)}"
            with self._lock:
                self._unreadable.add(i)
                first = file not in self._warned
                self._warned.add(file)
            if first:
                print(
                    f"warning: skipping damaged records of {file} (first: {detail}); each is "
                    f"replaced by the next readable one and left out of evaluation. "
                    f"{self.fix}".rstrip(),
                    flush=True,
                )
            return None
