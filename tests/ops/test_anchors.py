"""Anchor counts and values against the reference's formula (docs/reference.md §2.4)."""

import math

import numpy as np
import pytest

from frozen_det.ops.anchors import multilevel_anchors


@pytest.mark.parametrize(
    "size, min_level, max_level, expected",
    [
        (1024, 2, 6, 261_888),
        (1024, 3, 7, 65_472),
        (1280, 2, 6, 409_200),
        (1280, 3, 7, 102_300),
    ],
)
def test_anchor_counts_of_paper_canvases(size, min_level, max_level, expected):
    anchors = multilevel_anchors((size, size), min_level, max_level)
    assert anchors.num_anchors == expected
    assert anchors.boxes.shape == (expected, 4) and anchors.boxes.dtype == np.float32
    assert sum(anchors.counts.values()) == expected
    assert all(isinstance(c, int) for c in anchors.counts.values())
    assert anchors.feature_sizes[min_level] == (size // 2**min_level,) * 2


def test_first_anchors_by_hand():
    anchors = multilevel_anchors((1024, 1024), 2, 6)
    r = math.sqrt(2.0)
    # Level 2: stride 4, centre (2, 2), side 8 * 4 = 32; aspect ratios 0.5, 1, 2 (= w / h).
    expected_l2 = [
        [2 - 16 * r, 2 - 16 / r, 2 + 16 * r, 2 + 16 / r],  # ar 0.5: tall
        [2 - 16, 2 - 16, 2 + 16, 2 + 16],
        [2 - 16 / r, 2 - 16 * r, 2 + 16 / r, 2 + 16 * r],  # ar 2: wide
    ]
    np.testing.assert_allclose(anchors.boxes[:3], expected_l2, rtol=1e-6)
    # Next location in the row: x centre 6.
    np.testing.assert_allclose(anchors.boxes[4], [-14, -10, 18, 22], rtol=1e-6)
    # Second row starts after 256 locations: y centre 6.
    np.testing.assert_allclose(anchors.boxes[256 * 3 + 1], [-10, -14, 22, 18], rtol=1e-6)
    # Level 3 starts after 256 * 256 * 3 anchors: centre 4, side 64.
    np.testing.assert_allclose(anchors.boxes[256 * 256 * 3 + 1], [-28, -28, 36, 36], rtol=1e-6)
    # Last anchor: level 6 (stride 64, 16 x 16), bottom-right, ar 2, side 512.
    c = 15.5 * 64
    np.testing.assert_allclose(anchors.boxes[-1], [c - 256 / r, c - 256 * r, c + 256 / r, c + 256 * r], rtol=1e-6)


def test_scale_major_order_and_non_square_canvas():
    anchors = multilevel_anchors((256, 384), 3, 4, num_scales=3, aspect_ratios=(1.0, 2.0, 0.5), anchor_size=4.0)
    assert anchors.num_anchors_per_location == 9
    assert anchors.feature_sizes == {3: (32, 48), 4: (16, 24)}
    first = anchors.per_level[3][0, 0]  # [9, 4] at centre (4, 4)
    heights = first[:, 2] - first[:, 0]
    widths = first[:, 3] - first[:, 1]
    base = 32.0 * 2.0 ** (np.arange(3) / 3)
    np.testing.assert_allclose(np.sqrt(heights * widths), np.repeat(base, 3), rtol=1e-5)
    np.testing.assert_allclose((widths / heights)[:3], [1.0, 2.0, 0.5], rtol=1e-5)
    np.testing.assert_allclose(anchors.per_level[3][1, 2, 0, :2] + 16, [12, 20])  # row-major


def test_split_levels_inverts_concatenation():
    anchors = multilevel_anchors((128, 128), 2, 4)
    per_level = anchors.split_levels(anchors.boxes)
    for level in anchors.levels:
        np.testing.assert_array_equal(per_level[level], anchors.per_level[level])
    batched = anchors.split_levels(np.stack([anchors.boxes[:, 0]] * 2), axis=1)
    assert batched[3].shape == (2, 16, 16, 3)
