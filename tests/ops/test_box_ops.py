"""frozen_det.ops.boxes against torchvision (IoU, box coder) and hand-computed values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ops_test_utils import SEEDS, is_padding, over_seeds, random_boxes, yxyx_to_xyxy

from frozen_det.ops import boxes as B

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")


@over_seeds
def test_pairwise_iou_matches_torchvision(seed):
    rng = np.random.default_rng(seed)
    a = random_boxes(rng, 60, degenerate_fraction=0.2)
    b = random_boxes(rng, 45, degenerate_fraction=0.2)
    got = np.asarray(B.pairwise_iou(a, b))
    ref = torchvision.ops.box_iou(torch.tensor(yxyx_to_xyxy(a)), torch.tensor(yxyx_to_xyxy(b))).numpy()
    # torchvision gives NaN (0/0) for pairs of zero-area boxes; we document 0 there.
    both_empty = (np.asarray(B.area(a))[:, None] == 0) & (np.asarray(B.area(b))[None, :] == 0)
    assert np.all(np.isnan(ref[both_empty])) and np.all(got[both_empty] == 0)
    np.testing.assert_allclose(got[~both_empty], ref[~both_empty], atol=1e-5, err_msg=f"seed {seed}")
    assert (got > 0).sum() > 20  # the random boxes do overlap


def test_pairwise_iou_masks_padding_and_batches():
    a = np.array([[[0, 0, 10, 10], [-1, -1, -1, -1]]], np.float32)
    b = np.array([[[0, 0, 10, 5], [5, 5, 15, 15], [-1, -1, -1, -1]]], np.float32)
    valid_a, valid_b = ~is_padding(a), ~is_padding(b)
    iou = np.asarray(B.pairwise_iou(a, b, valid_a, valid_b))
    np.testing.assert_allclose(iou[0, 0], [0.5, 25 / 175, -1.0], rtol=1e-6)
    np.testing.assert_array_equal(iou[0, 1], [-1, -1, -1])
    zero_fill = np.asarray(B.pairwise_iou(a, b, valid_a, valid_b, invalid_value=0.0))
    assert zero_fill[0, 1].max() == 0 and zero_fill[0, 0, 2] == 0


def test_area_and_clip():
    boxes = np.array([[-5, 2, 30, 8], [4, 9, 2, 12]], np.float32)  # second one inverted
    np.testing.assert_allclose(B.area(boxes), [35 * 6, 0])
    np.testing.assert_allclose(B.clip_boxes(boxes, (20, 10)), [[0, 2, 20, 8], [4, 9, 2, 10]])
    per_image = B.clip_boxes(np.stack([boxes, boxes]), np.array([[20, 10], [25, 7]], np.float32))
    np.testing.assert_allclose(per_image[1], [[0, 2, 25, 7], [4, 7, 2, 7]])


def test_encode_by_hand():
    anchor = np.array([0, 0, 10, 10], np.float32)
    box = np.array([5, 5, 25, 15], np.float32)  # centre (15, 10), size (20, 10)
    np.testing.assert_allclose(B.encode_boxes(box, anchor), [1.0, 0.5, math.log(2), 0.0], atol=1e-6)
    np.testing.assert_allclose(
        B.encode_boxes(box, anchor, B.FRCNN_WEIGHTS), [10.0, 5.0, 5 * math.log(2), 0.0], atol=1e-5
    )
    # Zero-size (padded) boxes stay finite thanks to the epsilon.
    assert np.all(np.isfinite(B.encode_boxes(np.zeros(4, np.float32), anchor)))


@pytest.mark.parametrize("weights", [None, (1, 1, 1, 1), *B.CASCADE_WEIGHTS])
def test_box_coder_matches_torchvision(weights):
    from torchvision.models.detection._utils import BoxCoder

    rng = np.random.default_rng(SEEDS[-1])
    anchors = random_boxes(rng, 50, degenerate_fraction=0.0)
    gt = random_boxes(rng, 50, degenerate_fraction=0.0)
    coder = BoxCoder(weights or (1.0, 1.0, 1.0, 1.0), bbox_xform_clip=B.BBOX_XFORM_CLIP)
    ref = coder.encode_single(torch.tensor(yxyx_to_xyxy(gt)), torch.tensor(yxyx_to_xyxy(anchors)))
    deltas = np.asarray(B.encode_boxes(gt, anchors, weights))
    np.testing.assert_allclose(deltas, ref.numpy()[:, [1, 0, 3, 2]], rtol=1e-4, atol=1e-4)
    decoded = np.asarray(B.decode_boxes(deltas, anchors, weights))
    np.testing.assert_allclose(decoded, gt, atol=1e-3)
    # Decoding arbitrary deltas (including huge log-scales, which are clipped) agrees too.
    wild = (rng.normal(0, 3, (50, 4)) * np.asarray(weights or (1, 1, 1, 1))).astype(np.float32)
    ref_dec = coder.decode_single(torch.tensor(wild[:, [1, 0, 3, 2]]), torch.tensor(yxyx_to_xyxy(anchors)))
    np.testing.assert_allclose(
        B.decode_boxes(wild, anchors, weights), ref_dec.numpy()[:, [1, 0, 3, 2]], rtol=1e-4, atol=1e-3
    )


def test_decode_clips_log_scale():
    anchor = np.array([0, 0, 16, 16], np.float32)
    out = np.asarray(B.decode_boxes(np.array([0, 0, 50.0, 50.0], np.float32), anchor))
    np.testing.assert_allclose(out, [8 - 500, 8 - 500, 8 + 500, 8 + 500], rtol=1e-5)


def test_jit_vmap_and_gradients():
    rng = np.random.default_rng(SEEDS[-1])
    a, b = random_boxes(rng, 10, lead=(2,)), random_boxes(rng, 8, lead=(2,))
    batched = jax.jit(B.pairwise_iou)(a, b)
    mapped = jax.vmap(B.pairwise_iou)(a, b)
    np.testing.assert_allclose(batched, mapped)
    grad = jax.jit(jax.grad(lambda x: jnp.sum(B.pairwise_iou(x, b[0]))))(a[0])
    assert np.all(np.isfinite(grad))
