"""Path rules on parameter pytrees: which leaves train, which are frozen, which get weight decay,
how they shard. One mechanism for freezing, adapters, classifier-only fine-tuning (LVIS second
stage) and sharding rules (DESIGN.md "The freeze switch").

A path is the '/'-joined key path of a leaf, e.g. 'backbone/stage1/block0/conv1/kernel'. Rules
are regexes applied with `re.match` (anchor them with ^/$ as needed).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
from flax import traverse_util


def leaf_paths(tree: Mapping[str, Any]) -> list[str]:
    return ["/".join(k) for k in traverse_util.flatten_dict(dict(tree))]


def flatten(tree: Mapping[str, Any]) -> dict[str, Any]:
    """{path: leaf} of a nested dict."""
    return {"/".join(k): v for k, v in traverse_util.flatten_dict(dict(tree)).items()}


def _unflat(flat: Mapping[str, Any]) -> dict[str, Any]:
    return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def matches_any(path: str, patterns: Iterable[str]) -> bool:
    return any(re.match(p, path) for p in patterns)


def map_paths(tree: Mapping[str, Any], fn: Callable[[str, Any], Any]) -> dict[str, Any]:
    """A tree of the same structure with fn(path, leaf) at each leaf."""
    return _unflat({k: fn(k, v) for k, v in flatten(tree).items()})


def trainable_mask(params: Mapping[str, Any], *, frozen: Sequence[str] = (),
                   trainable_only: Sequence[str] | None = None) -> dict[str, Any]:
    """Bool tree: True where a parameter trains.

    `frozen`: patterns of frozen leaves (e.g. a backbone's `frozen_param_patterns`).
    `trainable_only`: if given, everything *not* matching these patterns is frozen too
    (classifier-only fine-tuning: `trainable_only=[r".*/cls_logits/"]`).
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
        raise ValueError("mask does not have the structure of the tree it splits: "
                         f"{sorted(set(flat) ^ set(flat_mask))[:10]}")
    yes = {k: v for k, v in flat.items() if flat_mask[k]}
    no = {k: v for k, v in flat.items() if not flat_mask[k]}
    return _unflat(yes), _unflat(no)


def merge(*trees: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of `split`: the union of disjoint partial trees."""
    out: dict[str, Any] = {}
    for t in trees:
        flat = flatten(t)
        overlap = set(flat) & set(out)
        if overlap:
            raise ValueError(f"trees to merge overlap at {sorted(overlap)[:10]}")
        out.update(flat)
    return _unflat(out)


def count_params(tree: Mapping[str, Any]) -> int:
    return int(sum(x.size for x in jax.tree.leaves(tree)))


def decay_mask(params: Mapping[str, Any]) -> dict[str, Any]:
    """Weight decay on kernels only: no biases, no BN scales (reference/tfmg.md 2.12)."""
    return map_paths(params, lambda path, _: path.endswith("/kernel") or path == "kernel")
