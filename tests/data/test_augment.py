"""Geometry: LSJ / eval resize move boxes with the pixels, flip, inverse mapping, tight boxes
after flip + LSJ + Copy-Paste."""

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_boxes_tight, synthetic_config, tight_box

from frozen_det.data.detection import augment, build_train_pipeline
from frozen_det.data.detection import config as config_lib
from frozen_det.data.detection.copy_paste import copy_paste
from frozen_det.ops.boxes import to_original_boxes


class _PaintedSource:
    """A one-image source: a white rectangle (the object) on black, mask included."""

    def __init__(self, h, w, box):
        from frozen_det.data.detection.sources.base import DatasetInfo

        self.h, self.w, self.box = h, w, box
        self.info = DatasetInfo("painted", ["background", "thing"], [0, 1], True)

    def decode(self, record, with_masks):
        y0, x0, y1, x1 = self.box
        img = np.zeros((self.h, self.w, 3), np.uint8)
        img[y0:y1, x0:x1] = 255
        mask = np.zeros((1, self.h, self.w), np.uint8)
        mask[0, y0:y1, x0:x1] = 1
        ex = dict(
            image=tf.constant(img),
            boxes=tf.constant([self.box], tf.float32),
            classes=tf.constant([1]),
            is_crowd=tf.constant([False]),
            image_id=tf.constant(7, tf.int64),
        )
        if with_masks:
            ex["masks"] = tf.constant(mask)
        return ex


def _one(source, train, seed, **over):
    from frozen_det.data.detection.example import make_eval_fn, make_train_fn

    cfg = config_lib.resolve(
        ml_collections.ConfigDict(
            dict(
                source="synthetic",
                canvas=128,
                max_instances=4,
                with_masks=True,
                mask_size=16,
                mean=[0, 0, 0],
                std=[1, 1, 1],
                **over,
            )
        )
    )
    fn = (make_train_fn if train else make_eval_fn)(source, cfg)
    return {k: v.numpy() for k, v in fn(tf.constant([seed, 0], tf.int64), {}).items()}


@pytest.mark.parametrize("seed", range(8))
def test_lsj_box_follows_pixels(seed):
    src = _PaintedSource(90, 150, (20, 30, 60, 110))
    ex = _one(src, True, seed, augment=dict(scale_min=0.3, scale_max=2.0))
    info = ex["image_info"]
    np.testing.assert_allclose(info[0], [90, 150])
    np.testing.assert_allclose(info[1], [128, 128])
    assert np.all(info[3] >= 0)
    bright = ex["image"][..., 0] > 127
    if not ex["valid"][0]:  # cropped away entirely: no white pixel may remain
        assert not bright.any()
        return
    t = tight_box(bright)
    np.testing.assert_allclose(ex["boxes"][0], t, atol=1.0)
    # The box maps back to where it was painted (up to the crop).
    back = to_original_boxes(ex["boxes"][None, :1], info[None])[0, 0]
    y0, x0, y1, x1 = src.box
    inside = lambda x0, x1: back[0] >= y0 - 1 and back[1] >= x0 - 1 and back[2] <= y1 + 1 and back[3] <= x1 + 1
    assert inside(x0, x1) or inside(150 - x1, 150 - x0)  # as painted, or mirrored by the flip
    # The box-aligned mask crop is full inside (the object fills its box); its border rows are
    # soft because crop_and_resize samples at y*(H-1) on boxes normalised by H (reference).
    assert ex["masks"][0][1:-1, 1:-1].min() > 0.9 and ex["masks"][0].min() > 0.3


def test_lsj_scale_law():
    """target = round(s*canvas); scale = min(target/H, target/W); offset in [0, scaled-canvas]."""
    for seed in range(20):
        p = augment.lsj_params(300, 500, 128, 0.1, 2.0, tf.constant([seed, 1], tf.int64))
        scaled, offset = p["scaled"].numpy(), p["offset"].numpy()
        assert scaled[1] == max(scaled)  # longer side drives the scale
        assert 0.1 * 128 - 1 <= scaled[1] <= 2.0 * 128 + 1
        assert np.all(offset >= 0) and np.all(offset <= np.maximum(scaled - 128, 0))
        np.testing.assert_allclose(p["scale"].numpy(), scaled / [300, 500])


def test_short_side_scales_are_the_listed_sides_with_the_longer_side_capped():
    """DAP's multi-scale training: 300 x 400 images on a 640 canvas at short sides 96 / 160 /
    320 / 640 become 96 / 160 / 320 and, capped by the canvas, 480 pixels high; nothing is cropped."""
    seen = set()
    for seed in range(40):
        p = augment.short_side_params(300, 400, 640, (96, 160, 320, 640), tf.constant([seed, 1], tf.int64))
        scaled = p["scaled"].numpy()
        seen.add(int(scaled[0]))
        assert scaled[1] <= 640 and np.all(p["offset"].numpy() == 0)
        np.testing.assert_allclose(scaled[1] / scaled[0], 4 / 3, rtol=0.01)
    assert seen == {96, 160, 320, 480}
    # The training examples follow the field: a 64 x 256 image at short side 16 fills 16 x 64.
    ex = _one(_PaintedSource(64, 256, (0, 0, 64, 256)), True, 0, augment=dict(short_sides=(16,), hflip=False))
    np.testing.assert_allclose(ex["image_info"][2], [0.25, 0.25])
    assert ex["image"][:16, :64].min() == 255 and ex["image"][16:].max() == 0 and ex["image"][:, 64:].max() == 0
    with pytest.raises(ValueError, match="augment.short_sides"):
        config_lib.complete(dict(canvas=640, augment=dict(short_sides=(96, 800))))


def test_eval_resize_longer_side_and_flip():
    src = _PaintedSource(64, 256, (10, 200, 40, 250))
    ex = _one(src, False, 0)
    np.testing.assert_allclose(ex["image_info"][2], [0.5, 0.5])
    np.testing.assert_allclose(ex["image_info"][3], [0, 0])
    np.testing.assert_allclose(ex["boxes"][0], [5, 100, 20, 125])
    assert ex["image"][32:, :].max() == 0  # bottom padding (normalised zeros)
    # Flip: x -> W - x, pixels follow.
    img = tf.constant(np.arange(12, dtype=np.uint8).reshape(1, 4, 3))
    out = augment.hflip(
        dict(image=img, boxes=tf.constant([[0.0, 1.0, 1.0, 2.0]]), masks=tf.constant([[[1, 0, 0, 0]]], tf.uint8)),
        tf.constant(True),
    )
    np.testing.assert_array_equal(out["image"].numpy()[0, 0], img.numpy()[0, 3])
    np.testing.assert_allclose(out["boxes"].numpy(), [[0, 2, 1, 3]])
    np.testing.assert_array_equal(out["masks"].numpy(), [[[0, 0, 0, 1]]])


def test_to_original_boxes_inverse():
    info = np.array([[[480, 640], [512, 512], [0.8, 0.8], [10, 20]]], np.float32)
    orig = np.array([[[100, 200, 300, 400]]], np.float32)
    canvas = orig * 0.8 - np.array([10, 20, 10, 20])
    np.testing.assert_allclose(to_original_boxes(canvas, info), orig, rtol=1e-6)


@pytest.mark.parametrize("copy_paste_on", [False, True])
def test_boxes_tight_after_augmentation(synthetic_dir, copy_paste_on):
    """Property: after flip / LSJ (/ Copy-Paste with box updates at 0 px) every valid box is the
    tight box of its mask within 1 px and inside the canvas."""
    cfg = synthetic_config(
        synthetic_dir,
        canvas_masks=True,
        batch_size=8,
        augment=dict(
            copy_paste=copy_paste_on,
            copy_paste_box_update_threshold=0.0,
            boxes_from_masks=True,
            scale_min=0.3,
            scale_max=2.0,
        ),
    )
    pipe = build_train_pipeline(cfg, process_index=0, process_count=1)
    checked = sum(assert_boxes_tight(next(pipe)) for _ in range(3))
    assert checked > 10


def test_reference_lsj_boxes_contain_masks(synthetic_dir):
    """Reference LSJ (boxes only clipped): every mask lies inside its box; boxes of objects
    not cut by the crop are tight."""
    cfg = synthetic_config(synthetic_dir, canvas_masks=True, batch_size=8, augment=dict(scale_min=0.3, scale_max=2.0))
    batch = next(build_train_pipeline(cfg, process_index=0, process_count=1))
    tight = 0
    for i in range(8):
        for j in np.nonzero(batch["valid"][i])[0]:
            box, t = batch["boxes"][i, j], tight_box(batch["canvas_masks"][i, j])
            assert t is not None
            assert np.all(t[:2] >= box[:2] - 1) and np.all(t[2:] <= box[2:] + 1), (box, t)
            tight += bool(np.abs(box - t).max() <= 1)
    assert tight > 0


def _obj(boxes, classes, masks, params, image):
    return dict(
        boxes=tf.constant(boxes, tf.float32),
        classes=tf.constant(classes, tf.int32),
        masks=tf.constant(masks, tf.uint8),
        params=params,
        image=tf.constant(image, tf.float32),
    )


def _identity_params(size, canvas):
    return augment.resize_params(size, size, canvas, float(size) / canvas)


def test_copy_paste_occlusion_rules():
    """Main image 64x64 (identity geometry): A fully covered -> removed; B half covered ->
    box shrinks to its visible part; C untouched -> unchanged. All source objects pasted."""
    n = 64
    params = _identity_params(n, n)
    m = np.zeros((3, n, n), np.uint8)
    m[0, 5:15, 5:15] = 1  # A
    m[1, 30:50, 10:50] = 1  # B: right part (x >= 30) will be covered
    m[2, 55:60, 55:60] = 1  # C
    main = _obj([[5, 5, 15, 15], [30, 10, 50, 50], [55, 55, 60, 60]], [1, 2, 3], m, params, np.zeros((n, n, 3)))
    sm = np.zeros((1, n, n), np.uint8)
    sm[0, 0:52, 0:20] = 0  # nothing
    sm[0, 0:20, 0:20] = 1  # covers A completely
    sm[0, 25:55, 30:64] = 1  # same object also covers the right of B (union matters)
    src = _obj([[0, 0, 55, 64]], [2], sm, params, np.ones((n, n, 3)))
    # m ~ U{0..1}: find a seed that pastes the object.
    for s in range(50):
        image, kept, pasted = copy_paste(
            main, src, tf.constant([s, 0], tf.int64), n, box_update_threshold=10.0, occluded_area=30.0
        )
        if pasted["boxes"].shape[0] == 1:
            break
    img = image.numpy()
    assert img[0:20, 0:20].min() == 1 and img[60:, :20].max() == 0  # hard composite
    np.testing.assert_array_equal(kept["classes"].numpy(), [2, 3])  # A removed
    np.testing.assert_allclose(kept["boxes"].numpy()[0], [30, 10, 50, 30])  # B shrunk
    np.testing.assert_allclose(kept["boxes"].numpy()[1], [55, 55, 60, 60])  # C unchanged
    assert kept["masks"].numpy()[0][:, 30:].sum() == 0
    np.testing.assert_array_equal(pasted["classes"].numpy(), [2])


def test_copy_paste_reference_rule_is_global():
    """rule='reference': once any box moved, every small object is removed (the coded quirk);
    'per_object' keeps a small object that was not occluded."""
    n = 64
    params = _identity_params(n, n)
    m = np.zeros((2, n, n), np.uint8)
    m[0, 0:30, 0:30] = 1  # big, half covered (moves)
    m[1, 50:55, 50:55] = 1  # small (25 px), not covered
    main = _obj([[0, 0, 30, 30], [50, 50, 55, 55]], [1, 2], m, params, np.zeros((n, n, 3)))
    sm = np.zeros((1, n, n), np.uint8)
    sm[0, 0:30, 15:40] = 1
    src = _obj([[0, 15, 30, 40]], [3], sm, params, np.ones((n, n, 3)))
    out = {}
    for rule in ("per_object", "reference"):
        for s in range(50):
            _, kept, pasted = copy_paste(
                main, src, tf.constant([s, 0], tf.int64), n, box_update_threshold=10.0, occluded_area=30.0, rule=rule
            )
            if pasted["boxes"].shape[0] == 1:
                break
        out[rule] = kept["classes"].numpy().tolist()
    assert out["per_object"] == [1, 2]
    assert out["reference"] == [1]
