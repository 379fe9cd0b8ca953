"""frozen_det.evaluation.box_similarity: pairs, statistics, and the similarity-vs-IoU path on a
feature function with a known answer (numpy only; cheap)."""

import numpy as np
import pytest

from frozen_det.evaluation import box_similarity as bs

SHAPE = (64, 64)


@pytest.fixture(scope="module")
def pairs():
    refs = bs.random_boxes(0, num_images=3, per_image=3, image_shape=SHAPE, min_side=0.2, max_side=0.5)
    return bs.box_pairs(1, refs, SHAPE)


def test_pair_ious_equal_torchvision_and_cover_the_bins(pairs):
    torch = pytest.importorskip("torch")
    ops = pytest.importorskip("torchvision.ops")
    b1, b2 = torch.tensor(pairs["boxes1"][:, [1, 0, 3, 2]]), torch.tensor(pairs["boxes2"][:, [1, 0, 3, 2]])
    expected = ops.box_iou(b1, b2).diagonal().numpy()
    np.testing.assert_allclose(pairs["iou"], expected, atol=1e-5)
    counts = np.bincount(pairs["bin"], minlength=len(bs.IOU_BINS) - 1)
    assert np.all(counts >= 5), counts  # 9 references, every bin reached by most of them
    assert counts.max() <= 9
    assert np.all((pairs["iou"] >= 0.05) & (pairs["iou"] <= 0.95))
    inside = (pairs["boxes2"] >= 0) & (pairs["boxes2"] <= SHAPE[0])
    assert inside.all()


def test_pairs_are_seeded(pairs):
    refs = bs.random_boxes(0, num_images=3, per_image=3, image_shape=SHAPE, min_side=0.2, max_side=0.5)
    again = bs.box_pairs(1, refs, SHAPE)
    np.testing.assert_array_equal(again["boxes2"], pairs["boxes2"])


def test_correlations_equal_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x = rng.uniform(size=50)
    y = x + rng.normal(scale=0.3, size=50)
    y[:5] = y[5]  # ties
    assert bs.pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert bs.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
    out = bs.statistics(x, y, np.full(50, 0.2))
    assert out["medium"]["pairs"] == out["all"]["pairs"] == 50 and out["small"]["pairs"] == 0
    assert out["all"]["spearman"] == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)


def test_pixel_mean_of_a_smooth_image_correlates_with_iou(pairs):
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]].astype(np.float32)
    image = np.stack([yy * 4, xx * 4, np.full_like(yy, 40.0)], axis=-1)  # smooth, channels differ
    images = np.stack([image] * 3)

    def mean_in_box(images, boxes):  # [B, K, 3]: each box's pixel mean
        out = np.zeros(boxes.shape[:2] + (3,), np.float32)
        for b in range(boxes.shape[0]):
            for k, (y0, x0, y1, x1) in enumerate(np.round(boxes[b]).astype(int)):
                out[b, k] = images[b, y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)].mean(axis=(0, 1))
        return out

    result = bs.similarity_vs_iou(mean_in_box, images, pairs, batch_size=2)
    assert result["num_pairs"] == len(pairs["iou"])
    assert not np.any(np.isnan(result["per_pair"]["similarity"]))
    assert result["all"]["pearson"] > 0.3 and result["all"]["spearman"] > 0.3
    means = [m for m in result["all"]["mean_similarity_per_bin"] if m is not None]
    assert means[-1] > means[0]
