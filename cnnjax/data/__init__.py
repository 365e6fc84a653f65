"""Datasets: every source hands over uint8 NHWC images and int32 labels, and some also
per-example targets for other tasks (boxes, segmentation masks; see `Dataset.arrays`).

`load(config.data)` returns an in-memory `Dataset`; `cnnjax.data.pipeline` uploads it to the
devices and produces batches inside jitted code.
"""

import dataclasses
import functools
import os
from collections.abc import Callable

import numpy as np

from cnnjax import memory
from cnnjax.data import digits, folder, preprocessing, shapes, stats, synthetic, tfds_source
from cnnjax.data.records import Records
from cnnjax.errors import UserError, did_you_mean
from cnnjax.files import absolute as absolute_path


@dataclasses.dataclass(frozen=True)
class Dataset:
    """An image classification dataset, in memory or streamed.

    In memory: train_images/test_images uint8 (N, H, W, C), train_labels/test_labels int32 (N,).
    Streamed: train_source/test_source give random access to records {"image", "label"}
    (decoded or encoded images) and `image_shape` is the shape the transforms produce.
    mean/std: float32 (C,), what `pipeline.normalize` applies to pixels scaled to [0, 1]: the
    dataset's statistics or a fixed `data.normalization` mode (`preprocessing.py`).
    train_targets/test_targets: per-example arrays beside images and labels, by name (in
    memory only), e.g. from `shapes`: "box" float32 (N, 4) normalized (ymin, xmin, ymax, xmax)
    of the labelled object, "boxes" (N, K, 4), "classes" int32 (N, K) (-1: no object),
    "num_objects" int32 (N,), "mask" uint8 (N, H, W) per-pixel class (`mask_class_names`).
    """

    name: str
    class_names: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    train_images: np.ndarray | None = None
    train_labels: np.ndarray | None = None
    test_images: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    train_source: object = None
    test_source: object = None
    stream_image_shape: tuple[int, int, int] | None = None
    train_targets: dict = dataclasses.field(default_factory=dict)
    test_targets: dict = dataclasses.field(default_factory=dict)
    mask_class_names: tuple[str, ...] = ()

    def arrays(self, split: str, keys=("label",)) -> dict[str, np.ndarray]:
        """{"image": ..., key: ...} of an in-memory split ("train" or "test"): what the
        on-device feeds upload. keys: "label", "index" (0..N-1, for per-example eval results)
        and/or names of `train_targets`."""
        images, labels, targets = (
            (self.train_images, self.train_labels, self.train_targets)
            if split == "train"
            else (self.test_images, self.test_labels, self.test_targets)
        )
        out = {"image": images}
        for key in keys:
            if key == "index":  # Each example's position in the split (int32 (N,)).
                out[key] = np.arange(len(images), dtype=np.int32)
            else:
                out[key] = labels if key == "label" else targets[key]
        return out

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_memory(self) -> bool:
        return self.train_images is not None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        if self.in_memory:
            return tuple(self.train_images.shape[1:])
        return tuple(self.stream_image_shape)

    @property
    def num_train(self) -> int:
        return len(self.train_labels) if self.in_memory else len(self.train_source)

    @property
    def num_test(self) -> int:
        return len(self.test_labels) if self.in_memory else len(self.test_source)


def _digits(data_config) -> dict:
    del data_config
    return dict(digits.load(), class_names=digits.CLASS_NAMES)


# Embedded and generated sources by name; `folder:/path` reads an image folder and any other
# name is a TFDS dataset.
SOURCES: dict[str, Callable[..., dict]] = {
    "digits": _digits,
    "shapes": shapes.load_shapes,
    "synthetic": synthetic.from_config,
}
FOLDER_PREFIX = "folder:"
# "auto" feeding keeps a dataset in device memory up to this many bytes of uint8 pixels.
IN_MEMORY_LIMIT_BYTES = 4 * 2**30


def _tfds_image_shape(data_config, tfds_builder) -> tuple[int | None, ...]:
    image_key, _, _ = tfds_source.feature_keys(tfds_builder.info.features)
    shape = tuple(tfds_builder.info.features[image_key].shape)
    size = int(data_config.get("image_size", 0) or 0)
    return (size, size, shape[-1]) if size > 0 else shape


def _stream_tfds(data_config, tfds_builder) -> Dataset:
    """A TFDS dataset read record by record during training (too big for device memory)."""
    name, data_dir = data_config.name, data_config.get("data_dir", "") or None
    image_key, label_key, class_names = tfds_source.feature_keys(tfds_builder.info.features)
    shape = _tfds_image_shape(data_config, tfds_builder)
    if None in shape:
        raise UserError(
            f"{name} has images of varying sizes; streaming needs a fixed size: "
            "set --config.data.image_size (e.g. 224)."
        )
    download = bool(data_config.get("download", False))
    splits = data_config.get("train_split", "train"), data_config.get("test_split", "test")
    train, test = (
        tfds_source.data_source(name, split, data_dir=data_dir, download=download)
        for split in splits
    )
    tfds_source.warn_if_test_in_train(name, *splits, data_dir)
    train, test = (
        Records(
            source,
            image_key,
            label_key,
            report=tfds_source.damage_reporter(source),
            fix=tfds_source.repair_hint(source, name, data_dir),
        )
        for source in (train, test)
    )
    mean, std = _streamed_stats(tfds_source._base_name(name), train)
    return Dataset(
        name=name,
        class_names=class_names,
        mean=mean,
        std=std,
        train_source=train,
        test_source=test,
        stream_image_shape=shape,
    )


def _streamed_stats(base: str, train) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) from the table, else from up to 256 training records decoded on the spot."""
    if base in stats.NORMALIZATION:
        return stats.normalization(base)
    from cnnjax.data import transforms

    sample = np.stack(
        [
            transforms.center_crop(transforms.decode(train[i]["image"]), 64, 1.0)
            for i in range(0, len(train), max(1, len(train) // 256))
        ][:256]
    )
    return stats.normalization(base, sample)


def _stream_folder(data_config) -> Dataset:
    """An image folder read file by file during training (too big for device memory)."""
    size = int(data_config.get("image_size", 0) or 0)
    if size <= 0:
        raise UserError(
            f"{data_config.name} is streamed (bigger than device memory, or feeding=stream), "
            "which needs one image size: set --config.data.image_size (e.g. 224)."
        )
    path = absolute_path(data_config.name.removeprefix(FOLDER_PREFIX))
    class_names, files = folder.list_files(path)
    train, test = (
        folder.FolderSource(files[split], os.path.join(path, split)) for split in folder.SPLITS
    )
    for source in (train, test):  # No readable file: a UserError now, not mid-training.
        source.check_readable()
    mean, std = _streamed_stats(data_config.name, train)
    return Dataset(
        name=data_config.name,
        class_names=class_names,
        mean=mean,
        std=std,
        train_source=train,
        test_source=test,
        stream_image_shape=(size, size, 3),
    )


def _load_raw(data_config):
    """The in-memory arrays of a source, or a streaming Dataset for big TFDS sets."""
    name = data_config.name
    if name.startswith(FOLDER_PREFIX):
        feeding = data_config.get("feeding", "auto")
        path, size = name.removeprefix(FOLDER_PREFIX), int(data_config.get("image_size", 0) or 0)
        if feeding == "stream":
            return _stream_folder(data_config)
        pixels = folder.pixel_bytes(path, size)
        if feeding == "auto" and pixels > IN_MEMORY_LIMIT_BYTES:
            return _stream_folder(data_config)
        _require_decoded_memory(name, pixels)
        return folder.from_config(data_config)
    if name in SOURCES:
        return SOURCES[name](data_config)
    if "/" not in name and ":" not in name and name not in _tfds_names():
        raise UserError(
            f"Unknown dataset {name!r}.{did_you_mean(name, [*SOURCES, *_tfds_names()])} "
            f"Embedded: {', '.join(sorted(SOURCES))}; any TFDS name; or folder:/path/to/images."
        )
    feeding = data_config.get("feeding", "auto")
    if feeding != "device":
        tfds_builder = tfds_source.builder(name, data_dir=data_config.get("data_dir", "") or None)
        if feeding == "stream":
            return _stream_tfds(data_config, tfds_builder)
        try:
            shape = _tfds_image_shape(data_config, tfds_builder)
            n = tfds_builder.info.splits[data_config.get("train_split", "train")].num_examples
        except (KeyError, ValueError, TypeError):
            shape, n = (), 0  # Not prepared (or mocked): the in-memory path explains.
        if None in shape or n * int(np.prod(shape)) > IN_MEMORY_LIMIT_BYTES:
            return _stream_tfds(data_config, tfds_builder)
        _require_decoded_memory(name, n * int(np.prod(shape)))
    return tfds_source.from_config(data_config)


def _require_decoded_memory(name: str, pixel_bytes: int) -> None:
    """OutOfMemoryError (one line) before decoding a dataset into memory that cannot hold it."""
    memory.require(
        [(f"the decoded images of {name}", pixel_bytes)],
        memory.host_budget(),
        "Use --config.data.feeding=stream (images are read from disk batch by batch) or a "
        "smaller --config.data.image_size.",
    )


@functools.cache
def _tfds_names() -> tuple[str, ...]:
    import tensorflow_datasets as tfds

    return tuple(tfds.list_builders(with_community_datasets=False))


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of uint8 (N, H, W, C) images to (N, size, size, C), done once on load."""
    import jax  # Local: keeps `import cnnjax.data` light for tools that only list names.

    if images.shape[1:3] == (size, size):
        return images
    n, c = len(images), images.shape[-1]
    out = np.empty((n, size, size, c), np.uint8)  # Filled chunk by chunk: no copy to join.
    # Chunks of at least 4096 images (few compilations), smaller where their float32 copies
    # would pass memory.RESIZE_CHUNK_BYTES (`memory.resize_needs` counts one chunk).
    per_chunk = memory.resize_chunk(images.shape[1:3], size, c)
    start = 0
    for chunk in np.array_split(images, max(1, n // 4096, -(-n // per_chunk))):
        x = jax.image.resize(
            chunk.astype(np.float32), (len(chunk), size, size, c), method="linear", antialias=True
        )
        y = jax.numpy.clip(jax.numpy.round(x), 0, 255).astype(jax.numpy.uint8)
        # An allocation XLA could not make raises here (RESOURCE_EXHAUSTED); read by NumPy
        # first, it aborts the process instead (Check failed: buffer_.IsConcrete()).
        out[start : start + len(chunk)] = np.asarray(y.block_until_ready())
        start += len(chunk)
    return out


def load(data_config) -> Dataset:
    """Loads `data_config.name`: in memory (resized to `data_config.image_size` when > 0), or as
    a streaming dataset for TFDS sets too big for device memory (or `feeding="stream"`).
    `mean`/`std` follow `data_config.normalization` (`preprocessing.MODES`)."""
    mode = preprocessing.check(data_config.get("normalization", "dataset"))
    raw = _load_raw(data_config)
    if isinstance(raw, Dataset):
        mean, std = preprocessing.mean_std(mode, raw.image_shape[-1], raw.mean, raw.std)
        return dataclasses.replace(raw, mean=mean, std=std)
    train_images, test_images = raw["train_images"], raw["test_images"]
    size = int(data_config.get("image_size", 0) or 0)
    if size > 0:
        _require_resize_memory(data_config.name, [train_images.shape, test_images.shape], size)
        train_images, test_images = resize(train_images, size), resize(test_images, size)
    targets = {split: _targets(raw, split, size) for split in ("train", "test")}
    name = data_config.name
    mean, std = stats.normalization(tfds_source._base_name(name), train_images)
    mean, std = preprocessing.mean_std(mode, train_images.shape[-1], mean, std)
    return Dataset(
        train_targets=targets["train"],
        test_targets=targets["test"],
        mask_class_names=tuple(raw.get("mask_class_names", ())),
        name=name,
        train_images=train_images,
        train_labels=raw["train_labels"].astype(np.int32),
        test_images=test_images,
        test_labels=raw["test_labels"].astype(np.int32),
        class_names=tuple(raw["class_names"]),
        mean=mean,
        std=std,
    )


def _require_resize_memory(name: str, shapes, size: int) -> None:
    """OutOfMemoryError (one line) before resizing to `size` when the resized copies cannot fit
    in the host's memory (`memory.resize_needs`), with the largest size that would."""
    needs = memory.resize_needs(shapes, size)
    if not needs:
        return
    import jax

    # Resizing starts JAX's backend, whose threads reserve ~1 GB of address space: counted
    # against a `ulimit -v` only once they exist.
    jax.devices()
    budget = memory.host_budget()
    if budget is None or sum(n for _, n in needs) <= budget.available:
        return
    fits = memory.largest_fitting(
        lambda s: sum(n for _, n in memory.resize_needs(shapes, s)), budget.available, size - 1
    )
    memory.require(
        needs,
        budget,
        f"Use a smaller --config.data.image_size for {name}: the resized images alone fit up to "
        f"about {fits}.",
    )


def describe(data_config, target_keys=("label",), num_examples: int = 1) -> Dataset:
    """A stand-in for a TFDS dataset that is not prepared here, for `--mode=summary`: the
    image shape and class names from the TFDS code's feature description (no files needed),
    `num_examples` blank examples per split (read-only views of one) with the `target_keys` a
    task asks for (zero labels, full-image boxes, background masks). Raises `UserError` when
    even the description is unavailable.

    Only shapes are real: the mean/std are 0.5, and the split sizes are `num_examples`."""
    name = data_config.name
    if name.startswith(FOLDER_PREFIX) or name in SOURCES:
        return load(data_config)
    tfds_builder = tfds_source.builder(name, data_dir=data_config.get("data_dir", "") or None)
    _, _, class_names = tfds_source.feature_keys(tfds_builder.info.features)
    shape = _tfds_image_shape(data_config, tfds_builder)
    if None in shape:
        raise UserError(
            f"{name} has images of varying sizes: set --config.data.image_size to summarize "
            "the model at one size (e.g. 224)."
        )
    half = np.full((shape[-1],), 0.5, np.float32)
    return blank(
        name,
        class_names,
        shape,
        half,
        half,
        num_train=num_examples,
        num_test=num_examples,
        target_keys=target_keys,
        mask_class_names=tfds_source.SEGMENTATION_MASKS.get(
            tfds_source._base_name(name), (None, None, ())
        )[2],
    )


def blank(
    name: str,
    class_names,
    image_shape,
    mean,
    std,
    *,
    num_train: int,
    num_test: int,
    target_keys=("label",),
    mask_class_names=(),
) -> Dataset:
    """A Dataset of blank examples (zero images and labels, full-image boxes, background masks;
    read-only views of one, so any count costs nothing) with real names, shape and statistics:
    what building a model needs when the data is not at hand (`describe`, and
    `record.stand_in` for a trained run). `target_keys`: the targets the task asks for."""
    h, w, c = (int(x) for x in image_shape)
    blanks = {
        "box": np.array([[0.0, 0.0, 1.0, 1.0]], np.float32),
        "boxes": np.array([[[0.0, 0.0, 1.0, 1.0]]], np.float32),
        "classes": np.zeros((1, 1), np.int32),
        "num_objects": np.ones((1,), np.int32),
        "mask": np.zeros((1, h, w), np.uint8),
    }

    def split(n: int):
        many = lambda a: np.broadcast_to(a, (max(1, int(n)), *a.shape[1:]))  # noqa: E731
        targets = {k: many(blanks[k]) for k in target_keys if k in blanks}
        return many(np.zeros((1, h, w, c), np.uint8)), many(np.zeros((1,), np.int32)), targets

    train_images, train_labels, train_targets = split(num_train)
    test_images, test_labels, test_targets = split(num_test)
    return Dataset(
        name=name,
        class_names=tuple(class_names),
        mean=np.asarray(mean, np.float32),
        std=np.asarray(std, np.float32),
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        train_targets=train_targets,
        test_targets=test_targets,
        mask_class_names=tuple(mask_class_names),
    )


# Source keys "{split}_{key}" -> Dataset target names (the rest of a source's keys are its own).
_TARGET_NAMES = {"boxes": "boxes", "classes": "classes", "num_objects": "num_objects"}
_MASK_SOURCE_KEYS = ("masks", "mask")


def _targets(raw: dict, split: str, size: int) -> dict[str, np.ndarray]:
    """The per-example targets of a source's split, masks resized (nearest) to `size` > 0.

    "box" is the first object's box (the one "label" names) when the source has "boxes"."""
    out = {}
    for key, name in _TARGET_NAMES.items():
        if f"{split}_{key}" in raw:
            out[name] = np.asarray(raw[f"{split}_{key}"])
    if "boxes" in out:
        out["box"] = out["boxes"][:, 0].astype(np.float32)
    for key in _MASK_SOURCE_KEYS:
        if f"{split}_{key}" in raw:
            mask = np.asarray(raw[f"{split}_{key}"], np.uint8)
            out["mask"] = resize_masks(mask, size) if size > 0 else mask
    return out


def resize_masks(masks: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of label maps uint8 (N, H, W) to (N, size, size): labels are
    categories, never blended. Pixel centres map to the nearest source pixel."""
    n, h, w = masks.shape
    if (h, w) == (size, size):
        return masks
    rows = np.minimum(((np.arange(size) + 0.5) * h / size).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size) + 0.5) * w / size).astype(np.int64), w - 1)
    return masks[:, rows[:, None], cols[None, :]]
