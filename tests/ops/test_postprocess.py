"""Second-stage post-processing (docs/reference.md §2.7 'v2') against per-class TF NMS loops."""

import jax
import numpy as np
import pytest
from ops_test_utils import over_seeds, random_boxes

from frozen_det.ops.boxes import decode_boxes
from frozen_det.ops.postprocess import detection_postprocess

tf = pytest.importorskip("tensorflow")
tf.config.set_visible_devices([], "GPU")

NUM_ROIS, NUM_CLASSES, CANVAS = 64, 6, (96.0, 128.0)
SETTINGS = dict(max_detections=20, pre_nms_top_k=40, score_threshold=0.05, iou_threshold=0.5)

_postprocess = jax.jit(
    lambda logits, deltas, rois, threshold: detection_postprocess(
        logits, deltas, rois, CANVAS, **{**SETTINGS, "score_threshold": threshold}
    ),
    static_argnums=3,
)


def _reference(logits, deltas, rois, score_threshold):
    """Loop version: softmax, decode + clip, then per foreground class top-k, threshold and
    tf.image.non_max_suppression; pool all classes and keep the best max_detections."""
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    class_specific = deltas.ndim == 3
    pooled = []
    for c in range(1, NUM_CLASSES):
        d = deltas[:, c] if class_specific else deltas
        boxes = np.asarray(decode_boxes(d, rois, (10.0, 10.0, 5.0, 5.0)))
        boxes = np.clip(boxes, 0, [CANVAS[0], CANVAS[1], CANVAS[0], CANVAS[1]])
        top = np.argsort(-probs[:, c])[: SETTINGS["pre_nms_top_k"]]
        top = top[probs[top, c] > score_threshold]
        keep = tf.image.non_max_suppression(
            boxes[top], probs[top, c], SETTINGS["max_detections"], SETTINGS["iou_threshold"]
        ).numpy()
        pooled += [(probs[i, c], c, boxes[i]) for i in top[keep]]
    pooled.sort(key=lambda t: -t[0])
    return pooled[: SETTINGS["max_detections"]]


def _case(seed, class_specific):
    rng = np.random.default_rng(seed)
    rois = random_boxes(rng, NUM_ROIS, canvas=96.0, max_size=40.0, degenerate_fraction=0.0, lead=(2,))
    logits = rng.normal(0, 2, (2, NUM_ROIS, NUM_CLASSES)).astype(np.float32)
    shape = (2, NUM_ROIS, NUM_CLASSES * 4) if class_specific else (2, NUM_ROIS, 4)
    deltas = rng.normal(0, 1, shape).astype(np.float32)
    return logits, deltas, rois


@over_seeds
@pytest.mark.parametrize("class_specific", [True, False])
@pytest.mark.parametrize("score_threshold", [0.05, 0.85])
def test_matches_per_class_tf_nms(seed, class_specific, score_threshold):
    logits, deltas, rois = _case(seed, class_specific)
    out = _postprocess(logits, deltas, rois, score_threshold)
    assert out.boxes.shape == (2, 20, 4) and out.classes.shape == (2, 20)
    for b in range(2):
        d = deltas[b].reshape(NUM_ROIS, NUM_CLASSES, 4) if class_specific else deltas[b]
        ref = _reference(logits[b], d, rois[b], score_threshold)
        n = len(ref)
        msg = f"seed {seed}, image {b}"
        assert int(out.num_detections[b]) == n, msg
        np.testing.assert_array_equal(out.valid[b], np.arange(20) < n, err_msg=msg)
        np.testing.assert_allclose(out.scores[b, :n], [r[0] for r in ref], rtol=1e-5, err_msg=msg)
        np.testing.assert_array_equal(out.classes[b, :n], [r[1] for r in ref], err_msg=msg)
        np.testing.assert_allclose(
            out.boxes[b, :n], np.reshape([r[2] for r in ref], (n, 4)), rtol=1e-4, atol=1e-3, err_msg=msg
        )
        assert not np.any(out.scores[b, n:]) and not np.any(out.classes[b, n:])
    if score_threshold == 0.85:
        assert int(out.num_detections.min()) < 20  # the padding path is exercised


def test_sigmoid_scores_for_sigmoid_trained_heads():
    """score_activation='sigmoid': each class's score is sigmoid(its logit), the background
    logit plays no part; softmax scores differ."""
    logits = np.array([[[5.0, 2.0, -1.0], [0.0, -3.0, 1.5]]], np.float32)  # 2 ROIs, bg + 2 classes
    rois = np.array([[[10, 10, 40, 40], [60, 60, 90, 100]]], np.float32)
    deltas = np.zeros((1, 2, 4), np.float32)
    kw = dict(max_detections=4, pre_nms_top_k=2, score_threshold=0.05, iou_threshold=0.5)
    out = detection_postprocess(logits, deltas, rois, (128, 128), score_activation="sigmoid", **kw)
    got = sorted(float(s) for s, v in zip(out.scores[0], out.valid[0]) if v)
    expected = sorted(float(1 / (1 + np.exp(-x))) for x in logits[0, :, 1:].ravel() if 1 / (1 + np.exp(-x)) > 0.05)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    shifted = logits.copy()
    shifted[..., 0] -= 10
    again = detection_postprocess(shifted, deltas, rois, (128, 128), score_activation="sigmoid", **kw)
    np.testing.assert_allclose(again.scores, out.scores)
    soft = detection_postprocess(logits, deltas, rois, (128, 128), **kw)
    assert not np.allclose(soft.scores, out.scores)
    with pytest.raises(ValueError, match="score_activation"):
        detection_postprocess(logits, deltas, rois, (128, 128), score_activation="tanh", **kw)
