"""One classification example, record -> fixed-shape dict, in TensorFlow with stateless
randomness (seeded per example by the pipeline).

Train: Inception-style random-resized crop (a box of `crop_scale` of the image's area and
`crop_ratio` aspect, up to 10 tries, else the centre crop), horizontal flip, resize to
`image_size`. Eval: resize the shorter side to `image_size / crop_fraction`, centre crop
`image_size`. Then (x - mean) / std on [0, 255] RGB.
"""

from __future__ import annotations

import tensorflow as tf

from frozen_det.data.classification.subsets import source_label_set
from frozen_det.data.pipeline import sub_seed


def _normalise(image, cfg):
    image = tf.cast(image, tf.float32)
    return (image - tf.constant(cfg.mean, tf.float32)) / tf.constant(cfg.std, tf.float32)


def _resize(image, height, width):
    return tf.image.resize(tf.cast(image, tf.float32), tf.stack([height, width]), method="bilinear", antialias=True)


def random_resized_crop(image, seed, size: int, scale, ratio):
    """A random box of the image (area fraction in `scale`, aspect ratio log-uniform in
    `ratio`), resized to size x size."""
    box_begin, box_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=tuple(float(r) for r in ratio),
        area_range=tuple(float(s) for s in scale),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, box_begin, box_size)
    return _resize(crop, size, size)


def centre_crop(image, size: int, crop_fraction: float):
    """Shorter side to round(size / crop_fraction), then the centre size x size."""
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    short = tf.cast(tf.minimum(h, w), tf.float32)
    scale = tf.math.round(size / crop_fraction) / short
    new_h = tf.maximum(tf.cast(tf.math.round(tf.cast(h, tf.float32) * scale), tf.int32), size)
    new_w = tf.maximum(tf.cast(tf.math.round(tf.cast(w, tf.float32) * scale), tf.int32), size)
    image = _resize(image, new_h, new_w)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return tf.slice(image, tf.stack([top, left, 0]), [size, size, 3])


def _labels(source, cfg, fine):
    """{"label": the training label of the source class `fine`, "fine_label": `fine`}."""
    label_of = tf.constant(source_label_set(cfg, source).label_of)
    fine = tf.cast(fine, tf.int32)
    return {"label": tf.gather(label_of, fine), "fine_label": fine}


def make_train_fn(source, cfg):
    aug = cfg.augment

    def fn(seed, record):
        ex = source.decode(record)
        image = ex["image"]
        if aug.random_resized_crop:
            image = random_resized_crop(image, sub_seed(seed, 1), cfg.image_size, aug.crop_scale, aug.crop_ratio)
        else:
            image = centre_crop(image, cfg.image_size, cfg.crop_fraction)
        if aug.hflip:
            flip = tf.random.stateless_uniform([], sub_seed(seed, 2)) < 0.5
            image = tf.cond(flip, lambda: image[:, ::-1], lambda: image)
        image.set_shape([cfg.image_size, cfg.image_size, 3])
        return {
            "image": _normalise(image, cfg),
            **_labels(source, cfg, ex["label"]),
            "image_id": tf.cast(ex["image_id"], tf.int64),
        }

    return fn


def make_eval_fn(source, cfg):
    def fn(seed, record):
        del seed
        ex = source.decode(record)
        image = centre_crop(ex["image"], cfg.image_size, cfg.crop_fraction)
        image.set_shape([cfg.image_size, cfg.image_size, 3])
        return {
            "image": _normalise(image, cfg),
            **_labels(source, cfg, ex["label"]),
            "image_id": tf.cast(ex["image_id"], tf.int64),
            "example_valid": tf.constant(True),
        }

    return fn
