"""One example, record -> fixed-shape dict, in TensorFlow (train: docs/reference.md §2.11 + 5.6; eval:
resize the longer side to the canvas and pad)."""

from __future__ import annotations

import tensorflow as tf

from frozen_det.data.detection import augment
from frozen_det.data.detection.copy_paste import copy_paste
from frozen_det.data.pipeline import sub_seed


def _prepare(source, record, cfg, seed, train: bool) -> dict:
    """decode -> sanitise -> (train: drop crowds, flip, LSJ | eval: resize) -> canvas image and
    boxes; masks stay at original resolution (cropped in :func:`_finalize`)."""
    canvas = cfg.canvas
    ex = source.decode(record, cfg.with_masks)
    ex, n_bad = augment.sanitize(ex)
    height, width = tf.shape(ex["image"])[0], tf.shape(ex["image"])[1]
    if train:
        ex = augment.gather_instances(ex, ~ex["is_crowd"])  # docs/reference.md §2.11 step 1
        if cfg.augment.hflip:
            flip = tf.random.stateless_uniform([], sub_seed(seed, 1)) < 0.5
            ex = augment.hflip(ex, flip)
        if cfg.augment.short_sides:
            params = augment.short_side_params(height, width, canvas, tuple(cfg.augment.short_sides), seed)
        else:
            params = augment.lsj_params(height, width, canvas, cfg.augment.scale_min, cfg.augment.scale_max, seed)
    else:
        params = augment.resize_params(height, width, canvas, 1.0)
    image = augment.transform_image(ex["image"], params, canvas, list(cfg.mean), list(cfg.std))
    boxes = augment.transform_boxes(ex["boxes"], params, canvas)
    if train and cfg.with_masks and cfg.augment.boxes_from_masks:
        boxes = augment.boxes_from_visible_masks(ex["masks"], params, canvas, boxes)
    ex = dict(ex, boxes=boxes)
    if train:  # empty boxes after the crop are removed (docs/reference.md §2.11 step 5)
        ex = augment.gather_instances(ex, augment.nonempty(boxes))
    out = dict(
        image=image,
        boxes=ex["boxes"],
        classes=tf.cast(ex["classes"], tf.int32),
        is_crowd=tf.cast(ex["is_crowd"], tf.bool),
        params=params,
        num_bad_boxes=n_bad,
        image_id=tf.cast(ex["image_id"], tf.int64),
    )
    if cfg.with_masks:
        out["masks"] = tf.cast(ex["masks"], tf.uint8)
    return out


def _pad(x, n, value=0):
    x = x[:n]
    pad = [[0, n - tf.shape(x)[0]]] + [[0, 0]] * (len(x.shape) - 1)
    return tf.pad(x, pad, constant_values=value)


def _finalize(cfg, num_classes, image, groups, params, image_id, num_bad) -> dict:
    """Concatenates object groups (main, pasted), pads to max_instances and builds the batch
    contract's fields for one example."""
    n_max, canvas = cfg.max_instances, cfg.canvas
    boxes = tf.concat([g["boxes"] for g in groups], 0)
    classes = tf.concat([tf.cast(g["classes"], tf.int32) for g in groups], 0)
    crowd = tf.concat([tf.cast(g["is_crowd"], tf.bool) for g in groups], 0)
    n = tf.shape(classes)[0]
    present = tf.one_hot(tf.boolean_mask(classes, ~crowd), num_classes + 1, dtype=tf.float32)
    out = dict(
        image=tf.cast(image, tf.bfloat16 if cfg.image_dtype == "bfloat16" else tf.float32),
        boxes=_pad(boxes, n_max),
        classes=_pad(classes, n_max),
        valid=_pad(tf.ones([n], tf.bool), n_max, False),
        is_crowd=_pad(crowd, n_max, False),
        image_info=augment.image_info(params, canvas),
        image_id=image_id,
        image_labels=tf.minimum(tf.reduce_sum(present, 0), 1.0),
        num_dropped_instances=tf.maximum(n - n_max, 0),
        num_bad_boxes=tf.cast(num_bad, tf.int32),
        example_valid=tf.constant(True),
    )
    if cfg.with_masks:
        crops, full = [], []
        for g in groups:
            c = augment.crop_masks(g["masks"], g["boxes"], g["params"], cfg.mask_size)
            crops.append(c)
            if cfg.canvas_masks:
                f = augment.transform_masks_nearest(g["masks"], g["params"], canvas)
                if "occluder" in g:
                    f = f * (1 - tf.cast(g["occluder"], tf.uint8))[None]
                full.append(f)
        crops = _pad(tf.concat(crops, 0), n_max)
        if cfg.masks_dtype == "uint8":
            crops = tf.cast(tf.round(crops * 255.0), tf.uint8)
        out["masks"] = tf.ensure_shape(crops, [n_max, cfg.mask_size, cfg.mask_size])
        if cfg.canvas_masks:
            out["canvas_masks"] = tf.ensure_shape(_pad(tf.concat(full, 0), n_max), [n_max, canvas, canvas])
    return out


def make_train_fn(source, cfg):
    """fn(seed [2], record[, paste_record]) -> example dict (train)."""
    num_classes = source.info.num_classes
    aug = cfg.augment

    def fn(seed, record, paste_record=None):
        a = _prepare(source, record, cfg, seed, train=True)
        main = dict(boxes=a["boxes"], classes=a["classes"], is_crowd=a["is_crowd"], params=a["params"])
        if cfg.with_masks:
            main["masks"] = a["masks"]
        image, groups = a["image"], [main]
        if paste_record is not None:
            s = _prepare(source, paste_record, cfg, sub_seed(seed, 99), train=True)
            image, kept, pasted = copy_paste(
                a,
                s,
                seed,
                cfg.canvas,
                aug.copy_paste_box_update_threshold,
                aug.copy_paste_occluded_area,
                aug.copy_paste_rule,
            )
            for g in (kept, pasted):
                g["is_crowd"] = tf.zeros_like(g["classes"], tf.bool)
            groups = [kept, pasted]
        return _finalize(cfg, num_classes, image, groups, a["params"], a["image_id"], a["num_bad_boxes"])

    return fn


def make_eval_fn(source, cfg):
    num_classes = source.info.num_classes

    def fn(seed, record):
        a = _prepare(source, record, cfg, seed, train=False)
        g = dict(boxes=a["boxes"], classes=a["classes"], is_crowd=a["is_crowd"], params=a["params"])
        if cfg.with_masks:
            g["masks"] = a["masks"]
        return _finalize(cfg, num_classes, a["image"], [g], a["params"], a["image_id"], a["num_bad_boxes"])

    return fn
