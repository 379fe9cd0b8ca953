"""The trainable / frozen partition of a parameter tree: one mechanism for freezing, adapters
and classifier-only fine-tuning (the LVIS second stage), by path rules (frozen_det.tree_paths:
regexes applied with `re.search`). docs/architecture.md, "The freeze switch".
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from frozen_det.tree_paths import flatten, map_paths, matches_any, unflatten


def trainable_mask(
    params: Mapping[str, Any], *, frozen: Sequence[str] = (), trainable_only: Sequence[str] | None = None
) -> dict[str, Any]:
    """Bool tree: True where a parameter trains.

    `frozen`: patterns of frozen leaves (e.g. a backbone's `frozen_param_patterns`).
    `trainable_only`: if given, everything *not* matching these patterns is frozen too
    (classifier-only fine-tuning: `trainable_only=[r"/class_logits/"]`).
    """

    def is_trainable(path, _):
        if matches_any(path, frozen):
            return False
        return trainable_only is None or matches_any(path, trainable_only)

    return map_paths(params, is_trainable)


def split(tree: Mapping[str, Any], mask: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(leaves where mask is True, the others), each a nested dict holding only its leaves."""
    flat, flat_mask = flatten(tree), flatten(mask)
    if set(flat) != set(flat_mask):
        raise ValueError(
            f"mask does not have the structure of the tree it splits: {sorted(set(flat) ^ set(flat_mask))[:10]}"
        )
    yes = {k: v for k, v in flat.items() if flat_mask[k]}
    no = {k: v for k, v in flat.items() if not flat_mask[k]}
    return unflatten(yes), unflatten(no)


def merge(*trees: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of `split`: the union of disjoint partial trees."""
    out: dict[str, Any] = {}
    for t in trees:
        flat = flatten(t)
        overlap = set(flat) & set(out)
        if overlap:
            raise ValueError(f"trees to merge overlap at {sorted(overlap)[:10]}")
        out.update(flat)
    return unflatten(out)


def decay_mask(params: Mapping[str, Any]) -> dict[str, Any]:
    """Weight decay on kernels only: no biases, no BN scales (docs/reference.md §2.13)."""
    return map_paths(params, lambda path, _: path.endswith("/kernel") or path == "kernel")
