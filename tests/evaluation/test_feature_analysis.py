"""Feature-space analyses (frozen_det.evaluation.feature_analysis): co-membership of a constructed
embedding and a coarsening of it is asymmetric as expected; mask-out maps find the evidence."""

import numpy as np
import pytest

from frozen_det.evaluation.feature_analysis import activation_map, co_membership, co_membership_of_labels, mask_out_map

pytest.importorskip("sklearn")


def test_co_membership_of_an_embedding_and_its_coarsening():
    """Space A: 12 tight fine clusters; space B: the same points where pairs of fine clusters
    coincide (6 coarse clusters). Same-cluster pairs of A are always together in B; pairs of B
    are together in A about half the time."""
    rng = np.random.default_rng(0)
    fine = np.repeat(np.arange(12), 50)
    centres = rng.normal(size=(12, 8)) * 10
    a = centres[fine] + rng.normal(size=(600, 8)) * 0.1
    b = centres[(fine // 2) * 2][:] + rng.normal(size=(600, 8)) * 0.1  # fine clusters 2k and 2k+1 merged
    result = co_membership(a, b, num_clusters=12, num_clusters_b=6, num_pairs=4000)
    assert result["a_in_b"] > 0.95 and 0.4 < result["b_in_a"] < 0.6, result
    exact = co_membership_of_labels(fine, fine // 2, num_pairs=20000)
    assert exact["a_in_b"] == 1.0
    assert exact["b_in_a"] == pytest.approx(49 / 99, abs=0.02)  # of a coarse pair, P(same fine cluster)


def test_mask_out_map_finds_the_evidence_and_activation_map_range():
    image = np.zeros((16, 16, 3), np.float32)
    image[4:8, 10:14] = 1.0  # the only evidence for class 1

    def probability(images):
        evidence = images[:, 4:8, 10:14].mean(axis=(1, 2, 3))
        return np.stack([1 - evidence * 0.9, evidence * 0.9], axis=1)

    heat = mask_out_map(probability, image, label=1, patch=4, stride=2)
    y, x = np.unravel_index(np.argmax(heat), heat.shape)
    assert 4 <= 2 * y < 8 and 10 <= 2 * x < 14 and heat.max() == 1.0 and heat[0, 0] == 0.0
    m = activation_map(np.random.default_rng(1).normal(size=(5, 7, 3)))
    assert m.shape == (5, 7) and m.min() == 0.0 and m.max() == 1.0
