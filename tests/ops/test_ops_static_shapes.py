"""Every op: jittable with fixed shapes, no retrace when only values change, vmappable over a
batch (equal to per-example results), and free of host callbacks."""

import functools

import jax
import numpy as np
import pytest
from ops_test_utils import FRESH_SEED, TraceCounter, distinct_scores, is_padding, random_boxes

from frozen_det.ops import boxes as B
from frozen_det.ops import masks, matching, nms, postprocess, roi_align, sampling
from frozen_det.ops.anchors import multilevel_anchors

ANCHORS = multilevel_anchors((64, 64), 3, 4).boxes  # 240 anchors, a jit constant


def _gt(rng):
    gt = random_boxes(rng, 6, canvas=64.0, degenerate_fraction=0.0)
    gt[4:] = -1.0  # two padded ground-truth rows
    return gt


def _iou_inputs(rng):
    return random_boxes(rng, 20), random_boxes(rng, 12), rng.uniform(size=20) < 0.8, rng.uniform(size=12) < 0.8


def _coder_inputs(rng):
    return random_boxes(rng, 30, degenerate_fraction=0.0), random_boxes(rng, 30, degenerate_fraction=0.0)


def _coder(gt, anchors):
    deltas = B.encode_boxes(gt, anchors, B.FRCNN_WEIGHTS)
    return deltas, B.clip_boxes(B.decode_boxes(deltas, anchors, B.FRCNN_WEIGHTS), (64, 64))


def _rpn_targets(gt):
    valid = ~is_padding(gt)
    return matching.rpn_match(B.pairwise_iou(ANCHORS, gt, valid2=valid), valid)


def _roi_targets(key, rois, gt):
    valid = ~is_padding(gt)
    m = matching.roi_match(B.pairwise_iou(rois, gt, valid2=valid))
    return m, sampling.sample_balanced(
        key, m.labels == matching.POSITIVE, (m.labels == matching.NEGATIVE) | (m.labels == matching.INVALID), 16, 0.25
    )


def _roi_inputs(rng):
    return jax.random.PRNGKey(rng.integers(1 << 30)), random_boxes(rng, 40, canvas=64.0), _gt(rng)


def _pyramid_inputs(rng):
    feats = {l: rng.normal(size=(64 >> l, 64 >> l, 4)).astype(np.float32) for l in (2, 3, 4)}
    return feats, random_boxes(rng, 10, canvas=64.0, max_size=60.0)


def _nms_inputs(rng):
    return (random_boxes(rng, 50, canvas=64.0), distinct_scores(rng, (50,)), rng.integers(0, 3, 50).astype(np.int32))


def _postprocess_inputs(rng):
    return (
        rng.normal(size=(30, 4)).astype(np.float32),
        rng.normal(size=(30, 16)).astype(np.float32),
        random_boxes(rng, 30, canvas=64.0, degenerate_fraction=0.0),
    )


def _mask_inputs(rng):
    gt_masks = (rng.uniform(size=(3, 32, 32)) < 0.5).astype(np.float32)
    gt_boxes = random_boxes(rng, 3, canvas=32.0, max_size=20.0, degenerate_fraction=0.0)
    predicted = rng.uniform(size=(5, 8, 8)).astype(np.float32)
    return (gt_masks, gt_boxes, rng.integers(0, 3, 5).astype(np.int32), random_boxes(rng, 5, canvas=32.0), predicted)


def _mask_ops(gt_masks, gt_boxes, matched, rois, predicted):
    crops = masks.crop_masks_to_boxes(gt_masks, gt_boxes, 16)
    return (
        masks.mask_targets_from_canvas_masks(gt_masks, matched, rois, 8),
        masks.mask_targets_from_box_crops(crops, gt_boxes, matched, rois, 8),
        masks.paste_masks(predicted, rois, (32, 32)),
    )


CASES = {
    "pairwise_iou": (B.pairwise_iou, _iou_inputs),
    "box_coder": (_coder, _coder_inputs),
    "rpn_match": (_rpn_targets, lambda rng: (_gt(rng),)),
    "roi_match_and_sample": (_roi_targets, _roi_inputs),
    "multilevel_roi_align": (functools.partial(roi_align.multilevel_roi_align, output_size=3), _pyramid_inputs),
    "crop_and_resize": (
        lambda img, bx: roi_align.crop_and_resize(img, bx, np.zeros(10, np.int32), (4, 4)),
        lambda rng: (rng.normal(size=(1, 9, 9, 2)).astype(np.float32), rng.uniform(size=(10, 4)).astype(np.float32)),
    ),
    "nms_class_aware": (lambda b, s, c: nms.non_max_suppression_padded(b, s, 20, 0.5, classes=c), _nms_inputs),
    "detection_postprocess": (
        functools.partial(postprocess.detection_postprocess, image_shape=(64, 64), max_detections=10),
        _postprocess_inputs,
    ),
    "masks": (_mask_ops, _mask_inputs),
}


def _stack(a, b):
    return jax.tree.map(lambda x, y: np.stack([np.asarray(x), np.asarray(y)]), a, b)


@pytest.mark.parametrize("name", list(CASES))
def test_jit_once_and_vmap(name):
    fn, make_inputs = CASES[name]
    rng = np.random.default_rng(FRESH_SEED)
    first, second = make_inputs(rng), make_inputs(rng)
    counted = TraceCounter(fn)
    out_first = counted(*first)
    out_second = counted(*second)
    assert counted.traces == 1, f"{name} retraced when only values changed"
    assert jax.tree.map(np.shape, out_first) == jax.tree.map(np.shape, out_second)

    batched = jax.jit(jax.vmap(fn))(*_stack(first, second))
    for i, expected in enumerate((out_first, out_second)):
        jax.tree.map(lambda got, exp: np.testing.assert_allclose(got[i], exp, rtol=1e-5, atol=1e-5), batched, expected)

    jaxpr = str(jax.make_jaxpr(fn)(*first))
    assert "callback" not in jaxpr
