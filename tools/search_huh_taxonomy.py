"""Searches the rules that build a tree over ImageNet-1k's classes from WordNet 3.0 for the one
that gives the label-set sizes of Huh, Agrawal, Efros, "What makes ImageNet good for transfer
learning?" (arXiv:1608.08614, sec. 5.1): bottom-up 918 / 753 / 486 / 79 / 9, top-down 127 / 10 / 2.
Prints the rules ranked and writes them, with every label-set size, to a JSON.

    python tools/search_huh_taxonomy.py [--wordnet /usr/share/wordnet] [--output PATH] [--top 20]

A rule combines
* the hypernym pointers followed: "@", or "@" and "@i" (instance hypernyms);
* the parent a synset keeps of several: the first or the last pointer in file order, the first by
  canonical name ("dog.n.01"; nltk 3.2's order), the one on the longest or the shortest path to
  the root, the one with the most or the fewest ImageNet-1k classes below it (ties: file order).
  A DAG (a node's depth = its longest or shortest distance to the root, no single path) has the
  levels of the longest or shortest rule: a node's distance is realised through one of its
  parents, one level up, which those rules keep (ties aside);
* whether internal nodes with a single child are collapsed before levels are counted;
* the bottom-up cut: by depth, the labels at the deepest level lifted to their parents
  (`Taxonomy.bottom_up`: these labels are every node at that depth, as the labels are the leaves
  of the tree cut so far), or by height: every class labelled by its highest ancestor at most k
  levels above the deepest class below it;
* the top-down cut: by depth, the ancestor at a fixed depth (a shallower class keeps its own
  label; `Taxonomy.top_down`), or lifted, every label lifted one level and merged into the highest
  label above it (`Taxonomy.top_down_lifted`).
A rule scores the number of the 8 target sizes it gives exactly, then the summed distance of its
closest sizes from the targets.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import sys
from collections.abc import Callable

from frozen_det.data.classification import taxonomy as T
from frozen_det.projects.provenance import commit

TARGETS = {"bottom_up": (918, 753, 486, 79, 9), "top_down": (127, 10, 2)}
POINTERS = {"@": ("@",), "@+@i": ("@", "@i")}
RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "results")


def distance_to_root(hypernyms: dict, pick) -> Callable[[str], int]:
    """node -> its longest (`pick` = max) or shortest (min) distance to a root."""
    memo = {}

    def distance(node):
        if node not in memo:
            parents = hypernyms.get(node)
            memo[node] = 1 + pick(distance(p) for p in parents) if parents else 0
        return memo[node]

    return distance


def classes_below(hypernyms: dict, classes) -> collections.Counter:
    """{synset: how many of `classes` lie below it (or are it), through any hypernyms}."""
    count = collections.Counter()
    for wnid in classes:
        seen, stack = {wnid}, [wnid]
        while stack:
            for parent in hypernyms.get(stack.pop(), ()):
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        count.update(seen)
    return count


def parent_orders(hypernyms: dict, synset_names: dict, classes) -> dict:
    """{rule: function(hypernyms) -> hypernyms with each list led by the parent the rule keeps}."""
    longest, shortest = distance_to_root(hypernyms, max), distance_to_root(hypernyms, min)
    below = classes_below(hypernyms, classes)

    def by(key):  # sorted() is stable: ties keep file order
        return lambda hyp: {wnid: sorted(parents, key=key) for wnid, parents in hyp.items()}

    return {
        "first": lambda hyp: hyp,
        "last": lambda hyp: {wnid: parents[::-1] for wnid, parents in hyp.items()},
        "first_by_name": lambda hyp: T.sorted_by_name(hyp, synset_names),
        "longest": by(lambda p: -longest(p)),
        "shortest": by(shortest),
        "most_classes": by(lambda p: -below[p]),
        "fewest_classes": by(below.__getitem__),
    }


def collapse_single_child_nodes(paths: dict) -> dict:
    """`paths` without the internal nodes (the root aside) that have a single child in the tree."""
    children = collections.defaultdict(set)
    for path in paths.values():
        for parent, child in zip(path, path[1:]):
            children[parent].add(child)
    return {leaf: (path[0], *(n for n in path[1:-1] if len(children[n]) > 1), leaf) for leaf, path in paths.items()}


def distinct(sizes) -> list:
    """`sizes` without repeats, in order."""
    return list(dict.fromkeys(sizes))


def bottom_up_by_depth(tax: T.Taxonomy) -> list:
    return [len(set(labels.values())) for labels in tax.bottom_up()]


def bottom_up_by_height(tax: T.Taxonomy) -> list:
    height = collections.defaultdict(int)  # a node's distance from the deepest class below it
    for path in tax.paths.values():
        for depth, node in enumerate(path):
            height[node] = max(height[node], len(path) - 1 - depth)
    paths = tax.paths.values()
    return distinct(
        len({next(node for node in path if height[node] <= k) for path in paths})
        for k in range(max(height.values()) + 1)
    )


def top_down_by_depth(tax: T.Taxonomy) -> list:
    return distinct(len(set(tax.top_down(d).values())) for d in range(max(map(len, tax.paths.values()))))


def top_down_lifted(tax: T.Taxonomy) -> list:
    roots = len({path[0] for path in tax.paths.values()})
    sizes = [len(tax.leaves)]  # then one size per step, until only the roots are labels
    while sizes[-1] > roots:
        sizes.append(len(set(tax.top_down_lifted(len(sizes)).values())))
    return distinct(sizes[1:])


BOTTOM_UP_CUTS = {"depth": bottom_up_by_depth, "height": bottom_up_by_height}
TOP_DOWN_CUTS = {"depth": top_down_by_depth, "lifted": top_down_lifted}


def score(sizes: dict) -> dict:
    """The size closest to each target, how many targets are hit exactly, the summed distance."""
    closest = {kind: {t: min(sizes[kind], key=lambda s: abs(s - t)) for t in TARGETS[kind]} for kind in TARGETS}
    misses = [abs(size - t) for kind in TARGETS for t, size in closest[kind].items()]
    return {"closest": closest, "exact": misses.count(0), "distance": sum(misses)}


def trees(wordnet: str, classes) -> dict:
    """{(pointers, parent rule, collapsed): Taxonomy} for every tree-building rule."""
    out = {}
    for pointers, symbols in POINTERS.items():
        hypernyms, names = T.read_wordnet_nouns(wordnet, symbols)
        synset_names = T.read_synset_names(names, wordnet)
        for parent, order in parent_orders(hypernyms, synset_names, classes).items():
            ordered = order(hypernyms)
            paths = {wnid: T.first_hypernym_path(wnid, ordered) for wnid in classes}
            out[pointers, parent, False] = T.Taxonomy(paths, names)
            out[pointers, parent, True] = T.Taxonomy(collapse_single_child_nodes(paths), names)
    return out


def search(wordnet: str) -> list:
    """Every rule with its label-set sizes and score, best first."""
    rows = []
    for (pointers, parent, collapsed), tax in trees(wordnet, T.imagenet1k().leaves).items():
        bottom_up = {cut: sizes(tax) for cut, sizes in BOTTOM_UP_CUTS.items()}
        top_down = {cut: sizes(tax) for cut, sizes in TOP_DOWN_CUTS.items()}
        for bottom_up_cut, top_down_cut in itertools.product(BOTTOM_UP_CUTS, TOP_DOWN_CUTS):
            sizes = {"bottom_up": bottom_up[bottom_up_cut], "top_down": top_down[top_down_cut]}
            rule = dict(pointers=pointers, parent=parent, collapsed=collapsed, bottom_up=bottom_up_cut)
            rows.append({"rule": dict(rule, top_down=top_down_cut), "sizes": sizes, **score(sizes)})
    return sorted(rows, key=lambda row: (-row["exact"], row["distance"]))


def table(rows: list) -> str:
    """The ranked rules as a Markdown table: each target's closest size (exact ones in bold)."""
    targets = [(kind, t) for kind in TARGETS for t in TARGETS[kind]]
    head = ["pointers", "parent", "collapsed", "bottom-up", "top-down", *(f"{k[0]}{t}" for k, t in targets)]
    lines = ["| " + " | ".join(head + ["exact", "distance"]) + " |", "|" + "---|" * (len(head) + 2)]
    for row in rows:
        closest = [row["closest"][kind][t] for kind, t in targets]
        cells = [
            *map(str, row["rule"].values()),
            *(f"**{c}**" if c == t else str(c) for c, (_, t) in zip(closest, targets)),
        ]
        lines.append("| " + " | ".join(cells + [f"{row['exact']}/8", str(row["distance"])]) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wordnet", default=T.WORDNET_DIR)
    ap.add_argument("--output", default=os.path.join(RESULTS, "huh_taxonomy_search.json"))
    ap.add_argument("--top", type=int, default=20, help="rows printed (the JSON has every rule)")
    args = ap.parse_args(argv)
    rows = search(args.wordnet)
    print(f"{len(rows)} rules; targets: bottom-up (b) {TARGETS['bottom_up']}, top-down (t) {TARGETS['top_down']}")
    print(table(rows[: args.top]))
    result = {
        "about": __doc__.split("\n\n")[0].replace("\n", " "),
        "command": " ".join(["python", "tools/search_huh_taxonomy.py", *(argv if argv is not None else sys.argv[1:])]),
        **commit(),
        "targets": TARGETS,
        "rules": rows,
    }
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
