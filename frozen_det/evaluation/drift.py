"""Weight drift: how far training moved a backbone from where it started, per stage (the
argument of Vasconcelos et al. 2022 sec. 3: fine-tuning moves the pre-trained backbone, freezing
keeps it; adapters move around it).

For a group of leaves (a backbone stage: every leaf under `backbone/stage{k}/`, or the stem),
the relative L2 distance ||w_t - w_0|| / ||w_0|| over the group's parameters concatenated, and
separately over its BatchNorm statistics. Frozen stages drift 0 exactly.
"""

from __future__ import annotations

import numpy as np

from frozen_det.tree_paths import flatten

BACKBONE_GROUPS = ("stem", "stage1", "stage2", "stage3", "stage4")


def group_of(path: str, prefix: str = "backbone/") -> str | None:
    """The backbone group of a params / batch_stats leaf path ('backbone/stage2/...'), else None."""
    if not path.startswith(prefix):
        return None
    head = path[len(prefix) :].split("/", 1)[0]
    return head if head in BACKBONE_GROUPS else None


def relative_distance(start: list, end: list) -> float:
    """||end - start|| / ||start|| over leaves concatenated (0 when both are empty)."""
    if not start:
        return 0.0
    diff = np.sqrt(
        sum(float(np.sum((np.asarray(b, np.float64) - np.asarray(a, np.float64)) ** 2)) for a, b in zip(start, end))
    )
    norm = np.sqrt(sum(float(np.sum(np.asarray(a, np.float64) ** 2)) for a in start))
    return float(diff / max(norm, 1e-12))


def weight_drift(initial: dict, current: dict) -> dict:
    """{group: {"params": drift, "batch_stats": drift}} of the backbone's groups, for two variables
    dicts ({"params": ..., "batch_stats": ...}) of the same model."""
    out = {}
    for collection in ("params", "batch_stats"):
        a, b = flatten(initial.get(collection, {})), flatten(current.get(collection, {}))
        for group in BACKBONE_GROUPS:
            paths = sorted(p for p in a if group_of(p) == group)
            if paths:
                out.setdefault(group, {})[collection] = relative_distance([a[p] for p in paths], [b[p] for p in paths])
    return out
