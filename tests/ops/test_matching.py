"""IoU-band matching: hand-made cases and a loop-based re-implementation of force matching."""

import jax
import numpy as np
from ops_test_utils import over_seeds

from frozen_det.ops import matching as M

P, N, I, INV = M.POSITIVE, M.NEGATIVE, M.IGNORE, M.INVALID


def test_rpn_bands_and_force_match():
    iou = np.array(
        [
            [0.10, 0.20, -1.0],  # best 0.2 < 0.3 -> negative
            [0.30, 0.10, -1.0],  # best in [0.3, 0.7) -> ignore
            [0.69, 0.70, -1.0],  # best 0.7 -> positive (gt 1), but see below
            [0.50, 0.65, -1.0],  # ignore
            [0.55, 0.00, -1.0],  # ignore
        ],
        np.float32,
    )
    m = M.rpn_match(iou, gt_valid=np.array([True, True, False]))
    # Row 2 is the best anchor of both gt 0 (0.69) and gt 1 (0.70); force matching assigns it to
    # the lower index, gt 0, although its own best is gt 1. The padded gt 2 forces nothing.
    np.testing.assert_array_equal(m.labels, [N, I, P, I, I])
    np.testing.assert_array_equal(m.matched_gt, [-1, -1, 0, -1, -1])


def test_force_match_makes_low_iou_positive_and_ties_pick_first():
    iou = np.array([[0.05, 0.0], [0.10, 0.0], [0.10, 0.0]], np.float32)
    m = M.rpn_match(iou, gt_valid=np.array([True, True]))
    # gt 0 forces row 1 (first of the tie); gt 1 (all zeros) forces row 0.
    np.testing.assert_array_equal(m.labels, [P, P, N])
    np.testing.assert_array_equal(m.matched_gt, [1, 0, -1])


def test_roi_bands_invalid_and_strict():
    iou = np.array([[0.49, 0.1], [0.5, 0.0], [0.6, 0.2], [-1.0, -1.0], [0.0, 0.0]], np.float32)
    m = M.roi_match(iou)
    np.testing.assert_array_equal(m.labels, [N, P, P, INV, N])
    strict = M.roi_match(iou, foreground_from=0.6, strict_foreground=True)
    np.testing.assert_array_equal(strict.labels, [N, I, I, INV, N])  # [0.5, 0.6] ignored
    cascade = M.roi_match(iou, foreground_from=0.7, background_below=0.7)
    np.testing.assert_array_equal(cascade.labels, [N, N, N, INV, N])


def _force_match_loop(iou, gt_valid, low, high):
    """Straightforward per-anchor / per-gt loops of the reference's ArgMax/BoxMatcher rule."""
    n, m = iou.shape
    labels = np.where(iou.max(1) >= high, P, np.where(iou.max(1) < low, N, I))
    matched = np.where(labels == P, iou.argmax(1), -1)
    forced_by = {}
    for g in range(m):
        if gt_valid[g]:
            best = int(np.argmax(iou[:, g]))
            forced_by.setdefault(best, g)  # the lowest gt index wins
    for a, g in forced_by.items():
        labels[a], matched[a] = P, g
    return labels, matched


@over_seeds
def test_force_match_against_loops(seed):
    rng = np.random.default_rng(seed)
    iou = rng.uniform(0, 0.8, (300, 12)).astype(np.float32)
    iou[:, -3:] = -1.0
    iou[rng.integers(0, 300, 40), rng.integers(0, 9, 40)] = 0.79  # shared best anchors
    gt_valid = np.arange(12) < 9
    m = jax.jit(M.rpn_match)(iou, gt_valid)
    labels, matched = _force_match_loop(iou, gt_valid, 0.3, 0.7)
    np.testing.assert_array_equal(m.labels, labels, err_msg=f"seed {seed}")
    np.testing.assert_array_equal(m.matched_gt, matched, err_msg=f"seed {seed}")


def test_batched_match_and_gather():
    iou = np.array([[[0.8, 0.1], [0.2, 0.1]], [[0.1, 0.9], [0.6, 0.4]]], np.float32)
    m = M.roi_match(iou)
    np.testing.assert_array_equal(m.matched_gt, [[0, -1], [1, 0]])
    gt_boxes = np.arange(16, dtype=np.float32).reshape(2, 2, 4)
    out = np.asarray(M.gather_matched(gt_boxes, m.matched_gt))
    np.testing.assert_array_equal(out[0], [gt_boxes[0, 0], np.zeros(4)])
    np.testing.assert_array_equal(out[1], [gt_boxes[1, 1], gt_boxes[1, 0]])
    classes = np.array([[3, 4], [5, 6]])
    np.testing.assert_array_equal(M.gather_matched(classes, m.matched_gt), [[3, 0], [6, 5]])
    vm = jax.vmap(M.roi_match)(iou)
    np.testing.assert_array_equal(vm.labels, m.labels)
