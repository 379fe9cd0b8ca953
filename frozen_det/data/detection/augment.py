"""Geometry of one example in TensorFlow: sanitising, flip, large-scale jitter, eval resize,
box and mask transforms (docs/reference.md §2.11).

A geometric transform is described by ``params`` = dict(scale=[sy, sx], scaled=[h', w'],
offset=[oy, ox]) mapping an original pixel coordinate ``p`` to the canvas as
``p * scale - offset`` (``scale`` is the realised ratio ``round(H*s)/H``, as the reference's
``image_scale``). Masks stay at the original resolution until the very end, where each is
cropped inside its canvas box mapped back to the original frame (the reference's parser does
the same; memory is n*H*W bytes, not n*canvas^2).
"""

from __future__ import annotations

import tensorflow as tf

from frozen_det.data.pipeline import sub_seed


def gather_instances(ex: dict, keep: tf.Tensor) -> dict:
    """Keeps the instances where ``keep`` is true in every per-instance field."""
    idx = tf.reshape(tf.where(keep), [-1])
    out = dict(ex)
    for key in ("boxes", "classes", "is_crowd", "masks", "orig_boxes"):
        if key in ex:
            out[key] = tf.gather(ex[key], idx)
    return out


def sanitize(ex: dict) -> tuple:
    """Clips boxes to the image and drops degenerate / non-finite ones.

    Returns (example, number of boxes dropped). Local sources already do this with file names
    in their log; this catches the same problems in TFDS data.
    """
    h = tf.cast(tf.shape(ex["image"])[0], tf.float32)
    w = tf.cast(tf.shape(ex["image"])[1], tf.float32)
    boxes = tf.reshape(tf.cast(ex["boxes"], tf.float32), [-1, 4])
    finite = tf.reduce_all(tf.math.is_finite(boxes), axis=1)
    boxes = tf.where(tf.math.is_finite(boxes), boxes, 0.0)
    boxes = tf.minimum(tf.maximum(boxes, 0.0), tf.stack([h, w, h, w]))
    keep = finite & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    ex = dict(ex, boxes=boxes)
    n_bad = tf.reduce_sum(tf.cast(~keep, tf.int32))
    return gather_instances(ex, keep), n_bad


def hflip(ex: dict, flip: tf.Tensor) -> dict:
    """Horizontal flip of image, boxes and masks when the scalar bool ``flip`` is true."""

    def do(ex):
        out = dict(ex)
        w = tf.cast(tf.shape(ex["image"])[1], tf.float32)
        out["image"] = tf.reverse(ex["image"], axis=[1])
        b = ex["boxes"]
        out["boxes"] = tf.stack([b[:, 0], w - b[:, 3], b[:, 2], w - b[:, 1]], axis=1)
        if "masks" in ex:
            out["masks"] = tf.reverse(ex["masks"], axis=[2])
        return out

    return tf.cond(flip, lambda: do(ex), lambda: dict(ex))


def resize_params(height, width, canvas: int, s, crop_u=None) -> dict:
    """LSJ geometry (docs/reference.md §2.11): target = round(s*canvas); scale = min(target/H, target/W);
    scaled = round(H*scale, W*scale); offset = floor(u * max(scaled - canvas, 0)) per axis.
    ``s = 1`` and ``crop_u = None`` (offset 0) is the eval resize."""
    size = tf.cast(tf.stack([height, width]), tf.float32)
    target = tf.round(tf.cast(s, tf.float32) * canvas)
    scale = tf.reduce_min(target / size)
    scaled = tf.round(size * scale)
    max_offset = tf.maximum(scaled - canvas, 0.0)
    offset = tf.zeros([2]) if crop_u is None else tf.floor(crop_u * max_offset)
    return dict(size=size, scale=scaled / size, scaled=scaled, offset=offset)


def lsj_params(height, width, canvas, scale_min, scale_max, seed) -> dict:
    s = tf.random.stateless_uniform([], sub_seed(seed, 2), scale_min, scale_max)
    u = tf.random.stateless_uniform([2], sub_seed(seed, 3), 0.0, 1.0)
    return resize_params(height, width, canvas, s, u)


def short_side_params(height, width, canvas, short_sides, seed) -> dict:
    """Multi-scale training as DAP pre-trains (Zhong et al. 2021 sec. 4.1; maskrcnn-benchmark's
    MIN_SIZE_TRAIN tuple): the shorter side one of `short_sides` at random, the longer side at
    most the canvas (its MAX_SIZE_TRAIN), no crop."""
    pick = tf.random.stateless_uniform([], sub_seed(seed, 2), 0, len(short_sides), dtype=tf.int32)
    side = tf.gather(tf.constant(short_sides, tf.float32), pick)
    size = tf.cast(tf.stack([height, width]), tf.float32)
    return resize_params(
        height, width, canvas, tf.minimum(side * tf.reduce_max(size) / (tf.reduce_min(size) * canvas), 1.0)
    )


def image_info(params, canvas) -> tf.Tensor:
    """[[orig h, w], [canvas h, w], [scale y, x], [offset y, x]] (the reference's layout)."""
    return tf.stack([params["size"], tf.constant([canvas, canvas], tf.float32), params["scale"], params["offset"]])


def _crop_pad(x, params, canvas, pad_value=0):
    """Crops the scaled frame [.., h', w', C] at the offset and pads bottom/right to canvas."""
    oy = tf.cast(params["offset"][0], tf.int32)
    ox = tf.cast(params["offset"][1], tf.int32)
    x = x[..., oy : oy + canvas, ox : ox + canvas, :]
    h, w = tf.shape(x)[-3], tf.shape(x)[-2]
    rank = len(x.shape)
    pads = [[0, 0]] * (rank - 3) + [[0, canvas - h], [0, canvas - w], [0, 0]]
    return tf.pad(x, pads, constant_values=pad_value)


def transform_image(image_u8, params, canvas, mean, std) -> tf.Tensor:
    """uint8 [H, W, 3] -> normalised float32 [canvas, canvas, 3]; padding is 0 after
    normalisation (the mean colour), as the reference normalises before padding."""
    scaled = tf.cast(params["scaled"], tf.int32)
    x = tf.image.resize(tf.cast(image_u8, tf.float32), scaled, method="bilinear")
    x = (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
    x = _crop_pad(x, params, canvas)
    x.set_shape([canvas, canvas, 3])
    return x


def transform_masks_nearest(masks_u8, params, canvas) -> tf.Tensor:
    """uint8 [n, H, W] -> uint8 [n, canvas, canvas] (nearest), for full-canvas masks."""
    scaled = tf.cast(params["scaled"], tf.int32)
    x = tf.image.resize(masks_u8[..., None], scaled, method="nearest")
    x = _crop_pad(x, params, canvas)[..., 0]
    x.set_shape([None, canvas, canvas])
    return x


def canvas_to_original(boxes, params):
    """Inverse box map: (box + offset) / scale."""
    off = tf.tile(params["offset"], [2])
    return (boxes + off) / tf.tile(params["scale"], [2])


def transform_boxes(boxes, params, canvas) -> tf.Tensor:
    """Original pixels -> canvas pixels, clipped to [0, canvas] (docs/reference.md §2.11 step 5)."""
    b = boxes * tf.tile(params["scale"], [2]) - tf.tile(params["offset"], [2])
    return tf.clip_by_value(b, 0.0, float(canvas))


def nonempty(boxes) -> tf.Tensor:
    return (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


def crop_masks(masks_u8, canvas_boxes, params, mask_size) -> tf.Tensor:
    """Box-aligned mask crops [n, M, M] float32 in [0, 1] (docs/reference.md §2.10): the canvas box is
    mapped back to the original frame, normalised by the original size (the reference's
    ``normalize_boxes``), and ``crop_and_resize``d bilinearly; soft values are kept."""
    n = tf.shape(masks_u8)[0]
    hw = tf.tile(tf.cast(tf.shape(masks_u8)[1:3], tf.float32), [2])
    norm = canvas_to_original(canvas_boxes, params) / hw
    crops = tf.image.crop_and_resize(
        tf.cast(masks_u8[..., None], tf.float32), norm, tf.range(n), [mask_size, mask_size], method="bilinear"
    )
    return tf.reshape(crops, [-1, mask_size, mask_size])


def tight_boxes_from_masks(masks_u8) -> tuple:
    """Tight [ymin, xmin, ymax+1, xmax+1] boxes of [n, H, W] masks (continuous coordinates)
    and their pixel areas; empty masks give zero boxes."""
    m = masks_u8 > 0
    rows = tf.reduce_any(m, axis=2)
    cols = tf.reduce_any(m, axis=1)

    def extent(v):
        size = tf.shape(v)[1]
        idx = tf.range(size, dtype=tf.int32)[None, :]
        lo = tf.reduce_min(tf.where(v, idx, size), axis=1)
        hi = tf.reduce_max(tf.where(v, idx, -1), axis=1) + 1
        return lo, hi

    y0, y1 = extent(rows)
    x0, x1 = extent(cols)
    empty = ~tf.reduce_any(rows, axis=1)
    boxes = tf.cast(tf.stack([y0, x0, y1, x1], axis=1), tf.float32)
    boxes = tf.where(empty[:, None], 0.0, boxes)
    area = tf.reduce_sum(tf.cast(m, tf.float32), axis=[1, 2])
    return boxes, area


def visible_window(params, canvas, height, width) -> tf.Tensor:
    """bool [H, W]: the original pixels that nearest resampling puts on the canvas (canvas
    pixel c shows original pixel floor((c + offset + 0.5) / scale), c in
    [0, min(canvas, scaled - offset)))."""
    visible = tf.minimum(float(canvas), params["scaled"] - params["offset"])
    lo = tf.floor((params["offset"] + 0.5) / params["scale"])
    hi = tf.floor((params["offset"] + visible - 0.5) / params["scale"])
    ys = tf.range(height, dtype=tf.float32)
    xs = tf.range(width, dtype=tf.float32)
    return ((ys >= lo[0]) & (ys <= hi[0]))[:, None] & ((xs >= lo[1]) & (xs <= hi[1]))[None, :]


def boxes_from_visible_masks(masks_u8, params, canvas, boxes) -> tf.Tensor:
    """Tight canvas boxes of the part of each mask inside the crop window (an option: the
    reference only clips the transformed box, which for a non-rectangular object cut by the
    crop leaves a box larger than what is visible, or a box with nothing inside)."""
    h, w = tf.shape(masks_u8)[1], tf.shape(masks_u8)[2]
    win = visible_window(params, canvas, h, w)
    tight, area = tight_boxes_from_masks(masks_u8 * tf.cast(win, tf.uint8)[None])
    tight = transform_boxes(tight, params, canvas)
    has_mask = tf.reduce_any(masks_u8 > 0, axis=[1, 2])
    # No visible mask pixel: the object was cropped away (zero box, removed as empty), unless
    # it has no mask at all (bad annotation): then it keeps its clipped box.
    return tf.where((area > 0)[:, None], tight, tf.where(has_mask[:, None], 0.0, boxes))
