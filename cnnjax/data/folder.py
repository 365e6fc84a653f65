"""Image folders: `folder:/path` with `train/<class>/*.{jpg,jpeg,png}` and `test/<class>/*`.

Class names are the sorted folder names under train/; test/ uses the same classes (it may lack
some, but may not add any). Images are decoded once, in parallel, and the arrays cached as an
.npz keyed by the file list, their sizes and mtimes, and image_size: any change to the tree
rebuilds the cache, and an unchanged tree loads it without decoding anything.

A folder too big for device memory (or `data.feeding=stream`) is streamed instead:
`FolderSource` hands the streaming feed each file decoded to RGB, in its threads.

Unreadable files (not an image, truncated, over PIL's decompression-bomb limit) are skipped
with one warning line each, in memory and streamed alike; a split with no readable image left
is a UserError. Names are shown as written; bytes that are not UTF-8 (a folder named in
Latin-1) are shown as `\\xe9` escapes instead of stopping the run.

Colour: a set whose images are all grayscale (PIL modes 1, L, LA and 16-bit I) loads as
(N, H, W, 1); any colour image makes the whole set RGB, with gray images repeated over the
three channels. Alpha is dropped. Resizing (image_size > 0) stretches to a square, as
`cnnjax.data.resize` does for every other source.
"""

import concurrent.futures
import hashlib
import os
import threading
import warnings

import numpy as np

from cnnjax import files as storage
from cnnjax.data import cache
from cnnjax.data.progress import DecodeProgress
from cnnjax.errors import UserError

EXTENSIONS = (".jpg", ".jpeg", ".png")
SPLITS = ("train", "test")
_WIDE_GRAY_MODES = ("I", "I;16", "I;16B", "I;16L")  # 16-bit PNGs open in one of these.
_GRAY_MODES = ("1", "L", "LA", *_WIDE_GRAY_MODES)
_CACHE_VERSION = 1  # Bump when the decoded arrays would change for the same files.


def shown(path: str) -> str:
    """`path` as printable text: file names that are not UTF-8 reach Python as surrogate
    escapes, which no UTF-8 stream can print; their bytes become `\\xNN` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _read_errors() -> tuple[type[Exception], ...]:
    """What PIL raises for a file that is no readable image: not an image, truncated, or over
    its decompression-bomb limit (a size no training set needs)."""
    from PIL import Image

    return (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def _reason(error: Exception) -> str:
    from PIL import UnidentifiedImageError

    if isinstance(error, UnidentifiedImageError):  # Its message names a file or a buffer.
        return "PIL cannot identify its format"
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _class_dirs(split_dir: str) -> list[str]:
    return sorted(
        e.name for e in storage.scan(split_dir) if e.is_dir and not e.name.startswith(".")
    )


def _image_entries(class_dir: str) -> list[storage.Entry]:
    return sorted(
        (
            e
            for e in storage.scan(class_dir)
            # Hidden files include macOS "._x.jpg" resource forks, which are not images.
            if not e.is_dir
            and not e.name.startswith(".")
            and os.path.splitext(e.name)[1].lower() in EXTENSIONS
        ),
        key=lambda e: e.path,
    )


def _image_files(class_dir: str) -> list[str]:
    return [e.path for e in _image_entries(class_dir)]


def list_files(path: str) -> tuple[tuple[str, ...], dict[str, list[tuple[str, int]]]]:
    """Class names (as `shown`) and, per split, the sorted (file, label) pairs, with clear
    UserErrors."""
    where = shown(path)
    if not storage.isdir(path):
        raise UserError(
            f"Image folder {where!r} does not exist (expected {where}/train/<class>/*.jpg|png "
            f"and {where}/test/<class>/...)."
        )
    for split in SPLITS:
        if not storage.isdir(os.path.join(path, split)):
            raise UserError(
                f"Image folder {where!r} has no {split}/ subfolder: expected "
                f"{where}/{split}/<class>/*.jpg|png."
            )
    folders = tuple(_class_dirs(os.path.join(path, "train")))
    if not folders:
        raise UserError(f"{where}/train/ holds no class folders: expected train/<class>/*.jpg|png.")
    extra = sorted(set(_class_dirs(os.path.join(path, "test"))) - set(folders))
    if extra:
        raise UserError(
            f"Class folder(s) {', '.join(map(shown, extra))} exist in {where}/test/ but not in "
            f"{where}/train/: the model cannot learn classes it never sees. Add them to train/ "
            "or remove them."
        )
    files = {split: [] for split in SPLITS}
    empty = []
    for split in SPLITS:
        for label, name in enumerate(folders):
            class_dir = os.path.join(path, split, name)
            class_files = _image_files(class_dir) if storage.isdir(class_dir) else []
            if split == "train" and not class_files:
                empty.append(shown(name))
            files[split].extend((f, label) for f in class_files)
        if not files[split]:
            raise UserError(
                f"No images ({'/'.join(EXTENSIONS)}) under {where}/{split}/<class>/: "
                "the class folders are empty."
            )
        if empty:
            raise UserError(
                f"Class folder(s) {', '.join(empty)} in {where}/train/ hold no "
                f"{'/'.join(EXTENSIONS)} images."
            )
    return tuple(shown(name) for name in folders), files


def _cache_key(path: str, files: dict[str, list[tuple[str, int]]], image_size: int) -> str:
    digest = hashlib.sha256(f"v{_CACHE_VERSION} size={image_size}\n".encode())
    # Sizes and stamps from one listing per class folder (one request each in a bucket).
    stamps = {
        e.path: (e.size, e.mtime)
        for folder in sorted({os.path.dirname(f) for split in SPLITS for f, _ in files[split]})
        for e in _image_entries(folder)
    }
    for split in SPLITS:
        for file, label in files[split]:
            size, mtime = stamps[file]
            rel = os.path.relpath(file, path)
            line = f"{split}\t{rel}\t{label}\t{size}\t{mtime}\n"
            digest.update(os.fsencode(line))  # Any name's bytes, UTF-8 or not (see `shown`).
    return digest.hexdigest()[:24]


def _cache_dir(path: str, cache_dir: str | None) -> str | None:
    """The first writable of: cache_dir, else `$CNNJAX_DATA_CACHE` when set ("off": None),
    else <path>/.cnnjax_cache and ~/.cache/cnnjax; None if none is writable."""
    if cache_dir:
        candidates = [cache_dir]
    elif cache.configured():
        candidates = [cache.home()]
    elif storage.is_uri(path):  # A bucket: the decoded copy stays on this machine.
        candidates = [cache.home()]
    else:
        candidates = [os.path.join(path, ".cnnjax_cache"), cache.home()]
    return next((d for d in candidates if d and cache.writable(d)), None)


def _decode(file: str, image_size: int) -> np.ndarray | str:
    """One image file -> uint8 (H, W, 1) if grayscale, else (H, W, 3); or, for a file PIL cannot
    read (not an image, truncated), the reason as a string: the caller skips it."""
    from PIL import Image

    try:
        with storage.open_file(file, "rb") as f, Image.open(f) as image:
            image.load()
            gray = image.mode in _GRAY_MODES
            if image.mode in _WIDE_GRAY_MODES:
                # PIL's convert("L") clips 16-bit values at 255; scale 0..65535 down instead.
                array = np.asarray(image, np.float32) * (255.0 / 65535.0)
                image = Image.fromarray(np.clip(np.round(array), 0, 255).astype(np.uint8))
            image = image.convert("L" if gray else "RGB")
            if image_size > 0 and image.size != (image_size, image_size):
                image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
            array = np.asarray(image, np.uint8)
    except _read_errors() as e:  # PIL's ways of saying "not an image".
        return _reason(e)
    return array[..., None] if array.ndim == 2 else array


def _decode_chunk(files: list[str], image_size: int) -> list[np.ndarray]:
    return [_decode(f, image_size) for f in files]


# Below this many files a process pool costs more (start-up, pickling) than it saves.
_MIN_FILES_FOR_PROCESSES = 2048


def _decode_all(
    files: list[str], image_size: int, num_workers: int, on_chunk=None
) -> list[np.ndarray]:
    """Decodes in `num_workers` processes: for small images PIL spends most of its time in
    Python, holding the GIL, so threads do not scale (measured: 60,000 CIFAR JPEGs take
    36 s with 6 threads on 2 cores vs 18 s serial). on_chunk(n): n more files are decoded."""
    on_chunk = on_chunk or (lambda n: None)
    if num_workers <= 1 or len(files) < _MIN_FILES_FOR_PROCESSES:
        out = []
        for i in range(0, len(files), 256):
            chunk = files[i : i + 256]
            out += _decode_chunk(chunk, image_size)
            on_chunk(len(chunk))
        return out
    import multiprocessing

    chunk = -(-len(files) // (num_workers * 16))
    chunks = [files[i : i + chunk] for i in range(0, len(files), chunk)]
    # fork, not spawn: spawn re-runs the user's __main__ (a script without a main guard would
    # recurse). The children only run PIL and NumPy, never JAX, so forking a process whose
    # JAX threads are running is safe here (as torch's DataLoader workers do after CUDA init).
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with warnings.catch_warnings():
        # JAX warns on every fork that a child using JAX could deadlock; these children don't.
        warnings.filterwarnings(
            "ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning
        )
        with concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=context) as pool:
            out = []
            for part in pool.map(_decode_chunk, chunks, [image_size] * len(chunks)):
                out += part
                on_chunk(len(part))
            return out


def _stack(images: list[np.ndarray], files: list[str], channels: int) -> np.ndarray:
    first = images[0].shape[:2]
    for image, file in zip(images, files, strict=True):
        if image.shape[:2] != first:
            raise UserError(
                f"Images differ in size: {files[0]} is {first[1]}x{first[0]}, {file} is "
                f"{image.shape[1]}x{image.shape[0]}. Resize them all on load with "
                "--config.data.image_size=N."
            )
    out = np.empty((len(images), *first, channels), np.uint8)
    for i, image in enumerate(images):
        out[i] = image  # Broadcasts gray (H, W, 1) over 3 channels in an RGB set.
    return out


def _warn_unreadable(file: str, reason: str) -> None:
    print(f"warning: skipping {shown(file)}: not a readable image ({reason})", flush=True)


def _nothing_readable(split_dir: str, count: int) -> UserError:
    return UserError(
        f"No readable image in {shown(split_dir)}/: all {count} files failed to decode (see "
        "the warnings above)."
    )


def _skip_unreadable(decoded: list, all_files: list[str], files: dict, path: str):
    """Drops the files `_decode` could not read, with one warning line each; a UserError when
    a split has no readable image left. Returns (images, their files, files per split)."""
    bad = {
        f: reason for f, reason in zip(all_files, decoded, strict=True) if isinstance(reason, str)
    }
    if not bad:
        return decoded, all_files, files
    for file, reason in bad.items():
        _warn_unreadable(file, reason)
    kept = {split: [(f, label) for f, label in files[split] if f not in bad] for split in SPLITS}
    for split in SPLITS:
        if not kept[split]:
            raise _nothing_readable(os.path.join(path, split), len(files[split]))
    images = [image for image in decoded if not isinstance(image, str)]
    return images, [f for f in all_files if f not in bad], kept


def load_folder(
    path: str, *, image_size: int = 0, cache_dir: str | None = None, num_workers: int | None = None
) -> dict:
    """Loads an image folder into memory, in the source format.

    Returns train_images/test_images uint8 (N, H, W, C) with C = 1 for all-grayscale sets and 3
    otherwise, train_labels/test_labels int32 (N,), class_names (sorted train/ folder names).
    image_size: > 0 resizes every image to (image_size, image_size); 0 requires one shared size.
    cache_dir: where the decoded .npz goes (default <path>/.cnnjax_cache, else ~/.cache/cnnjax).
    """
    path = storage.absolute(path)
    class_names, files = list_files(path)
    key = _cache_key(path, files, image_size)
    # The folder and image size prefix its cache files, so a rebuild drops its stale ones.
    folder_id = hashlib.sha256(os.fsencode(f"{path}\0{image_size}")).hexdigest()[:12]
    directory = _cache_dir(path, cache_dir)
    cache_file = os.path.join(directory, f"{folder_id}-{key}.npz") if directory else None
    cached = cache.load(cache_file) if cache_file else None
    if cached is not None:
        return {**cached, "class_names": class_names}

    num_workers = num_workers or min(32, os.cpu_count() or 1)
    all_files = [f for split in SPLITS for f, _ in files[split]]
    progress = DecodeProgress(len(all_files), shown(path), cached=cache_file is not None)
    decoded = _decode_all(all_files, image_size, num_workers, progress.update)
    progress.close()
    decoded, all_files, files = _skip_unreadable(decoded, all_files, files, path)
    channels = max(image.shape[-1] for image in decoded)
    images = _stack(decoded, all_files, channels)
    n_train = len(files["train"])
    out = {
        "train_images": images[:n_train],
        "train_labels": np.array([label for _, label in files["train"]], np.int32),
        "test_images": images[n_train:],
        "test_labels": np.array([label for _, label in files["test"]], np.int32),
    }
    if cache_file:
        cache.save(cache_file, out)
    return {**out, "class_names": class_names}


def pixel_bytes(path: str, image_size: int = 0) -> int:
    """The uint8 bytes the folder's images take decoded as RGB, at `image_size` (> 0) or at
    the size of the first training image whose header reads (0 when none does: loading the
    folder then names the unreadable files)."""
    from PIL import Image

    _, files = list_files(storage.absolute(path))
    n = sum(len(files[split]) for split in SPLITS)
    if image_size > 0:
        return n * image_size * image_size * 3
    for file, _ in files["train"]:
        try:
            with storage.open_file(file, "rb") as f, Image.open(f) as im:
                width, height = im.size
        except _read_errors():
            continue
        return n * height * width * 3
    return 0


class FolderSource:
    """Random access over one split's files as records {"image": uint8 (H, W, 3), "label",
    "weight"}: what the streaming feed reads, in its worker threads.

    An unreadable file gets one warning line (the first time it is read) and is never read
    again: its record is the next readable file's (image and label together), with weight 0,
    so evaluation leaves it out as it leaves out padding, and training sees a real example.
    Which files stand in is fixed by the files alone, so the stream stays a pure function of
    (seed, epoch, step) and a resumed run reads what an unbroken one would. A split with no
    readable file is a UserError."""

    def __init__(self, files: list[tuple[str, int]], split_dir: str):
        self.files, self.split_dir = files, split_dir
        self._unreadable: dict[int, str] = {}  # Index -> reason; grows as files are read.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.files)

    def _image(self, i: int) -> np.ndarray | None:
        """The pixels of file `i` as RGB, or None (warned once) when it does not decode."""
        from cnnjax.data import transforms

        if i in self._unreadable:
            return None
        file = self.files[i][0]
        try:
            with storage.open_file(file, "rb") as f:
                return transforms.decode(f.read())
        except _read_errors() as e:
            with self._lock:
                first = i not in self._unreadable
                self._unreadable[i] = _reason(e)
            if first:
                _warn_unreadable(file, self._unreadable[i])
            return None

    def __getitem__(self, i: int) -> dict:
        n = len(self.files)
        for k in range(n):
            j = (int(i) + k) % n
            image = self._image(j)
            if image is not None:
                return {
                    "image": image,
                    "label": np.int32(self.files[j][1]),
                    "weight": np.float32(k == 0),
                }
        raise _nothing_readable(self.split_dir, n)

    def check_readable(self) -> None:
        """A UserError unless some file of the split decodes (tried from the first on)."""
        self[0]


def from_config(data_config) -> dict:
    """The source function for `folder:/path` names; reads image_size from `data_config`."""
    path = data_config.name.removeprefix("folder:")
    return load_folder(path, image_size=int(data_config.get("image_size", 0) or 0))
