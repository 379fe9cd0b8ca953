"""Simple Copy-Paste (Ghiasi et al.; docs/reference.md §5.6) on two examples that each went through
their own flip + large-scale jitter into the same canvas.

* m ~ U{0..n} of the source's objects are chosen uniformly (shuffle + slice);
* their union mask M (the source's original-resolution masks moved to the canvas, nearest) is
  composited hard: ``image = image * (1 - M) + source_image * M`` (no blending);
* the main image's masks are zeroed where M lands in its original frame, boxes are recomputed
  from what is left, and occluded objects whose remaining area is at most
  ``occluded_area`` original pixels are removed;
* box coordinates that moved by more than ``box_update_threshold`` canvas pixels take the
  mask-derived value;
* the pasted objects (boxes, classes, masks) are appended after the main image's.

``rule="per_object"`` (default) applies the removal test to each object separately, which is
what the paper describes. ``rule="reference"`` reproduces the reference code as written
(``reduce_any`` without an axis): if any object's box moved, *every* object with a small
remaining mask is removed, moved or not.
"""

from __future__ import annotations

import tensorflow as tf

from frozen_det.data.detection import augment
from frozen_det.data.pipeline import sub_seed


def _mask_in_original_frame(canvas_mask, params, height, width):
    """A canvas mask mapped back onto the original grid (nearest): original pixel i reads the
    canvas pixel at floor((i + 0.5) * scale) - offset, clamped to the visible part of the
    canvas so that pixels on the crop border (whose sample would fall just outside) read the
    border pixel that shows them."""
    canvas = tf.shape(canvas_mask)[0]
    visible = tf.cast(tf.minimum(tf.cast(canvas, tf.float32), params["scaled"] - params["offset"]), tf.int32)

    def sample_index(axis, size):
        i = tf.range(size, dtype=tf.float32)
        c = tf.cast(tf.floor((i + 0.5) * params["scale"][axis] - params["offset"][axis]), tf.int32)
        return tf.clip_by_value(c, 0, tf.maximum(visible[axis] - 1, 0))

    rows = tf.gather(canvas_mask, sample_index(0, height), axis=0)
    return tf.gather(rows, sample_index(1, width), axis=1)


def copy_paste(
    main: dict,
    src: dict,
    seed,
    canvas: int,
    box_update_threshold: float = 10.0,
    occluded_area: float = 300.0,
    rule: str = "per_object",
) -> tuple:
    """Returns (main example with pasted image, kept main objects, pasted objects).

    ``main`` / ``src``: dicts with ``image`` (normalised canvas), ``boxes`` (canvas, non-empty),
    ``classes``, ``masks`` (uint8 [n, H, W] original frame, after flip) and ``params``.
    Returns ``(image, main_objects, pasted_objects)`` where each objects dict has boxes,
    classes, masks and params (for the final box-aligned crops).
    """
    n_src = tf.shape(src["boxes"])[0]
    m = tf.random.stateless_uniform([], sub_seed(seed, 20), 0, n_src + 1, dtype=tf.int32)
    order = tf.random.experimental.stateless_shuffle(tf.range(n_src), sub_seed(seed, 21))
    chosen = order[:m]
    chosen_masks = tf.gather(src["masks"], chosen)
    src_hw = tf.shape(src["masks"])[1:3]
    union = tf.reduce_max(tf.concat([tf.zeros(tf.concat([[1], src_hw], 0), tf.uint8), chosen_masks], 0), axis=0)
    pasted_mask = augment.transform_masks_nearest(union[None], src["params"], canvas)[0] > 0
    alpha = tf.cast(pasted_mask, main["image"].dtype)[..., None]
    image = main["image"] * (1 - alpha) + src["image"] * alpha

    # Occlusion of the main objects, in their original frame.
    masks = main["masks"]
    height, width = tf.shape(masks)[1], tf.shape(masks)[2]
    occluder = _mask_in_original_frame(tf.cast(pasted_mask, tf.uint8), main["params"], height, width)
    # Only the part of each mask inside the LSJ crop counts (pixels cropped away are not
    # "remaining" area).
    window = tf.cast(augment.visible_window(main["params"], canvas, height, width), tf.uint8)[None]
    _, orig_area = augment.tight_boxes_from_masks(masks * window)
    masks = masks * (1 - occluder)[None]
    mask_boxes, area = augment.tight_boxes_from_masks(masks * window)
    new_boxes = augment.transform_boxes(mask_boxes, main["params"], canvas)
    new_boxes = tf.where((area > 0)[:, None], new_boxes, 0.0)
    moved = (tf.abs(new_boxes - main["boxes"]) > box_update_threshold) & (orig_area > 0)[:, None]
    small = area <= occluded_area
    if rule == "reference":
        drop = tf.reduce_any(moved) & small
    else:
        drop = tf.reduce_any(moved, axis=1) & small
    boxes = tf.where(moved, new_boxes, main["boxes"])
    keep = ~drop & augment.nonempty(boxes)
    idx = tf.reshape(tf.where(keep), [-1])
    kept = dict(
        boxes=tf.gather(boxes, idx),
        classes=tf.gather(main["classes"], idx),
        masks=tf.gather(masks, idx),
        params=main["params"],
    )
    pasted = dict(
        boxes=tf.gather(src["boxes"], chosen),
        classes=tf.gather(src["classes"], chosen),
        masks=chosen_masks,
        params=src["params"],
    )
    # Pasted pixels occlude main objects in canvas space too (for full-canvas masks).
    kept["occluder"] = pasted_mask
    return image, kept, pasted
