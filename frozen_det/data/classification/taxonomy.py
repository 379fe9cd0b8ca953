"""Class taxonomies: a tree over a dataset's leaf classes, and the label sets and class subsets
of Huh, Agrawal, Efros, "What makes ImageNet good for transfer learning?" (arXiv:1608.08614):

* bottom-up label sets (sec. 5.1): repeatedly replace the classes at the deepest level of the
  tree by their parents (merging siblings), from the leaves up to the root;
* top-down label sets (sec. 5.1): every class labelled by its ancestor at a fixed depth
  (`top_down`), or, as the paper's sets come about, every label lifted one level at a time and
  merged into any label above it (`top_down_lifted`);
* minimal splits (sec. 6): classes grouped by their ancestor at depth d, the largest group
  against the rest, so that no class of one split shares an ancestor down to depth d with
  the other;
* removal of every class under given hypernyms (sec. 5.6, "PASCAL-removed ImageNet").

Depth counts from the root (WordNet's "entity", depth 0). A WordNet synset can have several
hypernyms; by default each class follows, from synset to synset, the hypernym whose canonical
name ("dog.n.01": first lemma, lower case, sense number) sorts first, the order in which nltk 3.2
lists hypernyms. With it WordNet 3.0 gives every ImageNet-1k label-set size of the paper: the 18
bottom-up sets (999, 977, 918, 877, 820, 753, 694, 596, 486, 345, 206, 79, 36, 17, 9, 5, 2, 1
classes), the top-down 127 / 10 / 2 (`top_down_lifted`) and the 522 / 478 minimal split at depth
4. Of the 112 rules tools/search_huh_taxonomy.py tries (docs/results/huh_taxonomy_search.json)
only this one does ("@" pointers alone or with "@i" alike): each class on its longest hypernym
path (`from_wordnet(..., path="longest")`, the previous default) gives 918 but 750 / 467 / 76 / 8,
and 132 / 7 / 2. `read_wordnet_nouns` parses WordNet 3.0's `data.noun` (the format of wndb(5WN);
Debian package `wordnet-base`, /usr/share/wordnet); `imagenet1k()` reads the shipped ImageNet-1k
table (frozen_det/data/classification/imagenet1k_taxonomy.json, built by
tools/build_imagenet_taxonomy.py), so users need no WordNet install.
"""

from __future__ import annotations

import collections
import json
import os
from typing import Iterable, Mapping, Sequence

WORDNET_DIR = "/usr/share/wordnet"
IMAGENET1K_TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "imagenet1k_taxonomy.json")
PATH_RULES = ("first_by_name", "longest")  # Taxonomy.from_wordnet's choices of a class's hypernym path

# Fashion-MNIST's natural hierarchy: four groups of its ten classes (tops, trousers, footwear,
# bags) under one root. Node ids are the names.
FASHION_MNIST_GROUPS = {
    "tops": ("T-shirt/top", "Pullover", "Dress", "Coat", "Shirt"),
    "trousers": ("Trouser",),
    "footwear": ("Sandal", "Sneaker", "Ankle boot"),
    "bags": ("Bag",),
}


def read_wordnet_nouns(directory: str = WORDNET_DIR, pointers: Sequence[str] = ("@", "@i")) -> tuple[dict, dict]:
    """({wnid: [hypernym wnids]}, {wnid: first lemma}) of every noun synset of a WordNet 3.0
    `data.noun`; a wnid is "n" + the synset's 8-digit offset (ImageNet's ids). Hypernyms are the
    `pointers` to nouns ("@" hypernym, "@i" instance hypernym), in file order."""
    path = os.path.join(directory, "data.noun")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"WordNet 3.0 not found ({path} is missing): install the Debian package wordnet-base, or use "
            "the shipped ImageNet-1k table (frozen_det.data.classification.taxonomy.imagenet1k())."
        )
    hypernyms, names = {}, {}
    with open(path) as f:
        for line in f:
            if line.startswith("  "):  # the licence header
                continue
            fields = line.split(" | ")[0].split()
            offset, num_words = fields[0], int(fields[3], 16)
            words = fields[4 : 4 + 2 * num_words : 2]
            at = 4 + 2 * num_words
            links = fields[at + 1 : at + 1 + 4 * int(fields[at])]  # (symbol, offset, pos, source/target) each
            wnid = "n" + offset
            hypernyms[wnid] = [
                "n" + links[k + 1] for k in range(0, len(links), 4) if links[k] in pointers and links[k + 2] == "n"
            ]
            names[wnid] = words[0]
    return hypernyms, names


def read_synset_names(first_lemmas: Mapping[str, str], directory: str = WORDNET_DIR) -> dict:
    """{wnid: canonical name} for the synsets of `first_lemmas` ({wnid: first lemma}): the
    lemma in lower case and the synset's sense number among that lemma's noun senses in WordNet
    3.0's `index.noun`, e.g. "dog.n.01" (nltk's synset names)."""
    senses = {}
    with open(os.path.join(directory, "index.noun")) as f:
        for line in f:
            if line.startswith("  "):  # the licence header
                continue
            fields = line.split()  # lemma, pos, synset count, pointer count, pointers..., 2 counts, offsets...
            lemma, num_pointers = fields[0], int(fields[3])
            for number, offset in enumerate(fields[6 + num_pointers :], 1):
                senses[lemma, "n" + offset] = number
    return {wnid: f"{lemma.lower()}.n.{senses[lemma.lower(), wnid]:02d}" for wnid, lemma in first_lemmas.items()}


def first_hypernym_path(wnid: str, hypernyms: Mapping[str, Sequence[str]]) -> tuple:
    """The path from the root to `wnid` through each synset's first hypernym."""
    path = [wnid]
    while hypernyms.get(path[-1]):
        path.append(hypernyms[path[-1]][0])
    return tuple(path[::-1])


def sorted_by_name(hypernyms: Mapping[str, Sequence[str]], synset_names: Mapping[str, str]) -> dict:
    """`hypernyms` with each synset's list in the order of the canonical names (`read_synset_names`):
    nltk 3.2's order (its `Synset.hypernyms()` sorts them; later versions leave them unordered),
    with which the paper's label sets come out of WordNet 3.0 (module docstring)."""
    return {wnid: sorted(parents, key=synset_names.__getitem__) for wnid, parents in hypernyms.items()}


def longest_path(wnid: str, hypernyms: Mapping[str, Sequence[str]]) -> tuple:
    """The longest hypernym path from the root to `wnid` (ties: the first in pointer order)."""
    memo: dict = {}

    def walk(node):
        if node not in memo:
            parents = hypernyms.get(node, ())
            best = ()
            for parent in parents:
                candidate = walk(parent)
                if len(candidate) > len(best):
                    best = candidate
            memo[node] = best + (node,)
        return memo[node]

    return walk(wnid)


class Taxonomy:
    """A tree over leaf classes: `paths[leaf]` is the root-to-leaf node sequence (the leaf
    last); `names` gives node names. Leaves keep their order (the dataset's label order)."""

    def __init__(self, paths: Mapping[str, Sequence[str]], names: Mapping[str, str] | None = None):
        self.paths = {leaf: tuple(path) for leaf, path in paths.items()}
        for leaf, path in self.paths.items():
            if not path or path[-1] != leaf:
                raise ValueError(f"taxonomy: the path of {leaf!r} must end at it, got {path}")
        self.leaves = tuple(self.paths)
        self.names = dict(names or {})

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_wordnet(
        cls, wnids: Iterable[str], directory: str = WORDNET_DIR, path: str = "first_by_name"
    ) -> "Taxonomy":
        """The tree of WordNet 3.0 over `wnids`, each on its `path` to the root: "first_by_name"
        (each synset's hypernym whose canonical name sorts first: the paper's label sets, module
        docstring) or "longest" (its longest hypernym path; ties: the first in file order)."""
        if path not in PATH_RULES:
            raise ValueError(f"taxonomy path rule {path!r}: use one of {PATH_RULES}")
        hypernyms, names = read_wordnet_nouns(directory)
        wnids = list(wnids)
        unknown = [w for w in wnids if w not in hypernyms]
        if unknown:
            raise ValueError(f"not WordNet 3.0 noun synsets: {unknown[:5]}")
        if path == "longest":
            return cls({w: longest_path(w, hypernyms) for w in wnids}, names)
        hypernyms = sorted_by_name(hypernyms, read_synset_names(names, directory))
        return cls({w: first_hypernym_path(w, hypernyms) for w in wnids}, names)

    @classmethod
    def from_groups(cls, groups: Mapping[str, Sequence[str]], order: Sequence[str], root: str = "root") -> "Taxonomy":
        """A two-level tree, root -> group -> leaf (e.g. FASHION_MNIST_GROUPS), over the leaves
        in `order` (the dataset's label order)."""
        group_of = {leaf: group for group, leaves in groups.items() for leaf in leaves}
        missing = [leaf for leaf in order if leaf not in group_of]
        if missing:
            raise ValueError(f"taxonomy groups miss the classes {missing}")
        return cls({leaf: (root, group_of[leaf], leaf) for leaf in order})

    @classmethod
    def from_table(cls, path: str = IMAGENET1K_TABLE) -> "Taxonomy":
        """From a table of classes (label, wnid) and the tree's `parents` (tools/build_imagenet_taxonomy.py)."""
        with open(path) as f:
            table = json.load(f)
        parents = table["parents"]

        def path_to(node):
            path = [node]
            while path[-1] in parents:
                path.append(parents[path[-1]])
            return path[::-1]

        classes = sorted(table["classes"], key=lambda c: c["label"])
        return cls({c["wnid"]: path_to(c["wnid"]) for c in classes}, table["names"])

    # ------------------------------------------------------------------ the tree

    def name(self, node: str) -> str:
        return self.names.get(node, node)

    def depth(self, leaf: str) -> int:
        return len(self.paths[leaf]) - 1

    def ancestor(self, leaf: str, depth: int) -> str:
        """The leaf's ancestor at `depth` (the leaf itself when it is shallower)."""
        path = self.paths[leaf]
        return path[min(depth, len(path) - 1)]

    def groups_at(self, depth: int) -> dict:
        """{ancestor at `depth`: [leaves]} (in leaf order)."""
        groups = collections.defaultdict(list)
        for leaf in self.leaves:
            groups[self.ancestor(leaf, depth)].append(leaf)
        return dict(groups)

    # ------------------------------------------------------------------ label sets

    def bottom_up(self) -> list[dict]:
        """The bottom-up label sets, finest first: [{leaf: its label node}, ...] from the leaves
        (every leaf its own label) to the root; each step lifts the labels at the deepest level
        to their parents."""
        current = {leaf: path for leaf, path in self.paths.items()}
        sets = [{leaf: path[-1] for leaf, path in current.items()}]
        while max(len(p) for p in current.values()) > 1:
            deepest = max(len(p) for p in current.values())
            current = {leaf: (p[:-1] if len(p) == deepest else p) for leaf, p in current.items()}
            labels = {leaf: p[-1] for leaf, p in current.items()}
            if len(set(labels.values())) != len(set(sets[-1].values())):
                sets.append(labels)
        return sets

    def top_down(self, depth: int) -> dict:
        """{leaf: its ancestor at `depth`} (a leaf shallower than `depth` keeps itself)."""
        return {leaf: self.ancestor(leaf, depth) for leaf in self.leaves}

    def top_down_lifted(self, steps: int) -> dict:
        """{leaf: its label} after `steps` rounds of: every label moves to its parent, then to
        the highest of its ancestors that is also a label (so that no label lies under another);
        a label at the root stays. The paper's top-down sets (sec. 5.1) come about so: 127 / 10 / 2
        labels for ImageNet-1k at 1 / 2 / 3 steps, which no fixed depth from the root gives."""
        label_depth = {leaf: len(path) - 1 for leaf, path in self.paths.items()}
        for _ in range(steps):
            label_depth = {leaf: max(depth - 1, 0) for leaf, depth in label_depth.items()}
            labels = {self.paths[leaf][depth] for leaf, depth in label_depth.items()}
            label_depth = {
                leaf: next(d for d, node in enumerate(self.paths[leaf]) if node in labels) for leaf in label_depth
            }
        return {leaf: self.paths[leaf][depth] for leaf, depth in label_depth.items()}

    def minimal_split(self, depth: int) -> tuple[list, list]:
        """(split A, split B): A = the largest group of leaves sharing an ancestor at `depth`,
        B = every other leaf; no class of A shares an ancestor down to `depth` with one of B."""
        groups = self.groups_at(depth)
        largest = max(groups, key=lambda node: len(groups[node]))
        a = groups[largest]
        return a, [leaf for leaf in self.leaves if leaf not in set(a)]

    def under(self, hypernyms: Iterable[str]) -> list:
        """The leaves below (or equal to) any of `hypernyms`."""
        hypernyms = set(hypernyms)
        return [leaf for leaf in self.leaves if hypernyms & set(self.paths[leaf])]

    def without(self, hypernyms: Iterable[str]) -> list:
        """The leaves below none of `hypernyms` (e.g. ImageNet without PASCAL's classes)."""
        removed = set(self.under(hypernyms))
        return [leaf for leaf in self.leaves if leaf not in removed]


def label_map(labels: Mapping[str, str], leaves: Sequence[str]) -> tuple[list, list]:
    """(label index of each of `leaves`, the label names in first-seen order) for a label set
    `{leaf: label node}`."""
    order: dict = {}
    for leaf in leaves:
        order.setdefault(labels[leaf], len(order))
    return [order[labels[leaf]] for leaf in leaves], list(order)


def imagenet1k() -> Taxonomy:
    """ImageNet-1k's 1000 classes (TFDS imagenet2012 label order) in WordNet 3.0, from the
    shipped table."""
    return Taxonomy.from_table(IMAGENET1K_TABLE)


def fashion_mnist() -> Taxonomy:
    """Fashion-MNIST's ten classes (label order) in four groups: tops, trousers, footwear, bags."""
    from frozen_det.data.offline import fashion_mnist as fmnist

    return Taxonomy.from_groups(FASHION_MNIST_GROUPS, fmnist.CLASSES)


def imagenet1k_class_names() -> list:
    """ImageNet-1k's class names (WordNet lemma) in TFDS imagenet2012 label order."""
    with open(IMAGENET1K_TABLE) as f:
        return [c["name"] for c in json.load(f)["classes"]]
