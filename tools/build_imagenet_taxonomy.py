"""Builds frozen_det/data/classification/imagenet1k_taxonomy.json: ImageNet-1k's 1000 classes with their
WordNet 3.0 hypernym paths, so that users of frozen_det.data.classification.taxonomy need no WordNet install.

    python tools/build_imagenet_taxonomy.py [--wordnet /usr/share/wordnet] [--output PATH]

Sources (written into the file): the class order and WordNet ids are TFDS imagenet2012's
label list (tensorflow_datasets/datasets/imagenet2012/labels.txt, the ILSVRC-2012 synsets in
the order of the "n01440764" ... sort); the hypernym paths and names come from WordNet 3.0's
data.noun (Debian package wordnet-base), each class's path to "entity" by
`Taxonomy.from_wordnet`'s default rule (the first hypernym by canonical name, which gives the
label sets of Huh et al. 2016: frozen_det/data/classification/taxonomy.py).
"""

from __future__ import annotations

import argparse
import json
import os

import tensorflow_datasets

from frozen_det.data.classification.taxonomy import IMAGENET1K_TABLE, WORDNET_DIR, Taxonomy

LABELS = os.path.join(os.path.dirname(tensorflow_datasets.__file__), "datasets", "imagenet2012", "labels.txt")


def build(wordnet: str = WORDNET_DIR) -> dict:
    with open(LABELS) as f:
        wnids = f.read().split()
    tax = Taxonomy.from_wordnet(wnids, wordnet)
    # Each synset keeps one hypernym, whichever class's path it is on: the paths form a tree.
    parents = {child: parent for path in tax.paths.values() for parent, child in zip(path[:-1], path[1:])}
    nodes = sorted(set(parents) | set(parents.values()))
    return {
        "about": (
            "ImageNet-1k (ILSVRC-2012) classes in WordNet 3.0. label / wnid: TFDS imagenet2012's "
            "labels.txt (class order of tfds.load('imagenet2012')); parents: each node's hypernym in "
            "WordNet 3.0 data.noun ('@' and '@i' pointers) whose canonical name ('dog.n.01': first lemma, "
            "lower case, sense number in index.noun) sorts first, on the path from a class to 'entity'; "
            "names: each node's first lemma. Built by tools/build_imagenet_taxonomy.py."
        ),
        "classes": [{"label": i, "wnid": w, "name": tax.name(w)} for i, w in enumerate(wnids)],
        "parents": {node: parents[node] for node in nodes if node in parents},
        "names": {node: tax.name(node) for node in nodes},
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wordnet", default=WORDNET_DIR)
    ap.add_argument("--output", default=IMAGENET1K_TABLE)
    args = ap.parse_args(argv)
    table = build(args.wordnet)
    with open(args.output, "w") as f:
        json.dump(table, f, separators=(",", ":"))
    print(f"wrote {args.output}: {len(table['classes'])} classes, {len(table['names'])} nodes")


if __name__ == "__main__":
    main()
