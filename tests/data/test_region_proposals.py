"""The simplified selective search (PreDet's unsupervised query source) and its proposal cache."""

import numpy as np
import pytest

from frozen_det.data.two_view import proposals as R
from frozen_det.ops.boxes import pairwise_iou

RECTS = np.array([[20, 30, 90, 110], [140, 40, 230, 100], [60, 150, 200, 240]], np.float64)


def scene(seed=0, size=256):
    """Three flat-coloured rectangles on a noisy grey background."""
    rng = np.random.default_rng(seed)
    image = (110 + rng.integers(0, 25, (size, size, 3))).astype(np.uint8)
    for box, colour in zip(RECTS.astype(int), [(220, 40, 40), (40, 200, 60), (40, 60, 220)]):
        image[box[0] : box[2], box[1] : box[3]] = colour
    return image


def iou(a, b):
    return np.asarray(pairwise_iou(np.asarray(a, np.float32), np.asarray(b, np.float32)))


@pytest.fixture(scope="module")
def proposals():
    return R.selective_search(scene(), max_boxes=100)


def test_bounds_size_and_recall(proposals):
    boxes = proposals
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and 0 < len(boxes) <= 100
    assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= 256).all() and (boxes[:, [1, 3]] <= 256).all()
    assert (boxes[:, 2] - boxes[:, 0] >= 8).all() and (boxes[:, 3] - boxes[:, 1] >= 8).all()
    assert len(np.unique(boxes, axis=0)) == len(boxes)
    assert iou(boxes, boxes)[~np.eye(len(boxes), dtype=bool)].max() <= 0.7 + 1e-6  # NMS
    # Every flat rectangle is found (up to the segmentation's smoothed borders).
    assert (iou(boxes, RECTS).max(0) > 0.8).all(), iou(boxes, RECTS).max(0)


def test_deterministic_and_seeded(proposals):
    np.testing.assert_array_equal(R.selective_search(scene(), max_boxes=100), proposals)
    other = R.selective_search(scene(), max_boxes=100, seed=1)
    assert not np.array_equal(other, proposals)  # the ranking's random factors


def test_hierarchical_grouping_merges_most_similar_first():
    # Four vertical stripes: 0 and 1 share a colour; 2 and 3 differ from everything.
    labels = np.repeat(np.repeat(np.arange(4)[None], 8, axis=0), 4, axis=1)  # [8, 16]
    image = np.zeros((8, 16, 3), np.uint8)
    image[:, :8] = (200, 0, 0)
    image[:, 8:12] = (0, 200, 0)
    image[:, 12:] = (0, 0, 200)
    boxes = R.hierarchical_grouping(labels, image)
    assert boxes.shape == (7, 4)
    np.testing.assert_array_equal(boxes[:4], [[0, 4 * i, 8, 4 * i + 4] for i in range(4)])
    np.testing.assert_array_equal(boxes[4], [0, 0, 8, 8])  # first merge: the identical stripes
    np.testing.assert_array_equal(boxes[-1], [0, 0, 8, 16])  # last: the whole image


def test_grey_and_bad_images():
    grey = scene()[..., 0]
    assert len(R.selective_search(grey, scales=(100.0,), max_boxes=10)) > 0
    with pytest.raises(ValueError, match="uint8"):
        R.selective_search(np.zeros((8, 8, 3), np.float32))


def test_cache_round_trip_and_incremental(tmp_path, monkeypatch):
    path = str(tmp_path / "proposals.npz")
    data = {7: np.arange(12, dtype=np.float32).reshape(3, 4), 3: np.zeros((0, 4), np.float32), 11: np.ones((1, 4))}
    R.save_proposals(path, data)
    back = R.load_proposals(path)
    assert list(back) == [7, 3, 11] and all(isinstance(k, int) for k in back)
    for k in data:
        np.testing.assert_array_equal(back[k], data[k])
        assert back[k].dtype == np.float32
    R.save_proposals(path, {"a/b.jpg": data[7], "c": data[3]})
    assert list(R.load_proposals(path)) == ["a/b.jpg", "c"]
    with pytest.raises(ValueError, match="all ints or all strings"):
        R.save_proposals(path, {1: data[7], "x": data[7]})

    calls = []
    fake = lambda image, **kw: calls.append(kw) or np.full((2, 4), float(image[0, 0, 0]), np.float32)
    monkeypatch.setattr(R, "selective_search", fake)
    path = str(tmp_path / "cache.npz")
    images = [(i, np.full((4, 4, 3), i, np.uint8)) for i in range(3)]
    first = R.cache_proposals(path, images, max_boxes=5)
    assert len(calls) == 3 and calls[0] == {"max_boxes": 5}
    again = R.cache_proposals(path, images + [(9, np.full((4, 4, 3), 9, np.uint8))])
    assert len(calls) == 4  # only the new image computed
    assert sorted(again) == [0, 1, 2, 9] and again[9][0, 0] == 9
    for k in first:
        np.testing.assert_array_equal(again[k], first[k])
