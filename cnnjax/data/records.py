"""Random access to {"image", "label"} records: the one format the streaming feed reads."""

import numpy as np


class Records:
    """{"image", "label"} record `i` of a split, at random access.

    `Records(source, image_key, label_key)` reads a random-access source whose records name the
    two fields otherwise (a TFDS data source); `Records.of_arrays(images, labels)` reads an
    in-memory split (images (N, H, W, C), labels (N,))."""

    def __init__(self, source, image_key: str = "image", label_key: str = "label"):
        self.source, self.image_key, self.label_key = source, image_key, label_key
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None

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
        record = self.source[i]
        return {"image": record[self.image_key], "label": record[self.label_key]}
