"""Comparing two feature spaces of the same images (Li et al., "An analysis of pre-training on
object detection", secs. 4.3-4.4): k-means co-membership, and where in an image a model looks
(activation maps, mask-out maps).

* `co_membership`: cluster each space with k-means; among random pairs of images that share a
  cluster in space A, the fraction that also share one in space B, and the reverse (Fig. 6:
  similar in the detection space -> likely similar in the classification space, not the
  reverse). For B a coarsening of A the first is 1 and the second is below 1.
* `activation_map`: a feature map's mean over channels, min-max normalised.
* `mask_out_map`: the drop in a class's probability when a blank square hides each region
  (Zeiler & Fergus occlusion), normalised to [0, 1].
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def kmeans_labels(features: np.ndarray, num_clusters: int, seed: int = 0) -> np.ndarray:
    from sklearn.cluster import KMeans

    return KMeans(num_clusters, n_init=4, random_state=seed).fit_predict(np.asarray(features, np.float64))


def co_membership_of_labels(
    labels_a: np.ndarray, labels_b: np.ndarray, num_pairs: int = 100_000, seed: int = 0
) -> dict:
    """{"a_in_b": P(same cluster in B | same in A), "b_in_a": the reverse}, over random pairs of
    distinct items drawn within the clusters of the conditioning space (as the paper samples)."""
    rng = np.random.default_rng(seed)
    labels_a, labels_b = np.asarray(labels_a), np.asarray(labels_b)

    def within(condition, other):
        groups = [np.flatnonzero(condition == c) for c in np.unique(condition)]
        groups = [g for g in groups if len(g) > 1]
        sizes = np.array([len(g) * (len(g) - 1) for g in groups], np.float64)
        picks = rng.choice(
            len(groups), size=num_pairs, p=sizes / sizes.sum()
        )  # pairs uniformly over same-cluster pairs
        hits = 0
        for k in picks:
            i, j = rng.choice(groups[k], size=2, replace=False)
            hits += other[i] == other[j]
        return hits / num_pairs

    return {"a_in_b": float(within(labels_a, labels_b)), "b_in_a": float(within(labels_b, labels_a))}


def co_membership(
    features_a: np.ndarray,
    features_b: np.ndarray,
    num_clusters: int,
    num_pairs: int = 100_000,
    seed: int = 0,
    num_clusters_b: int | None = None,
) -> dict:
    """k-means with `num_clusters` in both spaces (the paper's protocol, over several k), or
    `num_clusters_b` in space B."""
    labels_b = kmeans_labels(features_b, num_clusters_b or num_clusters, seed)
    return co_membership_of_labels(kmeans_labels(features_a, num_clusters, seed), labels_b, num_pairs, seed)


def activation_map(feature_map: np.ndarray) -> np.ndarray:
    """[H, W, C] -> [H, W] in [0, 1]: the channels' mean, min-max normalised."""
    m = np.asarray(feature_map, np.float64).mean(axis=-1)
    return (m - m.min()) / max(m.max() - m.min(), 1e-12)


def mask_out_map(
    probability_fn: Callable, image: np.ndarray, label: int, patch: int, stride: int, fill: float = 0.0
) -> np.ndarray:
    """[ceil(H / stride), ceil(W / stride)] in [0, 1]: how much the probability of `label` drops
    when a `patch` x `patch` square of `fill` (0: the mean colour of a normalised image) covers
    each position. `probability_fn(images [N, H, W, 3]) -> [N, classes]`."""
    image = np.asarray(image, np.float32)
    h, w = image.shape[:2]
    base = float(np.asarray(probability_fn(image[None]))[0, label])
    rows, cols = range(0, h, stride), range(0, w, stride)
    masked = []
    for y in rows:
        for x in cols:
            m = image.copy()
            m[max(0, y - patch // 2) : y + patch - patch // 2, max(0, x - patch // 2) : x + patch - patch // 2] = fill
            masked.append(m)
    probs = np.asarray(probability_fn(np.stack(masked)))[:, label]
    drop = np.maximum(base - probs, 0.0).reshape(len(rows), len(cols))
    return drop / max(drop.max(), 1e-12)
