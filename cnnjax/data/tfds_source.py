"""TFDS datasets by name, read from a prepared data dir through `tfds.data_source` (array_record).

Reading needs no TensorFlow: records come from array_record files and images are decoded with
PIL (or OpenCV when installed). Preparing a dataset (downloading it and writing the files) does
need TensorFlow, so it only happens when the user asks for it (`download=True`) and TensorFlow
is importable; otherwise a missing dataset is a `UserError` that names the exact commands to run.

No call here touches the network unless `download=True`: TFDS can hang trying to reach its cloud
bucket, so `try_gcs=False` everywhere and `list_builders` without community datasets.
"""

import concurrent.futures
import glob
import hashlib
import importlib.util
import json
import os
import re
import unittest.mock
from collections.abc import Sequence

import numpy as np

from cnnjax.data import cache
from cnnjax.data.progress import DecodeProgress
from cnnjax.errors import UserError, did_you_mean, first_line
from cnnjax.files import absolute as absolute_path

# Formats TFDS can read by index; TFRECORD data must be converted (or rebuilt) first.
_RANDOM_ACCESS_FORMATS = ("array_record", "parquet")
_CACHE_VERSION = 1  # Bump when the decoded arrays would change for the same files.
# Images smaller than this decode faster in one thread than in several (see read_examples).
_MIN_PIXELS_FOR_THREADS = 128 * 128
# Examples one reader thread decodes per task: big enough to amortize the pool's overhead.
_CHUNK = 256
# Datasets with a segmentation mask: name -> (mask feature, its value of class 0, class names).
# Feature names from tensorflow_datasets/datasets/oxford_iiit_pet/*_builder.py; its trimaps
# are 1 pet, 2 background, 3 border (the dataset's README). Other values become IGNORE_LABEL.
SEGMENTATION_MASKS = {
    "oxford_iiit_pet": ("segmentation_mask", 1, ("pet", "background", "border")),
}
IGNORE_LABEL = 255


def resolve_data_dir(data_dir: str | None) -> str:
    """The data dir to read: `data_dir` if given, else $TFDS_DATA_DIR, else TFDS's default."""
    if data_dir:
        return absolute_path(data_dir)
    from tensorflow_datasets.core import constants  # Knows TFDS_DATA_DIR and the default.

    return absolute_path(constants.get_default_data_dir())


def _base_name(name: str) -> str:
    """'cifar10/config:3.0.2' -> 'cifar10'."""
    return name.split("/")[0].split(":")[0]


def _prepare_commands(name: str, data_dir: str) -> str:
    # Flag names checked against tensorflow_datasets/scripts/cli/{build,cli_utils}.py.
    return (
        f"pip install 'cnnjax[prepare]' && "
        f"tfds build {_base_name(name)} --data_dir={data_dir} --file_format=array_record"
    )


def builder(name: str, *, data_dir: str | None = None):
    """The `tfds.core.DatasetBuilder` for `name` (no network); UserError for unknown names."""
    import tensorflow_datasets as tfds

    data_dir = resolve_data_dir(data_dir)
    try:
        return tfds.builder(name, data_dir=data_dir, try_gcs=False)
    except tfds.core.DatasetNotFoundError:
        known = tfds.list_builders(with_community_datasets=False)
        raise UserError(
            f"Unknown TFDS dataset {name!r} (not registered in tensorflow_datasets "
            f"and not found in {data_dir}).{did_you_mean(_base_name(name), known)} "
            "Catalog: https://www.tensorflow.org/datasets/catalog/overview"
        ) from None
    except _metadata_errors() as e:
        # Before ValueError: protobuf's ParseError is one. A dataset_info.json that is not JSON
        # (garbled, zeroed, truncated) or not TFDS's schema.
        path, why = _damaged_metadata(name, data_dir), first_line(e)
        if why.startswith("Failed to construct dataset") and '": ' in why:
            why = why.split('": ', 1)[1]  # TFDS's prefix repeats the name and the data dir.
        raise _damaged(path, f"cannot be read ({why})", name, data_dir) from None
    except (ValueError, AssertionError) as e:
        # Unknown config or version: TFDS's own message lists the ones that exist.
        raise UserError(f"Cannot open TFDS dataset {name!r}: {str(e).strip()}") from None


def _metadata_errors() -> tuple[type[Exception], ...]:
    from google.protobuf import json_format

    return (json_format.ParseError, json.JSONDecodeError)


def _damaged_metadata(name: str, data_dir: str) -> str:
    """The dataset_info.json of `name` under `data_dir` that does not parse as a JSON object
    (else the only one there, else the dataset's folder)."""
    base = os.path.join(data_dir, _base_name(name))
    pattern = os.path.join(glob.escape(base), "**", "dataset_info.json")
    found = sorted(glob.glob(pattern, recursive=True))
    for path in found:
        try:
            with open(path, encoding="utf-8") as f:
                if not isinstance(json.load(f), dict):
                    return path
        except (OSError, ValueError):
            return path
    return found[0] if len(found) == 1 else base


def _damaged(path: str, what: str, name: str, data_dir: str) -> UserError:
    """The one line for a damaged file of a prepared dataset: which file, and the fix."""
    return UserError(f"TFDS dataset {name!r}: {path} {what}. {_repair(path, name, data_dir)}")


def _repair(path: str, name: str, data_dir: str) -> str:
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    move = f"Move {folder} aside and prepare it again" if folder else "Prepare it again"
    return (
        f"{move} with: {_prepare_commands(name, data_dir)} ; or point --config.data.data_dir "
        "(or $TFDS_DATA_DIR) at an intact prepared copy."
    )


def _file_instructions(dataset_builder, split: str) -> list | None:
    """The files (and record ranges) `split` reads, from the metadata; None when unknown."""
    try:
        return list(dataset_builder.info.splits[split].file_instructions)
    except (KeyError, ValueError, TypeError, AssertionError, AttributeError):
        return None


def _mocked(source) -> bool:
    """Whether `source` comes from `tfds.testing.mock_data` (no files behind it)."""
    return isinstance(getattr(source, "data_source", None), unittest.mock.NonCallableMock)


def reason(error: BaseException) -> str:
    """Why a record or file did not read, in one line, without the hash values Riegeli puts
    in its message."""
    text = re.sub(r" \(computed 0x\w+, stored 0x\w+\)", "", first_line(error))
    return text if len(text) <= 160 else text[:157] + "..."


def _check_files(dataset_builder, split: str, name: str, data_dir: str) -> None:
    """A UserError naming the file when one that `split` reads is missing, cannot be opened
    (truncated, overwritten: its footer does not parse) or holds another number of records
    than the metadata says, or when the split's first or last record does not read. Opens each
    file and reads two records, not the data: damage inside a file shows when its record is
    read. Local files only (a gs:// data dir is TFDS's to read)."""
    file_format = dataset_builder.info.file_format
    array_record = getattr(file_format, "value", file_format) == "array_record"
    instructions = _file_instructions(dataset_builder, split) or []
    for k, instruction in enumerate(instructions):
        path = os.fspath(instruction.filename)
        if "://" in path:
            continue
        if not os.path.isfile(path):
            raise _damaged(path, f"is missing (split {split!r} reads it)", name, data_dir)
        ends = []  # The split's first record (in its first file) and last (in its last).
        if k == 0:
            ends.append(instruction.skip)
        if k == len(instructions) - 1:
            ends.append(instruction.skip + instruction.take - 1)
        problem = _read_problem(path, instruction, ends) if array_record else None
        if problem:
            raise _damaged(path, problem, name, data_dir)


def _read_problem(path: str, instruction, positions) -> str | None:
    """What is wrong with array_record file `path` for `instruction` (its footer does not
    parse, another record count than the metadata's, a record at `positions` does not read),
    or None."""
    from array_record.python import array_record_module

    problem, reader, count = None, None, None
    try:
        # As TFDS opens it: no read-ahead, so a record read costs that record alone.
        reader = array_record_module.ArrayRecordReader(
            path, options="readahead_buffer_size:0", file_reader_buffer_size=32768
        )
        count = reader.num_records() if reader.ok() else None
        if count is not None and count != instruction.examples_in_shard:
            problem = (
                f"holds {count} records where dataset_info.json says "
                f"{instruction.examples_in_shard}"
            )
        for position in sorted(set(positions)) if count is not None and not problem else []:
            try:
                reader.read([position])
            except Exception as e:  # noqa: BLE001 - the reader's errors are RuntimeErrors.
                problem = f"is damaged at record {position} ({reason(e)})"
                break
    except Exception as e:  # noqa: BLE001 - as above.
        problem = f"is damaged ({reason(e)})"
    finally:
        if reader is not None:
            try:
                reader.close()  # A reader that is not ok() raises its reason here.
            except Exception as e:  # noqa: BLE001 - as above.
                problem = problem or f"is damaged ({reason(e)})"
    if count is None and not problem:
        problem = "is damaged (array_record cannot open it)"
    return problem


def record_locator(source):
    """For a TFDS data source: i -> (file, record position in it) of example i of its split;
    None when that is unknown (a mocked source)."""
    if _mocked(source):
        return None
    try:
        instructions = list(source.dataset_info.splits[source.split].file_instructions)
    except (KeyError, ValueError, TypeError, AssertionError, AttributeError):
        return None
    ends = np.cumsum([fi.take for fi in instructions])

    def locate(i: int) -> tuple[str, int]:
        k = int(np.searchsorted(ends, i, side="right"))
        start = int(ends[k - 1]) if k else 0
        return os.fspath(instructions[k].filename), instructions[k].skip + i - start

    return locate


def damage_reporter(source):
    """For `data.records.Records`: (i, error) -> (the file of example i, "record P: reason")."""
    locate = record_locator(source)

    def report(i: int, error: BaseException) -> tuple[str, str]:
        file, position = locate(i) if locate else ("the dataset", i)
        return file, f"record {position}: {reason(error)}"

    return report


def repair_hint(source, name: str, data_dir: str | None) -> str:
    """What to do about damaged records of `source`'s dataset (the fix of `_damaged`)."""
    folder = os.fspath(getattr(source.dataset_info, "data_dir", "") or "")
    return _repair(folder, name, resolve_data_dir(data_dir))


def _tensorflow_available() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def _prepare(dataset_builder, name: str, data_dir: str) -> None:
    """Downloads and writes `name` as array_record; only called when the user asked."""
    if not _tensorflow_available():
        raise UserError(
            f"Preparing TFDS dataset {name!r} in {data_dir} needs TensorFlow, which is not "
            f"installed. Run: {_prepare_commands(name, data_dir)}"
        )
    dataset_builder.download_and_prepare(file_format="array_record")


def _not_readable_error(dataset_builder, name: str, data_dir: str) -> UserError | None:
    """Explains why a data source could not be opened, in terms of what the user can do, or
    None when the cause is not one of the known ones."""
    manual = " ".join(
        str(getattr(dataset_builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None) or "").split()
    )
    if not dataset_builder.is_prepared() and manual:
        return UserError(
            f"TFDS dataset {name!r} is not prepared in {dataset_builder.data_path} and cannot "
            f"be downloaded automatically. TFDS says: {manual} Then prepare it once with: "
            f"{_prepare_commands(name, data_dir)} --manual_dir=/path/to/those/files ; or point "
            "to a prepared copy with --config.data.data_dir=/path/to/prepared (or "
            "$TFDS_DATA_DIR)."
        )
    if not dataset_builder.is_prepared():
        return UserError(
            f"TFDS dataset {name!r} is not prepared in {dataset_builder.data_path} "
            f"(data dir searched: {data_dir}). Prepare it once with: "
            f"{_prepare_commands(name, data_dir)} ; or let cnnjax prepare it with "
            "--config.data.download=true (needs cnnjax[prepare] and a network); or point to a "
            "prepared copy with --config.data.data_dir=/path/to/prepared (or $TFDS_DATA_DIR)."
        )
    file_format = dataset_builder.info.file_format
    file_format = getattr(file_format, "value", file_format)
    if file_format in _RANDOM_ACCESS_FORMATS:
        return None
    return UserError(
        f"TFDS dataset {name!r} in {dataset_builder.data_path} is stored as {file_format}, "
        "which cannot be read without TensorFlow. Convert it with: pip install 'cnnjax[prepare]' "
        f"&& tfds convert_format --dataset_version_dir={dataset_builder.data_path} "
        f"--out_file_format=array_record ; or rebuild it with: {_prepare_commands(name, data_dir)}"
    )


def data_source(
    name: str, split: str, *, data_dir: str | None = None, download: bool = False
) -> Sequence[dict]:
    """Random-access examples of `split` ("train", "train[:90%]", ...) of a prepared dataset.

    Returns TFDS's data source: `len()`, and `[i]` -> dict of decoded NumPy features.
    """
    data_dir = resolve_data_dir(data_dir)
    dataset_builder = builder(name, data_dir=data_dir)
    if download and not dataset_builder.is_prepared():
        _prepare(dataset_builder, name, data_dir)
    # Ask forgiveness, not permission: opening is the real test of "prepared" (and the one
    # `tfds.testing.mock_data` fakes), so the diagnosis only runs when opening fails.
    try:
        source = dataset_builder.as_data_source(split=split)
    except (ValueError, NotImplementedError, FileNotFoundError, AssertionError) as e:
        error = _not_readable_error(dataset_builder, name, data_dir)
        if error is None and _file_instructions(dataset_builder, split) == []:
            error = UserError(
                f"Split {split!r} of TFDS dataset {name!r} has no examples (in "
                f"{dataset_builder.data_path}): choose one that has some, e.g. "
                f"{_split_sizes(dataset_builder)}; slices like 'train[:90%]' work too."
            )
        if error is None and isinstance(e, ValueError) and "split" in str(e).lower():
            splits = ", ".join(dataset_builder.info.splits) or "none recorded"
            error = UserError(
                f"Bad split {split!r} for TFDS dataset {name!r} (splits: {splits}; slices "
                "like 'train[:90%]' or 'train[90%:]' work too). " + str(e).splitlines()[0]
            )
        if error is None:
            raise
        raise error from e
    if not _mocked(source):
        _check_files(dataset_builder, split, name, data_dir)
    return source


def _split_sizes(dataset_builder) -> str:
    """ "train (60000), test (10000)": the recorded splits and their sizes."""
    splits = dataset_builder.info.splits
    return ", ".join(f"{s} ({splits[s].num_examples})" for s in splits) or "none recorded"


def warn_if_test_in_train(name: str, train_split: str, test_split: str, data_dir=None) -> None:
    """One `warning:` line when examples of `test_split` are also in `train_split` (`test`,
    `train+test`, overlapping slices): the test metrics then measure training examples."""
    dataset_builder = builder(name, data_dir=data_dir)
    train = _file_instructions(dataset_builder, train_split)
    test = _file_instructions(dataset_builder, test_split)
    if not train or not test:
        return
    shared = 0
    for a in train:
        for b in test:
            if os.fspath(a.filename) == os.fspath(b.filename):
                start, end = max(a.skip, b.skip), min(a.skip + a.take, b.skip + b.take)
                shared += max(0, end - start)
    if shared:
        total = sum(b.take for b in test)
        print(
            f"warning: --config.data.train_split={train_split!r} holds {shared} of the {total} "
            f"examples of the test split {test_split!r}: the test metrics are not a held-out "
            "measure (--config.data.train_split='train[:90%]' --config.data.test_split="
            "'train[90%:]' holds one out).",
            flush=True,
        )


def split_size(name: str, split: str, data_dir: str | None = None) -> int:
    """Number of examples in `split` (slices allowed), from the metadata alone."""
    dataset_builder = builder(name, data_dir=data_dir)
    error = _not_readable_error(dataset_builder, name, resolve_data_dir(data_dir))
    if error is not None:
        raise error
    return dataset_builder.info.splits[split].num_examples


def feature_keys(features) -> tuple[str, str, tuple[str, ...]]:
    """(image key, label key, class names): the first top-level Image and ClassLabel features."""
    import tensorflow_datasets as tfds

    image_key = label_key = None
    for key, feature in features.items():
        if image_key is None and isinstance(feature, tfds.features.Image):
            image_key = key
        if label_key is None and isinstance(feature, tfds.features.ClassLabel):
            label_key = key
    if image_key is None or label_key is None:
        raise UserError(
            "cnnjax classifies images: the dataset needs an Image and a ClassLabel feature, "
            f"but it has {features}."
        )
    return image_key, label_key, tuple(str(n) for n in features[label_key].names)


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, C) -> (size, size, C), bilinear with PIL's antialiasing."""
    from PIL import Image

    if image.shape[:2] == (size, size):
        return image
    channels = image.shape[-1]
    pil = Image.fromarray(image[..., 0] if channels == 1 else image)
    out = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR))
    return out.reshape(size, size, channels)


def read_examples(
    source: Sequence[dict],
    image_key: str,
    label_key: str,
    *,
    image_size: int = 0,
    num_threads: int | None = None,
    mask: tuple | None = None,
    on_chunk=None,
) -> tuple[np.ndarray, ...]:
    """Decodes every example of `source` into uint8 images (N, H, W, C) and int32 labels (N,),
    and with `mask` = (feature, value of class 0, class names) also uint8 masks (N, H, W)
    (values shifted to 0.., anything else IGNORE_LABEL; resized by nearest neighbour).

    Images of `_MIN_PIXELS_FOR_THREADS` pixels or more go to a thread pool in chunks: decoding
    large JPEGs (PIL/OpenCV) releases the GIL. Small ones are read in this thread: TFDS's
    example parsing holds the GIL, and for CIFAR's 32x32 PNGs 2 threads took 2.35-2.47 s per
    5,000 against 1.63-1.92 s serial. Per-index reads are used rather than `__getitems__`:
    locally they are as fast, and `tfds.testing.mock_data`'s `__getitems__` is broken (an
    unbound partial). image_size > 0 resizes each image on decode, which variable-sized
    datasets need. on_chunk(n) is called as each chunk of n examples is done (progress).
    """
    n = len(source)
    num_threads = num_threads or min(16, os.cpu_count() or 1)

    def read_chunk(indices: range) -> tuple[list[np.ndarray], list[int], list[np.ndarray]]:
        images, labels, masks = [], [], []
        for i in indices:
            try:
                example = source[i]
            except Exception as e:  # noqa: BLE001 - a damaged file's record: the caller names it.
                raise DamagedRecord(i, reason(e)) from e
            image = np.asarray(example[image_key])
            if image.ndim == 2:  # Some decoders drop the channel axis of grayscale images.
                image = image[..., None]
            if image_size > 0:
                image = _resize(image, image_size)
            images.append(image)
            labels.append(int(example[label_key]))
            if mask is not None:
                masks.append(_mask(example[mask[0]], image.shape[:2], mask[1], len(mask[2])))
        return images, labels, masks

    chunks = [range(start, min(start + _CHUNK, n)) for start in range(0, n, _CHUNK)]
    results = []
    if len(chunks) == 1 or num_threads == 1 or not _large_images(source, image_key):
        done = map(read_chunk, chunks)
        pool = None
    else:
        pool = concurrent.futures.ThreadPoolExecutor(num_threads)
        done = pool.map(read_chunk, chunks)
    try:
        for result in done:
            results.append(result)
            if on_chunk is not None:
                on_chunk(len(result[1]))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    images = [image for chunk_images, _, _ in results for image in chunk_images]
    labels = np.fromiter((label for _, ls, _ in results for label in ls), np.int32, count=n)

    first = images[0].shape
    for i, image in enumerate(images):
        if image.shape != first:
            raise UserError(
                f"Images differ in shape (example 0: {first}, example {i}: {image.shape}); "
                "pick one size with --config.data.image_size=N."
            )
    images = np.stack(images).astype(np.uint8, copy=False)
    if mask is None:
        return images, labels
    return images, labels, np.stack([m for _, _, ms in results for m in ms])


class DamagedRecord(Exception):
    """Example `index` of a split could not be read (`reason`): its file is damaged."""

    def __init__(self, index: int, reason: str):
        self.index, self.reason = index, reason
        super().__init__(f"example {index}: {reason}")


def _damaged_record_error(source, error: DamagedRecord, name: str, data_dir) -> UserError:
    locate = record_locator(source)
    if locate is None:
        return UserError(f"TFDS dataset {name!r}: {error}.")
    path, position = locate(error.index)
    what = f"is damaged at record {position} ({error.reason})"
    return _damaged(path, what, name, resolve_data_dir(data_dir))


def _large_images(source, image_key: str) -> bool:
    """Whether the first example's image has `_MIN_PIXELS_FOR_THREADS` pixels or more."""
    shape = np.shape(source[0][image_key])
    return int(np.prod(shape[:2])) >= _MIN_PIXELS_FOR_THREADS


def _mask(value, hw, first: int, num_classes: int) -> np.ndarray:
    """A decoded mask feature (H, W[, 1]) as uint8 class indices (hw), nearest-resized; values
    outside [first, first + num_classes) become IGNORE_LABEL."""
    from PIL import Image

    m = np.asarray(value)
    if m.ndim == 3:
        m = m[..., 0]
    if m.shape != tuple(hw):
        m = np.asarray(Image.fromarray(m).resize(hw[::-1], Image.Resampling.NEAREST))
    m = m.astype(np.int64) - first
    return np.where((m >= 0) & (m < num_classes), m, IGNORE_LABEL).astype(np.uint8)


def load_tfds(
    name: str,
    *,
    data_dir: str | None,
    train_split: str = "train",
    test_split: str = "test",
    download: bool = False,
    image_size: int = 0,
    num_threads: int | None = None,
    masks: bool = False,
) -> dict:
    """Loads a prepared TFDS image classification dataset into memory, in the source format.

    Returns train_images/test_images uint8 (N, H, W, C) (grayscale keeps C=1),
    train_labels/test_labels int32 (N,) and class_names (tuple of str).
    download: prepare the dataset when it is missing (needs TensorFlow and the network).
    image_size: > 0 resizes every image to (image_size, image_size) while decoding.
    masks: also read the segmentation masks of a `SEGMENTATION_MASKS` dataset:
    train_masks/test_masks uint8 (N, H, W) and mask_class_names.
    """
    mask = None
    if masks:
        if _base_name(name) not in SEGMENTATION_MASKS:
            raise UserError(
                f"TFDS dataset {name!r} has no segmentation masks cnnjax knows how to read; "
                f"known: {', '.join(SEGMENTATION_MASKS)}."
            )
        mask = SEGMENTATION_MASKS[_base_name(name)]
    train = data_source(name, train_split, data_dir=data_dir, download=download)
    test = data_source(name, test_split, data_dir=data_dir)
    warn_if_test_in_train(name, train_split, test_split, data_dir)
    features = train.dataset_info.features
    image_key, label_key, class_names = feature_keys(features)
    if np.dtype(features[image_key].np_dtype) != np.uint8:
        raise UserError(
            f"TFDS dataset {name!r} stores {features[image_key].np_dtype} images; cnnjax reads "
            "uint8 images only."
        )
    for split, source in ((train_split, train), (test_split, test)):
        if len(source) == 0:
            raise UserError(f"Split {split!r} of TFDS dataset {name!r} has no examples.")
    names = {"class_names": class_names}
    if mask is not None:
        names["mask_class_names"] = mask[2]
    settings = (train_split, len(train), test_split, len(test), image_size, mask)
    cache_file = _cache_file(train, settings)
    cached = cache.load(cache_file) if cache_file else None
    if cached is not None:
        return {**cached, **names}
    read = dict(image_size=image_size, num_threads=num_threads, mask=mask)
    out = {}
    for split, source in (("train", train), ("test", test)):
        progress = DecodeProgress(len(source), f"{name} {split}", cached=cache_file is not None)
        try:
            arrays = read_examples(source, image_key, label_key, on_chunk=progress.update, **read)
        except DamagedRecord as e:
            # Everything is read before training: a damaged record stops the run here, with
            # nothing trained on a dataset smaller than the one recorded.
            raise _damaged_record_error(source, e, name, data_dir) from None
        progress.close()
        out[f"{split}_images"], out[f"{split}_labels"] = arrays[:2]
        if mask is not None:
            out[f"{split}_masks"] = arrays[2]
    if cache_file:
        cache.save(cache_file, out)
    return {**out, **names}


def _cache_file(source, settings: tuple) -> str | None:
    """Where the decoded arrays of `source`'s dataset read with `settings` are cached
    (`cnnjax.data.cache`), or None: caching off, or no data files to key on (a
    `tfds.testing.mock_data` source). The family is the dataset's directory and the settings;
    the key adds every file in the directory (name, size, mtime), so re-preparing the dataset
    invalidates the copy. A read-only cache is still read; the save then fails quietly."""
    directory = cache.home()
    dataset_dir = absolute_path(source.dataset_info.data_dir)
    reader = getattr(source, "data_source", None)
    if directory is None or isinstance(reader, unittest.mock.NonCallableMock):
        return None
    try:
        files = sorted((e for e in os.scandir(dataset_dir) if e.is_file()), key=lambda e: e.name)
    except OSError:
        return None
    if not any(fmt in e.name for e in files for fmt in _RANDOM_ACCESS_FORMATS):
        return None
    family = hashlib.sha256(f"{dataset_dir}\0{settings!r}".encode()).hexdigest()[:12]
    digest = hashlib.sha256(f"v{_CACHE_VERSION}\n".encode())
    for entry in files:
        stat = entry.stat()
        digest.update(f"{entry.name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return os.path.join(directory, "tfds", f"{family}-{digest.hexdigest()[:24]}.npz")


def from_config(data_config) -> dict:
    """The source function for TFDS names: reads name, data_dir, image_size and, when present,
    train_split, test_split and download from `data_config`."""
    return load_tfds(
        data_config.name,
        data_dir=data_config.get("data_dir", "") or None,
        train_split=data_config.get("train_split", "train"),
        test_split=data_config.get("test_split", "test"),
        download=bool(data_config.get("download", False)),
        image_size=int(data_config.get("image_size", 0) or 0),
        masks=bool(data_config.get("masks", False)),
    )
