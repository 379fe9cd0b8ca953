"""k-shot subsampling of a split (the low-data settings of PreDet, Ramanathan et al. ICCV 2021, and
DAP, Zhong et al. CVPR 2021)."""

from __future__ import annotations

import numpy as np


def kshot_select(record_classes: list, k: int, seed: int = 0) -> np.ndarray:
    """Indices of a subset in which every class appears in at least ``k`` images (all of its
    images when it has fewer), chosen greedily in a seeded random order: an image is taken
    when one of its classes still has fewer than ``k`` images. Images may bring other classes
    along, so some classes end with more than ``k`` (the usual few-shot detection protocol).
    Returned sorted, so the selection does not depend on the order of the split."""
    if k <= 0:
        raise ValueError(f"config.data.kshot={k}: must be positive")
    order = np.random.default_rng(seed).permutation(len(record_classes))
    counts: dict = {}
    chosen = []
    for i in order:
        classes = record_classes[i]
        if any(counts.get(c, 0) < k for c in classes):
            chosen.append(i)
            for c in classes:
                counts[c] = counts.get(c, 0) + 1
    return np.sort(np.asarray(chosen, np.int64))
