"""`shapes`: procedural circles, squares and triangles on textured backgrounds, seeded.

One generator serves classification (`labels`), localization (`boxes`, `classes`) and
segmentation (`masks`). Every random draw is made in normalized image coordinates before any
pixel exists, so a seed describes the same scenes at every resolution: only the rasterization
depends on `image_size`. All draws happen up front in a fixed order, and pixels are then
rendered in chunks, so the output does not depend on the chunking either.

Scene: a background blending two colours by smooth value noise and a sinusoidal stripe
pattern; objects are flat-coloured with a mild shading, sized by the diameter of their
circumscribed circle (`min_size`..`max_size`, fractions of the image side), rotated at random,
and drawn fully inside the image. Background and objects sit on opposite sides of mid-gray in
every channel, so every object contrasts with its background whatever the colours.
"""

import math

import numpy as np

from cnnjax.errors import UserError

CLASS_NAMES = ("circle", "square", "triangle")
MASK_CLASS_NAMES = ("background", *CLASS_NAMES)  # Values of `masks`: 0, then 1 + class.
NUM_TRAIN, NUM_TEST = 4000, 1000
TRAIN_SEED, TEST_SEED = 0, 1  # Different seeds: the splits are independent draws.
MAX_TRIES = 20  # Candidate placements per object before it is dropped.
MAX_IOU = 0.3  # A candidate overlapping an earlier object more than this is rejected.
_NOISE_GRID = 5  # Control points per side of the coarse smooth-noise octave (fine: twice).
_MIN_SIZE = 0.3  # generate()'s default; load_shapes checks image_size against it.
_CHUNK = 512  # Images rendered at once: bounds the (chunk, S, S) float temporaries.


def _polygon(cls: np.ndarray, angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sides, angle of the first vertex) of squares (4) and triangles (3); circles get 3."""
    sides = np.where(cls == 1, 4, 3)
    return sides, angle + np.where(cls == 1, np.pi / 4, 0.0)


def _vertices(cls: np.ndarray, cy, cx, radius, angle) -> np.ndarray:
    """Polygon vertices (..., 4, 2) as (y, x) on the circumscribed circle; a triangle's fourth
    vertex is its first again (2 pi further round)."""
    sides, start = _polygon(cls, angle)
    theta = start[..., None] + np.arange(4) * (2 * np.pi / sides[..., None])
    return np.stack(
        [cy[..., None] + radius[..., None] * np.sin(theta),
         cx[..., None] + radius[..., None] * np.cos(theta)],
        axis=-1,
    )  # fmt: skip


def _extent(cls, cy, cx, radius, angle) -> np.ndarray:
    """Tight geometric boxes (..., 4) as normalized (ymin, xmin, ymax, xmax)."""
    v = _vertices(cls, cy, cx, radius, angle)
    poly = np.concatenate([v.min(axis=-2), v.max(axis=-2)], axis=-1)
    circle = np.stack([cy - radius, cx - radius, cy + radius, cx + radius], axis=-1)
    return np.where((cls == 0)[..., None], circle, poly)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a (..., 4) and b (..., 4), broadcast."""
    lo = np.maximum(a[..., :2], b[..., :2])
    hi = np.minimum(a[..., 2:], b[..., 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    area = lambda x: np.prod(x[..., 2:] - x[..., :2], axis=-1)
    return inter / np.maximum(area(a) + area(b) - inter, 1e-12)


def _place(rng, n, max_objects, min_size, max_size):
    """Draws object parameters; returns (cls, cy, cx, radius, angle, count) with (n, K) arrays.

    Object k of an image tries MAX_TRIES candidates and keeps the first whose box overlaps
    every kept object by IoU <= MAX_IOU; kept objects fill slots 0.. in order.
    """
    k, t = max_objects, MAX_TRIES
    wanted = rng.integers(1, k + 1, size=n) if k > 1 else np.ones(n, np.int64)
    cls = rng.integers(0, 3, size=(n, k))
    # The first object's class cycles through a permutation: labels exactly balanced.
    cls[:, 0] = rng.permutation(np.arange(n) % 3)
    radius = 0.5 * rng.uniform(min_size, max_size, size=(n, k, t))
    cy = rng.uniform(radius, 1.0 - radius)
    cx = rng.uniform(radius, 1.0 - radius)
    angle = rng.uniform(0.0, 2 * np.pi, size=(n, k, t))
    boxes = _extent(cls[..., None], cy, cx, radius, angle)  # (n, k, t, 4)

    out = {name: np.zeros((n, k)) for name in ("cy", "cx", "radius", "angle")}
    out_cls = np.full((n, k), -1, np.int32)
    kept_boxes = np.zeros((n, k, 4))
    count = np.zeros(n, np.int64)
    rows = np.arange(n)
    for obj in range(k):
        # IoU of every candidate with every kept slot; unfilled slots (>= count) never block.
        iou = _iou(boxes[:, obj, :, None, :], kept_boxes[:, None, :, :])  # (n, t, k)
        filled = np.arange(k)[None, None, :] < count[:, None, None]
        ok = ~np.any(filled & (iou > MAX_IOU), axis=-1)  # (n, t)
        accept = (obj < wanted) & ok.any(axis=-1)
        first = ok.argmax(axis=-1)
        r, slot, c = rows[accept], count[accept], first[accept]
        for name, values in (("cy", cy), ("cx", cx), ("radius", radius), ("angle", angle)):
            out[name][r, slot] = values[r, obj, c]
        out_cls[r, slot] = cls[r, obj]
        kept_boxes[r, slot] = boxes[r, obj, c]
        count += accept
    return out_cls, out["cy"], out["cx"], out["radius"], out["angle"], count


def _smooth_noise(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of control points (n, g, g) to (n, size, size), sampled at pixel
    centres in normalized coordinates: the same continuous field at every resolution."""
    g = grid.shape[-1]
    pos = (np.arange(size) + 0.5) / size * (g - 1)
    lo = np.minimum(np.floor(pos).astype(int), g - 2)
    w = (pos - lo).astype(np.float32)
    interp = np.zeros((size, g), np.float32)
    interp[np.arange(size), lo] = 1 - w
    interp[np.arange(size), lo + 1] = w
    return np.einsum("yg,ngh,xh->nyx", interp, grid, interp, optimize=True)


def _inside(cls, cy, cx, radius, angle, yy, xx) -> np.ndarray:
    """Pixel-centre coverage (n, S, S) of one object per image; cls == -1 covers nothing.

    cls, cy, cx, radius, angle: (n,); yy, xx: (S, S) pixel centres in normalized coordinates.
    """
    dy = yy[None] - cy[:, None, None]
    dx = xx[None] - cx[:, None, None]
    circle = dy * dy + dx * dx <= (radius * radius)[:, None, None]
    # A regular polygon is the intersection of half-planes whose outward normals point between
    # consecutive vertices, at the inradius r cos(pi / sides). A triangle's fourth half-plane
    # repeats its first.
    sides, start = _polygon(cls, angle)
    inradius = (radius * np.cos(np.pi / sides)).astype(np.float32)[:, None, None]
    poly = np.ones(dy.shape, bool)
    for j in range(4):
        normal = start + (2 * j + 1) * np.pi / sides
        sin = np.sin(normal).astype(np.float32)[:, None, None]
        cos = np.cos(normal).astype(np.float32)[:, None, None]
        poly &= dy * sin + dx * cos <= inradius
    shape = np.where((cls == 0)[:, None, None], circle, poly)
    return shape & (cls >= 0)[:, None, None]


def generate(
    n: int,
    *,
    image_size: int = 64,
    seed: int = 0,
    max_objects: int = 1,
    min_size: float = _MIN_SIZE,
    max_size: float = 0.7,
) -> dict[str, np.ndarray]:
    """Generates `n` scenes of `max_objects` or fewer shapes (exactly one when max_objects=1).

    Returns, with S = image_size and K = max_objects:
      images: uint8 (n, S, S, 3).
      labels: int32 (n,), the class of the first object (0 circle, 1 square, 2 triangle).
      boxes: float32 (n, K, 4), normalized (ymin, xmin, ymax, xmax) of each object's pixels
        (before occlusion), zeros in padding slots.
      classes: int32 (n, K), -1 in padding slots.
      num_objects: int32 (n,).
      masks: uint8 (n, S, S), 0 background, 1 + class on object pixels; later objects
        occlude earlier ones.
    min_size/max_size: circumscribed diameter as a fraction of the image side.
    """
    if not 0 < min_size <= max_size <= 1:
        raise ValueError(f"Need 0 < min_size <= max_size <= 1, got {min_size}, {max_size}.")
    if min_size * image_size < 4:
        raise ValueError(
            f"Objects of min_size={min_size} span {min_size * image_size:.1f} pixels at "
            f"image_size={image_size}; raise either so they span at least 4."
        )
    rng = np.random.default_rng(seed)
    cls, cy, cx, radius, angle, count = _place(rng, n, max_objects, min_size, max_size)
    # Dark background and bright objects, or the reverse, per image and channel.
    dark_bg = rng.random((n, 1, 3)) < 0.5
    bg_lo = rng.uniform(0, 110, (n, 2, 3))
    obj_lo = rng.uniform(150, 255, (n, max_objects, 3))
    bg_colors = np.where(dark_bg, bg_lo, 255 - bg_lo).astype(np.float32)
    obj_colors = np.where(dark_bg, obj_lo, 255 - obj_lo).astype(np.float32)
    coarse = rng.random((n, _NOISE_GRID, _NOISE_GRID), np.float32)
    fine = rng.random((n, 2 * _NOISE_GRID, 2 * _NOISE_GRID), np.float32)
    stripe_angle = rng.uniform(0, np.pi, n)
    stripe_freq = rng.uniform(2.0, 6.0, n)  # Periods per image side.
    stripe_phase = rng.uniform(0, 2 * np.pi, n)
    stripe_weight = rng.uniform(0.1, 0.5, n).astype(np.float32)

    s = image_size
    centres = (np.arange(s, dtype=np.float32) + 0.5) / s
    yy, xx = np.meshgrid(centres, centres, indexing="ij")
    images = np.empty((n, s, s, 3), np.uint8)
    masks = np.zeros((n, s, s), np.uint8)
    boxes = np.zeros((n, max_objects, 4), np.float32)
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(start + _CHUNK, n))
        # sin(a y + b x + c) = sin(a y + c) cos(b x) + cos(a y + c) sin(b x): four (c, S)
        # vectors and two products instead of a sine per pixel.
        freq = 2 * np.pi * stripe_freq[sl, None]
        ay = freq * np.sin(stripe_angle[sl, None]) * centres + stripe_phase[sl, None]
        bx = freq * np.cos(stripe_angle[sl, None]) * centres
        ay, bx = ay.astype(np.float32), bx.astype(np.float32)
        wave = np.sin(ay)[:, :, None] * np.cos(bx)[:, None, :]
        wave += np.cos(ay)[:, :, None] * np.sin(bx)[:, None, :]
        w = stripe_weight[sl][:, None, None]
        fine_noise = _smooth_noise(fine[sl], s)
        mix = (1 - w) * (0.7 * _smooth_noise(coarse[sl], s) + 0.3 * fine_noise)
        mix += w * 0.5 * (wave + 1)  # (c, S, S) in [0, 1]
        # Later objects overwrite earlier ones, in the mask and in the colours below.
        mask = np.zeros(mix.shape, np.uint8)
        covered = []
        for k in range(max_objects):
            params = (p[sl, k].astype(np.float32) for p in (cy, cx, radius, angle))
            inside = _inside(cls[sl, k], *params, yy, xx)
            boxes[sl, k] = _pixel_boxes(inside, s)
            mask = np.where(inside, (cls[sl, k] + 1).astype(np.uint8)[:, None, None], mask)
            covered.append(inside)
        masks[sl] = mask
        shade = 0.9 + 0.2 * fine_noise
        # Channel by channel on (c, S, S) arrays: NumPy broadcasts slowly along a last axis of 3.
        for ch in range(3):
            bg0, bg1 = (bg_colors[sl, i, ch][:, None, None] for i in (0, 1))
            canvas = bg0 + (bg1 - bg0) * mix
            for k, inside in enumerate(covered):
                canvas = np.where(inside, obj_colors[sl, k, ch][:, None, None] * shade, canvas)
            images[sl, ..., ch] = np.clip(canvas + 0.5, 0, 255)  # +0.5: round, not floor.
    return {
        "images": images,
        "labels": cls[:, 0].astype(np.int32),
        "boxes": boxes,
        "classes": cls.astype(np.int32),
        "num_objects": count.astype(np.int32),
        "masks": masks,
    }


def _pixel_boxes(inside: np.ndarray, size: int) -> np.ndarray:
    """Normalized (ymin, xmin, ymax, xmax) (n, 4) of the covered pixels' outer edges; zeros
    where nothing is covered (padding slots)."""
    rows, cols = inside.any(axis=2), inside.any(axis=1)
    has = rows.any(axis=1)
    ymin, xmin = rows.argmax(axis=1), cols.argmax(axis=1)
    ymax = size - rows[:, ::-1].argmax(axis=1)
    xmax = size - cols[:, ::-1].argmax(axis=1)
    box = np.stack([ymin, xmin, ymax, xmax], axis=-1).astype(np.float32) / size
    return np.where(has[:, None], box, 0.0)


def load_shapes(data_config) -> dict:
    """The `shapes` source: NUM_TRAIN/NUM_TEST scenes at data_config.image_size (64 if 0).

    Optional data_config keys: num_train, num_test, max_objects. Besides the source format,
    returns {train,test}_{boxes,classes,num_objects,masks} (see `generate`) and
    mask_class_names.
    """
    size = int(data_config.get("image_size", 0) or 0) or 64
    smallest = math.ceil(4 / _MIN_SIZE)
    if size < smallest:
        raise UserError(
            f"shapes needs --config.data.image_size >= {smallest} (got {size}): smaller images "
            "cannot draw its smallest objects recognizably."
        )
    max_objects = int(data_config.get("max_objects", 1))
    out = {"class_names": CLASS_NAMES, "mask_class_names": MASK_CLASS_NAMES}
    for split, n, seed in (
        ("train", int(data_config.get("num_train", 0) or NUM_TRAIN), TRAIN_SEED),
        ("test", int(data_config.get("num_test", 0) or NUM_TEST), TEST_SEED),
    ):
        scenes = generate(
            n, image_size=size, seed=seed, max_objects=max_objects, min_size=_MIN_SIZE
        )
        out[f"{split}_images"] = scenes.pop("images")
        out[f"{split}_labels"] = scenes.pop("labels")
        out.update({f"{split}_{key}": value for key, value in scenes.items()})
    return out
