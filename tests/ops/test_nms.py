"""Padded NMS against TensorFlow and torchvision: same boxes, same order, any threshold."""

import jax
import numpy as np
import pytest
from ops_test_utils import SEEDS, distinct_scores, over_seeds, random_boxes, yxyx_to_xyxy

from frozen_det.ops.nms import non_max_suppression_padded

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
tf = pytest.importorskip("tensorflow")
tf.config.set_visible_devices([], "GPU")

THRESHOLDS = (0.3, 0.5, 0.7)
MAX_OUTPUT = 64

# One compiled function per (static) setting, shared by all tests.
_nms = jax.jit(non_max_suppression_padded, static_argnames=("max_output", "tile_size", "score_threshold"))


def _iou64(boxes):
    b = boxes.astype(np.float64)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    hw = np.clip(np.minimum(b[:, None, 2:], b[None, :, 2:]) - np.maximum(b[:, None, :2], b[None, :, :2]), 0, None)
    inter = hw[..., 0] * hw[..., 1]
    union = area[:, None] + area[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _unambiguous(boxes, n):
    """The first ``n`` boxes after dropping every box with an IoU within 1e-5 of a tested
    threshold: there float32 rounding, which differs between implementations, decides
    suppression (seen: torchvision's kernel at 0.3 for an IoU of 0.30000007)."""
    iou = _iou64(boxes)
    near = np.zeros(iou.shape, bool)
    for threshold in THRESHOLDS:
        near |= np.abs(iou - threshold) < 1e-5
    np.fill_diagonal(near, False)
    keep = np.flatnonzero(~near.any(axis=1))
    assert keep.size >= n, "too many near-threshold overlaps to draw a clean case"
    return boxes[keep[:n]]


def _case(seed, n=300, lead=()):
    rng = np.random.default_rng(seed)
    extra = random_boxes(rng, n + 30, canvas=120.0, max_size=40.0, lead=lead)  # crowded: many overlaps
    flat = extra.reshape(-1, n + 30, 4)
    boxes = np.stack([_unambiguous(b, n) for b in flat]).reshape(tuple(lead) + (n, 4))
    return boxes, distinct_scores(rng, boxes.shape[:-1]), rng


def _selected(result):
    return np.asarray(result.indices)[np.asarray(result.valid)]


@over_seeds
@pytest.mark.parametrize("iou_threshold", THRESHOLDS)
def test_matches_tf_and_torchvision(seed, iou_threshold):
    boxes, scores, _ = _case(seed)
    got = _nms(boxes, scores, max_output=MAX_OUTPUT, iou_threshold=iou_threshold)
    tf_greedy = tf.image.non_max_suppression(boxes, scores, MAX_OUTPUT, iou_threshold).numpy()
    tf_padded, tf_count = tf.image.non_max_suppression_padded(
        boxes, scores, MAX_OUTPUT, iou_threshold, pad_to_max_output_size=True
    )
    tv = torchvision.ops.nms(torch.tensor(yxyx_to_xyxy(boxes)), torch.tensor(scores), iou_threshold).numpy()[
        :MAX_OUTPUT
    ]
    msg = f"seed {seed}, threshold {iou_threshold}"
    np.testing.assert_array_equal(_selected(got), tf_greedy, err_msg=msg)
    np.testing.assert_array_equal(_selected(got), tv, err_msg=msg)
    np.testing.assert_array_equal(_selected(got), tf_padded.numpy()[: int(tf_count)], err_msg=msg)
    # Padding: exactly MAX_OUTPUT rows, boxes/scores zeroed after the valid ones.
    count = int(np.sum(got.valid))
    np.testing.assert_array_equal(got.boxes[:count], boxes[tf_greedy])
    np.testing.assert_array_equal(got.scores[:count], scores[tf_greedy])
    assert not np.any(got.boxes[count:]) and not np.any(got.scores[count:])


@pytest.mark.parametrize("iou_threshold", THRESHOLDS)
def test_class_aware_matches_torchvision_batched_nms(iou_threshold):
    boxes, scores, rng = _case(SEEDS[-1])
    classes = rng.integers(0, 4, scores.shape).astype(np.int32)
    got = _nms(boxes, scores, max_output=200, iou_threshold=iou_threshold, classes=classes)
    ref = torchvision.ops.batched_nms(
        torch.tensor(yxyx_to_xyxy(boxes)), torch.tensor(scores), torch.tensor(classes), iou_threshold
    ).numpy()[:200]
    np.testing.assert_array_equal(_selected(got), ref, err_msg=f"seed {SEEDS[-1]}")


@pytest.mark.parametrize("tile_size", [1, 7, 32])
def test_small_tiles_and_validity_mask(tile_size):
    """Cross-tile suppression, padded (invalid) inputs, score threshold and K > N."""
    boxes, scores, rng = _case(SEEDS[-1], n=120)
    valid = rng.uniform(size=120) < 0.8
    got = _nms(boxes, scores, max_output=150, iou_threshold=0.5, valid=valid, score_threshold=0.2, tile_size=tile_size)
    keep = valid & (scores > 0.2)
    ref = tf.image.non_max_suppression(boxes[keep], scores[keep], 150, 0.5).numpy()
    np.testing.assert_array_equal(_selected(got), np.flatnonzero(keep)[ref])
    assert got.indices.shape == (150,) and not np.any(np.asarray(got.indices)[~np.asarray(got.valid)])


def test_batched_leading_dims_equal_per_image():
    boxes, scores, _ = _case(SEEDS[-1], n=100, lead=(2, 2))
    got = _nms(boxes, scores, max_output=40, iou_threshold=0.6)
    assert got.boxes.shape == (2, 2, 40, 4)
    vmapped = jax.jit(jax.vmap(jax.vmap(lambda b, s: non_max_suppression_padded(b, s, 40, 0.6))))(boxes, scores)
    for i in range(2):
        for j in range(2):
            ref = tf.image.non_max_suppression(boxes[i, j], scores[i, j], 40, 0.6).numpy()
            np.testing.assert_array_equal(_selected(jax.tree.map(lambda x: x[i, j], got)), ref)
            np.testing.assert_array_equal(_selected(jax.tree.map(lambda x: x[i, j], vmapped)), ref)


def test_large_input_matches_torchvision():
    """RPN-sized input (pre-NMS top-k 2000 -> 1000 proposals at IoU 0.7)."""
    rng = np.random.default_rng(SEEDS[-1])
    boxes = random_boxes(rng, 3000, canvas=512.0, max_size=120.0)
    scores = distinct_scores(rng, (3000,))
    got = _nms(boxes, scores, max_output=1000, iou_threshold=0.7)
    ref = torchvision.ops.nms(torch.tensor(yxyx_to_xyxy(boxes)), torch.tensor(scores), 0.7).numpy()
    np.testing.assert_array_equal(_selected(got), ref[:1000], err_msg=f"seed {SEEDS[-1]}")
