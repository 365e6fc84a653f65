"""Pack an image folder tree into one uncompressed .npz of raw file bytes, and unpack it again.

The device tool carries at most 64 MiB and copies files one by one; 60,000 small JPEGs travel
far better as one file. The bytes are stored as they are (no re-encoding), so the unpacked tree
is byte-identical to the original and `data.name=folder:DIR` decodes exactly the same pixels.

    python benchmarks/pack_folder.py pack /tmp/cifar10jpg .data/cifar10_jpeg.npz
    python benchmarks/pack_folder.py unpack .data/cifar10_jpeg.npz /tmp/cifar10
"""

import os
import sys

import numpy as np

_EXTENSIONS = (".jpg", ".jpeg", ".png")


def pack(root: str, out: str) -> None:
    paths, blobs = [], []
    for split in ("train", "test"):
        for directory, _, files in sorted(os.walk(os.path.join(root, split))):
            for name in sorted(files):
                if name.lower().endswith(_EXTENSIONS) and not name.startswith("."):
                    full = os.path.join(directory, name)
                    paths.append(os.path.relpath(full, root).encode())
                    with open(full, "rb") as f:
                        blobs.append(np.frombuffer(f.read(), np.uint8))
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    np.savez(out, paths=np.array(paths), offsets=offsets, blob=np.concatenate(blobs))
    print(f"packed {len(paths)} files, {offsets[-1] / 2**20:.1f} MiB -> {out}")


def unpack(packed: str, root: str) -> None:
    with np.load(packed) as z:
        paths, offsets, blob = z["paths"], z["offsets"], z["blob"]
    for i, rel in enumerate(paths):
        full = os.path.join(root, rel.decode())
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(blob[offsets[i] : offsets[i + 1]].tobytes())
    print(f"unpacked {len(paths)} files -> {root}")


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("pack", "unpack"):
        sys.exit(__doc__)
    (pack if sys.argv[1] == "pack" else unpack)(sys.argv[2], sys.argv[3])
