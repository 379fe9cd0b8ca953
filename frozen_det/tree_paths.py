"""Paths of pytree leaves and the regex rules over them: one convention for the whole package.

A leaf's path is its '/'-joined key path, e.g. 'backbone/stage1/block0/conv1/kernel' inside
`params`, or 'params/backbone/stem/conv/kernel' over a whole variables dict. Every rule
(freezing, `train.trainable_only`, sharding rules, checkpoint key maps) is
a Python regex applied with `re.search`: unanchored patterns match anywhere in the path, anchor
them with `^` / `$` to match from the start or to the end.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Mapping

import jax
import numpy as np
from flax import traverse_util


def flatten(tree: Mapping[str, Any]) -> dict[str, Any]:
    """{path: leaf} of a nested dict."""
    return {"/".join(k): v for k, v in traverse_util.flatten_dict(dict(tree)).items()}


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of `flatten`."""
    return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def leaf_paths(tree: Mapping[str, Any]) -> list[str]:
    return list(flatten(tree))


def key_path_string(path) -> str:
    """A `jax.tree_util` key path (dict keys, attribute names, sequence indices) as a '/' path,
    for pytrees that are not plain nested dicts (train states, optimizer states)."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
    return "/".join(parts)


def matches_any(path: str, patterns: Iterable[str]) -> bool:
    return any(re.search(p, path) for p in patterns)


def first_match(path: str, rules: Iterable[tuple[str, Any]]) -> Any:
    """The value of the first (pattern, value) rule whose pattern matches `path`, else None."""
    return next((value for pattern, value in rules if re.search(pattern, path)), None)


def unmatched_patterns(paths: Iterable[str], patterns: Iterable[str]) -> list[str]:
    """The patterns that match none of `paths` (a rule that selects nothing is usually a typo)."""
    paths = list(paths)
    return [p for p in patterns if not any(re.search(p, path) for path in paths)]


def map_paths(tree: Mapping[str, Any], fn: Callable[[str, Any], Any]) -> dict[str, Any]:
    """A tree of the same structure with fn(path, leaf) at each leaf."""
    return unflatten({k: fn(k, v) for k, v in flatten(tree).items()})


def count_elements(tree: Any) -> int:
    return int(sum(x.size for x in jax.tree.leaves(tree)))


def overlay(ours: dict, theirs: dict, exclude=()) -> tuple[dict, dict]:
    """(`ours` with every leaf that `theirs` has at the same path and shape, unless its path
    matches an `exclude` rule; a report of the paths restored, excluded, whose shape differs,
    not in `theirs`, and of `theirs` unused). Leaves keep `ours`' dtype (and device placement)."""
    theirs_flat = flatten(theirs)
    report = {"restored": [], "excluded": [], "shape_differs": [], "not_in_source": []}

    def take(path, leaf):
        if matches_any(path, exclude):
            report["excluded"].append(path)
            return leaf
        if path not in theirs_flat:
            report["not_in_source"].append(path)
            return leaf
        value = theirs_flat[path]
        if tuple(np.shape(value)) != tuple(np.shape(leaf)):
            report["shape_differs"].append(f"{path}: source {tuple(np.shape(value))} vs {tuple(np.shape(leaf))}")
            return leaf
        report["restored"].append(path)
        value = np.asarray(value, leaf.dtype)
        return jax.device_put(value, leaf.sharding) if isinstance(leaf, jax.Array) else value

    out = map_paths(ours, take)
    ours_paths = set(flatten(ours))
    report["unused_from_source"] = sorted(p for p in theirs_flat if p not in ours_paths)
    return out, report
