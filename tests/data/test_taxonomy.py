"""Class taxonomies and subsets (frozen_det.data.classification.taxonomy, frozen_det.data.classification.subsets)
against WordNet 3.0 and the counts of Huh, Agrawal, Efros (2016): the shipped ImageNet-1k table
equals a fresh parse of WordNet and nltk's first hypernyms by name; its label sets have every
size of the paper (the 18 bottom-up sets, top-down 127 / 10 / 2) and its depth-4 minimal split is
the paper's 522 / 478; subsets are exact, nested and the same on every process and after a
resumption."""

import os
import shutil

import numpy as np
import pytest

from frozen_det.data import classification
from frozen_det.data.classification import taxonomy as T
from frozen_det.data.classification.config import complete
from frozen_det.data.classification.subsets import label_set, select
from frozen_det.data.offline import fashion_mnist

WORDNET = os.path.isfile(os.path.join(T.WORDNET_DIR, "data.noun"))
# The paper's 18 bottom-up label sets of ImageNet-1k (sec. 5.1: 918 / 753 / 486 / 79 / 9 among them).
PAPER_BOTTOM_UP = [999, 977, 918, 877, 820, 753, 694, 596, 486, 345, 206, 79, 36, 17, 9, 5, 2, 1]


def test_imagenet1k_label_sets_and_minimal_split():
    tax = T.imagenet1k()
    assert len(tax.leaves) == 1000 and tax.leaves[0] == "n01440764" and tax.name(tax.leaves[0]) == "tench"
    assert all(tax.paths[leaf][0] == "n00001740" for leaf in tax.leaves)  # entity
    sizes = [len(set(labels.values())) for labels in tax.bottom_up()]
    assert sizes == [1000, *PAPER_BOTTOM_UP]
    assert [len(set(tax.top_down_lifted(steps).values())) for steps in (1, 2, 3)] == [127, 10, 2]  # paper sec. 5.1
    names = [f"class{k}" for k in range(1000)]  # ImageNet's label order: leaves by position
    for labels, count in (("top_down_lifted:2", 10), ("bottom_up:12", 79)):  # the paths configs take
        cfg = complete(dict(source="tfds", name="imagenet2012", taxonomy="imagenet1k", labels=labels))
        assert len(label_set(cfg, names).names) == count, labels
    a, b = tax.minimal_split(4)  # paper sec. 6: 522 / 478
    assert (len(a), len(b)) == (522, 478)
    depth4 = {tax.ancestor(leaf, 4) for leaf in a}
    assert len(depth4) == 1 and not depth4 & {tax.ancestor(leaf, 4) for leaf in b}
    dogs = tax.under(["n02084071"])  # every dog class; and ImageNet without them
    assert len(dogs) > 100 and all("n02084071" in tax.paths[leaf] for leaf in dogs)
    rest = tax.without(["n02084071"])
    assert len(rest) + len(dogs) == 1000 and not set(rest) & set(dogs)


def test_top_down_lifted_merges_labels_under_labels():
    tax = T.Taxonomy({"a": ("r", "x", "y", "w", "a"), "b": ("r", "x", "y", "b"), "c": ("r", "z", "c")})
    assert tax.top_down_lifted(1) == {"a": "y", "b": "y", "c": "z"}  # a's label w lies under b's label y
    assert set(tax.top_down_lifted(2).values()) == {"r"}  # c's label reaches the root, which x lies under
    assert tax.top_down(2) == {"a": "y", "b": "y", "c": "c"}  # by depth, c keeps its own label


@pytest.mark.skipif(not WORDNET, reason="Debian package wordnet-base not installed")
def test_the_shipped_table_is_wordnet_and_the_longest_paths_miss_the_paper():
    tax = T.imagenet1k()
    assert T.Taxonomy.from_wordnet(tax.leaves).paths == tax.paths
    assert T.read_synset_names({w: tax.name(w) for w in ("n02084071", "n02083346")}) == {
        "n02084071": "dog.n.01",
        "n02083346": "canine.n.02",  # "canine" is first a tooth
    }
    longest = T.Taxonomy.from_wordnet(tax.leaves, path="longest")
    sizes = [len(set(labels.values())) for labels in longest.bottom_up()]
    # 918 but 750 / 467 / 76 / 8 where the paper has 753 / 486 / 79 / 9
    assert sizes == [1000, 999, 977, 918, 877, 819, 750, 679, 582, 467, 327, 193, 76, 32, 14, 8, 5, 2, 1]
    assert [len(set(longest.top_down_lifted(steps).values())) for steps in (1, 2, 3)] == [132, 7, 2]
    assert [len(part) for part in longest.minimal_split(4)] == [522, 478]


@pytest.mark.skipif(not WORDNET, reason="Debian package wordnet-base not installed")
def test_the_shipped_table_is_nltk(tmp_path):
    tax = T.imagenet1k()
    nltk = pytest.importorskip("nltk")
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    # nltk reads WordNet's database files; the Debian package lacks `lexnames`, which only maps
    # lexicographer file numbers to names (wndb(5WN)): write the 45 standard ones.
    for name in os.listdir(T.WORDNET_DIR):  # copies: nltk refuses paths that leave its data root
        if os.path.isfile(os.path.join(T.WORDNET_DIR, name)):
            shutil.copy(os.path.join(T.WORDNET_DIR, name), tmp_path / name)
    lexnames = (
        "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
        "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
        "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
        "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
        "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
        "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather "
        "adj.ppl"
    ).split()
    (tmp_path / "lexnames").write_text("".join(f"{i:02d}\t{n}\t0\n" for i, n in enumerate(lexnames)))
    nltk.data.path.append(str(tmp_path))

    class Reader(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):  # the Open Multilingual WordNet mapping: not used here
            return {}

    wordnet = Reader(str(tmp_path), None)
    for leaf in tax.leaves:
        path = [wordnet.synset_from_pos_and_offset("n", int(leaf[1:]))]
        while path[-1].hypernyms():  # nltk 3.2's first hypernym: they come sorted by name there, unordered now
            path.append(min(path[-1].hypernyms()))
        assert ["n%08d" % s.offset() for s in path[::-1]] == list(tax.paths[leaf]), leaf


def test_fashion_mnist_groups_and_label_sets():
    tax = T.fashion_mnist()
    assert tax.leaves == fashion_mnist.CLASSES
    assert [len(set(s.values())) for s in tax.bottom_up()] == [10, 4, 1]
    cfg = complete(dict(source="fashion_mnist", taxonomy="fashion_mnist", labels="bottom_up:1"))
    labels = label_set(cfg, list(fashion_mnist.CLASSES))
    assert labels.names == ("tops", "trousers", "footwear", "bags")
    np.testing.assert_array_equal(labels.label_of, [0, 1, 0, 0, 0, 2, 0, 2, 3, 2])
    cfg = complete(dict(source="fashion_mnist", taxonomy="fashion_mnist", subset=dict(under=("footwear",))))
    labels = label_set(cfg, list(fashion_mnist.CLASSES))
    assert labels.kept == (5, 7, 9) and labels.names == ("Sandal", "Sneaker", "Ankle boot")
    np.testing.assert_array_equal(labels.label_of, [-1, -1, -1, -1, -1, 0, -1, 1, -1, 2])


def test_subsets_are_exact_and_nested():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 5000)
    names = [str(c) for c in range(10)]
    kept = {}
    for fraction in (1.0, 0.5, 0.25, 0.1):
        cfg = complete(dict(source="fashion_mnist", subset=dict(images_per_class=fraction, seed=3)))
        chosen = select(labels, cfg.subset, label_set(cfg, names).kept, train=True)
        counts = np.bincount(labels[chosen], minlength=10)
        np.testing.assert_array_equal(counts, np.ceil(fraction * np.bincount(labels, minlength=10)))
        kept[fraction] = set(chosen.tolist())
    assert kept[0.1] <= kept[0.25] <= kept[0.5] <= kept[1.0]
    classes = {}
    for k in (10, 5, 2):
        cfg = complete(dict(source="fashion_mnist", subset=dict(num_classes=k, seed=3)))
        classes[k] = set(label_set(cfg, names).kept)
        assert len(classes[k]) == k
        chosen = select(labels, cfg.subset, tuple(sorted(classes[k])), train=False)  # None: every record
        assert set((labels if chosen is None else labels[chosen]).tolist()) == classes[k]  # eval: the same classes
    assert classes[2] <= classes[5] <= classes[10]
    cfg = complete(dict(source="fashion_mnist", subset=dict(num_classes=5, image_budget=1000, seed=3)))
    chosen = select(labels, cfg.subset, label_set(cfg, names).kept, train=True)
    np.testing.assert_array_equal(np.bincount(labels[chosen])[sorted(classes[5])], [200] * 5)


@pytest.mark.skipif(not fashion_mnist.available(), reason="Debian package dataset-fashion-mnist not installed")
def test_subsets_in_the_pipeline_are_the_same_on_every_process_and_after_resuming():
    cfg = dict(
        source="fashion_mnist",
        image_size=16,
        batch_size=8,
        crop_fraction=1.0,
        taxonomy="fashion_mnist",
        labels="bottom_up:1",
        subset=dict(images_per_class=0.01, num_classes=5, seed=1),
    )
    pipes = [classification.build_train_pipeline(cfg, process_index=p, process_count=2) for p in range(2)]
    assert pipes[0]._selected is not None and np.array_equal(pipes[0]._selected, pipes[1]._selected)
    assert len(pipes[0]._selected) == 5 * 60  # 1% of 6000 images of 5 classes
    shards = [set(p._shard_indices(0).tolist()) for p in pipes]
    assert not shards[0] & shards[1] and shards[0] | shards[1] == set(pipes[0]._selected.tolist())
    labels = label_set(pipes[0].config, list(fashion_mnist.CLASSES))
    assert pipes[0].info.class_names == list(labels.names)  # the coarse groups of the 5 classes kept
    batch = next(pipes[0])
    assert set(batch["fine_label"].tolist()) <= set(labels.kept)
    np.testing.assert_array_equal(batch["label"], labels.label_of[batch["fine_label"]])
    state = pipes[0].state()
    expected = next(pipes[0])
    again = classification.build_train_pipeline(cfg, process_index=0, process_count=2)
    again.restore(state)
    np.testing.assert_array_equal(next(again)["fine_label"], expected["fine_label"])
