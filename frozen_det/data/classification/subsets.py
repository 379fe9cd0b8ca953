"""Subsets and label sets of a classification source (`config.data.subset`, `data.labels`):
fewer images per class, fewer classes (at random, under or without given taxonomy nodes), a
fixed image budget spread over the kept classes, coarser labels from a taxonomy level (Huh et
al. 2016, secs. 4-5; frozen_det.data.classification.taxonomy).

Selections are functions of the split's labels and `subset.seed` only, so every process and
every resumption draws the same subset, and they are nested: the classes kept for k come first
in one seeded order of all classes, and a class's images kept for a fraction f come first in
one seeded order of its images, so a 25% subset lies inside the 50% one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Sequence

import numpy as np

from frozen_det.data.classification import taxonomy as taxonomy_lib


@dataclasses.dataclass(frozen=True)
class LabelSet:
    """The training labels of a classification run: which source classes are kept and the
    training label of each (fine source class id -> label id, -1 for dropped classes)."""

    kept: tuple  # source class ids kept, ascending
    label_of: np.ndarray  # int32 [num source classes]
    names: tuple  # label names, by label id

    @property
    def num_labels(self) -> int:
        return len(self.names)


def load_taxonomy(name: str, class_names) -> taxonomy_lib.Taxonomy | None:
    """`data.taxonomy`: "" (none), "imagenet1k", "fashion_mnist" or a table file
    (tools/build_imagenet_taxonomy.py's format)."""
    if not name:
        return None
    if name == "imagenet1k":
        return taxonomy_lib.imagenet1k()
    if name == "fashion_mnist":
        return taxonomy_lib.fashion_mnist()
    return taxonomy_lib.Taxonomy.from_table(name)


def _leaf_ids(taxonomy, class_names) -> list:
    """The taxonomy leaf of each source class: by position when the counts agree (ImageNet's
    label order), else by name."""
    if taxonomy is None:
        return list(class_names)
    if len(taxonomy.leaves) == len(class_names):
        return list(taxonomy.leaves)
    missing = [n for n in class_names if n not in taxonomy.paths]
    if missing:
        raise ValueError(f"config.data.taxonomy: the classes {missing[:5]} are not leaves of the taxonomy")
    return list(class_names)


def kept_classes(subset, class_names, taxonomy) -> tuple:
    """Source class ids kept by `subset.classes`, `under`, `remove_under`, then `num_classes`."""
    leaves = _leaf_ids(taxonomy, class_names)
    keep = np.ones(len(class_names), bool)
    if subset.classes:
        wanted = set(subset.classes)
        unknown = wanted - set(class_names) - set(leaves)
        if unknown:
            raise ValueError(f"config.data.subset.classes: {sorted(unknown)} are not classes of the source")
        keep &= np.array([n in wanted or leaf in wanted for n, leaf in zip(class_names, leaves)])
    for field, wanted in (("under", True), ("remove_under", False)):
        nodes = subset[field]
        if not nodes:
            continue
        if taxonomy is None:
            raise ValueError(f"config.data.subset.{field} needs config.data.taxonomy")
        below = set(taxonomy.under(nodes))
        keep &= np.array([(leaf in below) == wanted for leaf in leaves])
    ids = np.flatnonzero(keep)
    if subset.num_classes:
        if subset.num_classes > len(ids):
            raise ValueError(
                f"config.data.subset.num_classes={subset.num_classes}: only {len(ids)} classes to choose from"
            )
        order = np.random.default_rng([subset.seed, 1]).permutation(len(class_names))
        chosen = [c for c in order if keep[c]][: subset.num_classes]
        ids = np.sort(np.asarray(chosen, np.int64))
    if not len(ids):
        raise ValueError("config.data.subset keeps no class")
    return tuple(int(c) for c in ids)


LABEL_KINDS_HINT = "'fine', 'merged:K', 'bottom_up:N', 'top_down:D' or 'top_down_lifted:K'"


def merged_labels(kept: Sequence[int], class_names, num_labels: int, seed: int) -> dict:
    """{class name: its label's name}: the kept classes in `num_labels` groups of nearly equal
    size, drawn by `seed`, every image kept. Fewer classes without fewer images (Huh et al. sec.
    5.2 merge classes over all of ImageNet; keeping only K of the classes would also drop the
    other classes' images, so the class count and the image count would change together)."""
    if not 1 <= num_labels <= len(kept):
        raise ValueError(f"config.data.labels='merged:{num_labels}': between 1 and the {len(kept)} kept classes")
    order = np.random.default_rng(seed).permutation(np.asarray(kept))
    out = {}
    for group in np.array_split(order, num_labels):
        name = "+".join(class_names[c] for c in sorted(group))
        out.update({class_names[c]: name for c in group})
    return out


def label_set(cfg, class_names) -> LabelSet:
    """The kept classes and their training labels (`data.labels`: "fine", "merged:K" (the kept
    classes in K random groups, `merged_labels`), "bottom_up:N" (the
    N-th bottom-up label set, 0 = the leaves), "top_down:D" (ancestors at depth D),
    "top_down_lifted:K" (K rounds of lifting labels to their parents and merging: the paper's
    top-down sets, Taxonomy.top_down_lifted))."""
    taxonomy = load_taxonomy(cfg.taxonomy, class_names)
    kept = kept_classes(cfg.subset, class_names, taxonomy)
    leaves = _leaf_ids(taxonomy, class_names)
    kind, _, arg = cfg.labels.partition(":")
    if kind == "fine":
        node_of = {leaves[c]: leaves[c] for c in kept}
    elif kind == "merged":
        merged = merged_labels(kept, class_names, int(arg), cfg.subset.seed)
        node_of = {leaves[c]: merged[class_names[c]] for c in kept}
    else:
        if taxonomy is None:
            raise ValueError(f"config.data.labels={cfg.labels!r} needs config.data.taxonomy")
        sub = taxonomy_lib.Taxonomy({leaves[c]: taxonomy.paths[leaves[c]] for c in kept}, taxonomy.names)
        if kind == "bottom_up":
            sets = sub.bottom_up()
            if not 0 <= int(arg) < len(sets):
                raise ValueError(f"config.data.labels={cfg.labels!r}: the kept classes have {len(sets)} bottom-up sets")
            node_of = sets[int(arg)]
        elif kind == "top_down":
            node_of = sub.top_down(int(arg))
        elif kind == "top_down_lifted":
            node_of = sub.top_down_lifted(int(arg))
        else:
            raise ValueError(f"config.data.labels={cfg.labels!r}: use {LABEL_KINDS_HINT}")
    index, nodes = taxonomy_lib.label_map(node_of, [leaves[c] for c in kept])
    label_of = np.full(len(class_names), -1, np.int32)
    label_of[list(kept)] = index
    if kind == "fine":
        names = tuple(class_names[c] for c in kept)
    elif kind == "merged":
        names = tuple(nodes)
    else:
        names = tuple(taxonomy.name(node) for node in nodes)
    return LabelSet(kept, label_of, names)


@functools.lru_cache(maxsize=32)
def _cached_label_set(cfg_json: str, class_names: tuple) -> LabelSet:
    from frozen_det.data.classification.config import complete

    return label_set(complete(json.loads(cfg_json)), class_names)


def source_label_set(cfg, source) -> LabelSet:
    """The run's label set over a source's classes (cached per data config)."""
    return _cached_label_set(cfg.to_json(), tuple(source.info.class_names))


def select(labels: np.ndarray, subset, kept: tuple, train: bool) -> np.ndarray | None:
    """Indices (ascending) of the records kept: those of kept classes and, in training, each
    class's first `images_per_class` (a fraction in (0, 1] or a count) in a seeded order, or an
    even share of `image_budget`. None: every record."""
    labels = np.asarray(labels)
    all_classes = len(kept) == int(labels.max()) + 1 if len(labels) else True
    per_class = subset.images_per_class
    if train and subset.image_budget:
        per_class = subset.image_budget // len(kept)
    if all_classes and not (train and per_class):
        return None
    chosen = []
    for c in kept:
        members = np.flatnonzero(labels == c)
        if train and per_class:
            order = members[np.random.default_rng([subset.seed, 2, c]).permutation(len(members))]
            count = math.ceil(per_class * len(members)) if per_class <= 1 else int(per_class)
            if count > len(members):
                raise ValueError(f"config.data.subset: {count} images of class {c} asked for, it has {len(members)}")
            members = order[:count]
        chosen.append(members)
    return np.sort(np.concatenate(chosen))
