"""TFDS coco/2017, lvis and voc/2007 through the real builders, offline with
tfds.testing.mock_data and self-consistent fake examples (the default mock examples have
mismatched sequence lengths, docs/dependencies.md)."""

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from frozen_det.data import detection
from frozen_det.data.mock_tfds import as_dataset_fn, fake_examples
from frozen_det.data.source import DataError

N = 6


def _fake_examples(builder, split):
    return fake_examples(builder, split, N)


_as_dataset = as_dataset_fn(N)


def _cfg(name, masks):
    return ml_collections.ConfigDict(
        dict(
            source="tfds",
            name=name,
            canvas=64,
            batch_size=2,
            eval_batch_size=4,
            max_instances=4,
            with_masks=masks,
            mask_size=8,
            num_parallel_calls=1,
            canvas_masks=masks,
            train_split="train",
            eval_split="validation" if name != "voc/2007" else "test",
        )
    )


@pytest.mark.parametrize(
    "name,masks", [("coco/2017", False), ("lvis", True), ("voc/2007", False), ("open_images_v4", False)]
)
def test_tfds_source(name, masks):
    with tfds.testing.mock_data(as_dataset_fn=_as_dataset):
        cfg = _cfg(name, masks)
        train = detection.build_train_pipeline(cfg, process_index=0, process_count=1)
        info = train.source.info
        assert info.num_classes == {"coco/2017": 80, "lvis": 1203, "voc/2007": 20, "open_images_v4": 601}[name]
        if name == "coco/2017":
            assert info.category_ids[1] == 1 and info.category_ids[-1] == 90  # names: mocked metadata has none
        batches = [next(train) for _ in range(4)]  # crosses an epoch (6 images)
        for b in batches:
            assert b["image"].shape == (2, 64, 64, 3) and not b["is_crowd"].any()
            if masks:
                assert b["masks"].shape == (2, 4, 8, 8)
        state = train.state()
        nxt = next(train)
        again = detection.build_train_pipeline(cfg, process_index=0, process_count=1)
        again.restore(state)
        np.testing.assert_array_equal(next(again)["image"], nxt["image"])
        ev = detection.build_eval_pipeline(cfg, process_index=0, process_count=1)
        assert ev.num_examples == N
        evb = list(ev)
        assert len(evb) == 2 and evb[1]["example_valid"].tolist() == [True, True, False, False]
        gt = ev.source.coco_ground_truth(cfg.eval_split)
        assert len(gt["images"]) == N and len(gt["annotations"]) == 6
        ids = [b["image_id"][b["example_valid"]] for b in evb]
        expect = {"voc/2007": [2007000000 + i for i in range(6)], "open_images_v4": None}.get(
            name, list(range(100, 106))
        )
        if expect is None:  # Open Images: a fingerprint of each file name, distinct and positive
            expect = sorted(int(tf.strings.to_hash_bucket_fast(f"2007_{i:06d}.jpg", 2**62)) for i in range(6))
        assert sorted(np.concatenate(ids).tolist()) == expect
        # crowd (coco) / difficult (voc) / group-of (open images) objects are kept and flagged in eval
        if name != "lvis":
            assert any(b["is_crowd"].any() for b in evb)
            assert any(a["iscrowd"] for a in gt["annotations"])
        if masks:
            assert "segmentation" in gt["annotations"][0]


def test_tfds_copy_paste_needs_masks():
    with tfds.testing.mock_data(as_dataset_fn=_as_dataset):
        cfg = _cfg("coco/2017", True)
        with pytest.raises(DataError, match="has no instance masks"):
            detection.build_train_pipeline(cfg, process_index=0, process_count=1)


def test_tfds_lvis_federated_ground_truth_and_lvis_metric():
    """TFDS lvis: per-image negative / not-exhaustive category ids reach the ground truth as
    category ids (label + 1), the r/c/f groups come from the train split's image counts, and
    evaluation through the official lvis API runs on it (auto metric)."""
    from frozen_det.data.class_stats import source_statistics
    from frozen_det.evaluation.lvis import LvisEvaluator
    from frozen_det.evaluation.runner import resolve_metric

    with tfds.testing.mock_data(as_dataset_fn=_as_dataset):
        cfg = _cfg("lvis", True)
        ev = detection.build_eval_pipeline(cfg, process_index=0, process_count=1)
        source = ev.source
        gt = source.coco_ground_truth(cfg.eval_split)
        examples = _fake_examples(source.builder, "validation")
        by_id = {im["id"]: im for im in gt["images"]}
        for i, ex in enumerate(examples):
            im = by_id[100 + i]
            assert im["neg_category_ids"] == [1001 + i, 1101]
            assert im["not_exhaustive_category_ids"] == [c + 1 for c in ex["objects"]["label"][:1]]
        stats = source_statistics(source, "train")
        freq = {c["id"]: c["frequency"] for c in gt["categories"]}
        assert len(freq) == 1203 and set(freq.values()) == {"r"}  # 6 train images: every class is rare
        assert stats.image_counts.sum() == sum(
            len(set(e["objects"]["label"])) for e in _fake_examples(source.builder, "train")
        )
        assert resolve_metric("auto", source) == "lvis"
        evaluator = LvisEvaluator(gt, source.info.category_ids)
        for batch in ev:
            keep = batch["example_valid"]
            boxes = np.zeros((keep.sum(), 1, 4), np.float32)
            evaluator.add(
                batch["image_id"][keep],
                boxes,
                np.zeros((keep.sum(), 1)),
                np.ones((keep.sum(), 1), np.int32),
                np.zeros((keep.sum(), 1), bool),
            )
        result = evaluator.evaluate()  # no detections: zeros, not a crash
        assert result["AP"] == 0.0 and result["num_images"] == N


def _two_view_cfg(name, **kw):
    return ml_collections.ConfigDict(
        dict(
            source="tfds",
            name=name,
            image_size=24,
            batch_size=4,
            eval_batch_size=4,
            num_workers=0,
            labels=True,
            eval_split="validation" if name != "cifar10" else "test",
            augment=dict(min_view_size=4.0),
            **kw,
        )
    )


def test_tfds_two_view_pipeline_streams_resumes_and_labels():
    """PreDet's two-view batches from a streamed TFDS classification set (the class is the image
    label): fixed shapes, resumable position, disjoint process shards, a fixed held-out set."""
    from frozen_det.data.two_view.pipelines import build_eval_pipeline, build_train_pipeline

    cfg = _two_view_cfg("cifar10", shuffle_buffer=8)
    with tfds.testing.mock_data(num_examples=12):
        train = build_train_pipeline(cfg, num_queries=3, process_index=0, process_count=1)
        assert train.info.num_labels == 10
        first = next(train)
        assert first["view1"].shape == (4, 24, 24, 3) and first["query_boxes2"].shape == (4, 3, 4)
        np.testing.assert_array_equal(first["image_labels"].sum(1), 1.0)  # one class per image
        state = train.state()
        later = [next(train) for _ in range(3)]  # crosses the epoch of 12 images
        again = build_train_pipeline(cfg, num_queries=3, process_index=0, process_count=1)
        again.restore(state)
        for expected in later:
            got = next(again)
            for k in expected:
                np.testing.assert_array_equal(got[k], expected[k], err_msg=k)
        shards = [build_train_pipeline(cfg, num_queries=3, process_index=p, process_count=2) for p in (0, 1)]
        ids = [set(next(s)["image_id"].tolist()) for s in shards]
        assert not ids[0] & ids[1]
        held_out = build_eval_pipeline(cfg, num_queries=3, process_index=0, process_count=1)
        passes = [list(held_out), list(held_out)]
        assert sum(int(b["example_valid"].sum()) for b in passes[0]) == 12
        np.testing.assert_array_equal(passes[0][2]["view2"], passes[1][2]["view2"])
        assert sorted(np.concatenate([b["image_id"] for b in passes[0]]).tolist()) == list(range(12))
        first5 = build_eval_pipeline(dict(cfg, num_eval_examples=5), num_queries=3, process_index=1, process_count=2)
        batches = list(first5)  # this process's share of the first 5 images: 1 and 3 (process 0: 0, 2, 4)
        assert first5.num_batches == len(batches) == 2 and batches[0]["image_id"].tolist() == [1, 3]
        assert batches[1]["image_id"].tolist() == [-1, -1] and not batches[1]["example_valid"].any()
        np.testing.assert_array_equal(batches[0]["view2"], passes[0][0]["view2"][[1, 3]])  # seeded per image


def test_tfds_two_view_detection_labels_and_cached_proposals(tmp_path):
    """A TFDS detection set: the image labels are its object classes, the proposal cache is keyed
    by "image/id", and every image finds its proposals."""
    from frozen_det.data.two_view.cache_proposals import cache_run_proposals
    from frozen_det.data.two_view.pipelines import build_eval_pipeline

    cfg = _two_view_cfg("coco/2017", queries="proposals", proposals_file=str(tmp_path / "proposals.npz"))
    with tfds.testing.mock_data(as_dataset_fn=_as_dataset):
        report = cache_run_proposals(cfg, max_boxes=20)
        assert report["images"] == N and not report["unreadable"]  # ids 100..105 in both splits
        held_out = build_eval_pipeline(cfg, num_queries=3, process_index=0, process_count=1)
        builder = held_out.source.builder
        batches = list(held_out)
    assert held_out.stats["missing_proposals"] == 0
    expected = {100 + i: set(ex["objects"]["label"]) for i, ex in enumerate(_fake_examples(builder, "validation"))}
    for b in batches:
        for image_id, labels, valid in zip(b["image_id"], b["image_labels"], b["example_valid"]):
            if valid:
                assert set(np.flatnonzero(labels).tolist()) == expected[int(image_id)]


def _as_dataset_by_year(self, split, decoders=None, read_config=None, shuffle_files=False, **kwargs):
    """The fake examples with VOC's file names of the builder's year (2007: 000005.jpg style,
    2012: 2012_000005.jpg), so that the two datasets' image ids differ as VOC's do."""
    feats = self.info.features
    examples = _fake_examples(self, str(split).split("[")[0])
    year = self.builder_config.name
    for i, ex in enumerate(examples):
        ex["image/filename"] = f"{i + 5:06d}.jpg" if year == "2007" else f"{year}_{i + 5:06d}.jpg"
    ds = tf.data.Dataset.from_tensor_slices([feats.serialize_example(ex) for ex in examples])
    return ds.map(lambda s: feats.deserialize_example(s, decoders=decoders))


def test_voc_07_plus_12_union_trains_on_both_resumes_and_evaluates_on_one():
    """data.name "voc/2007+voc/2012": a plain split is every member's (07+12 trainval), shuffled
    reads mix both years from the start and resume exactly, NAME:SPLIT reads one member (VOC07
    test), and misnamed members or mixed label sets are refused."""
    with tfds.testing.mock_data(as_dataset_fn=_as_dataset_by_year):
        cfg = _cfg("voc/2007+voc/2012", False)
        cfg.update(train_split="train+validation", eval_split="voc/2007:test", batch_size=4)
        train = detection.build_train_pipeline(cfg, process_index=0, process_count=1)
        assert train.source.num_records("train+validation") == 2 * N  # the mock gives N per member and split
        first = [next(train)["image_id"].tolist() for _ in range(3)]
        years = {i >= 2012000000 for ids in first for i in ids}
        assert years == {True, False}, first  # 2007 (ids < 10000) and 2012 images in the first 12
        state = train.state()
        nxt = next(train)
        again = detection.build_train_pipeline(cfg, process_index=0, process_count=1)
        again.restore(state)
        np.testing.assert_array_equal(next(again)["image_id"], nxt["image_id"])
        ev = detection.build_eval_pipeline(cfg, process_index=0, process_count=1)
        ids = sorted(np.concatenate([b["image_id"][b["example_valid"]] for b in ev]).tolist())
        assert ids == list(range(5, 5 + N))  # VOC07 test only
        gt = ev.source.coco_ground_truth("voc/2007:test")
        assert sorted(im["id"] for im in gt["images"]) == ids
        both = ev.source.coco_ground_truth("test")
        assert len(both["images"]) == 2 * N
        assert sorted(a["id"] for a in both["annotations"]) == list(range(1, len(both["annotations"]) + 1))
        with pytest.raises(DataError, match="'voc/2008' is not one of"):
            ev.source.num_records("voc/2008:test")
        with pytest.raises(DataError, match="different kinds or class names"):
            detection.build_train_pipeline(_cfg("voc/2007+coco/2017", False), process_index=0, process_count=1)
