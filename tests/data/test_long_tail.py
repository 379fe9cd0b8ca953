"""The generated long-tailed LVIS-format dataset: the LVIS v1 fields, exact r/c/f group sizes,
read by our COCO-folder source and by the official `lvis` API, byte-identical rewrites."""

import importlib.util
import json
import os

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from frozen_det.data import class_stats, detection
from frozen_det.data.detection import config as detection_config
from frozen_det.data.offline.long_tail import write_long_tailed_lvis

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
SMALL = dict(image_size=96, num_train=150, num_val=40, num_frequent=2, num_common=4, num_rare=7, seed=3)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("long_tail")
    return str(path), write_long_tailed_lvis(str(path), **SMALL)


def _json(path, split):
    with open(os.path.join(path, "annotations", f"lvis_v1_{split}.json")) as f:
        return json.load(f)


def _files(root):
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                out[os.path.relpath(os.path.join(folder, name), root)] = f.read()
    return out


def _config(path):
    spec = importlib.util.spec_from_file_location(
        "long_tail_config", os.path.join(ROOT, "configs", "data", "long_tail.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(path)


def test_lvis_fields_and_frequency_groups(dataset):
    path, summary = dataset
    train, val = _json(path, "train"), _json(path, "val")
    assert train["categories"] == val["categories"]
    cats = train["categories"]
    assert [c["id"] for c in cats] == list(range(1, 14)) and len({c["name"] for c in cats}) == 13
    for c in cats:
        assert {"id", "name", "frequency", "image_count", "instance_count", "synset"} <= c.keys()
    images = {c["id"]: set() for c in cats}
    instances = {c["id"]: 0 for c in cats}
    for a in train["annotations"]:
        images[a["category_id"]].add(a["image_id"])
        instances[a["category_id"]] += 1
    for c in cats:  # counts and groups from the train split, with LVIS's thresholds
        assert c["image_count"] == len(images[c["id"]]) and c["instance_count"] == instances[c["id"]]
        assert c["frequency"] == class_stats.frequency_group(c["image_count"])
        assert c["image_count"] >= 1
    groups = [c["frequency"] for c in cats]
    assert groups == ["f"] * 2 + ["c"] * 4 + ["r"] * 7
    assert summary["frequency_groups"] == {"f": 2, "c": 4, "r": 7}
    assert min(c["image_count"] for c in cats if c["frequency"] == "f") > 100
    assert summary["train"] == {"images": 150, "annotations": len(train["annotations"])}
    assert all(c["val_images"] >= 3 for c in summary["categories"])  # every class in a few val images

    for split, d in (("train", train), ("val", val)):
        present = {}
        for a in d["annotations"]:
            present.setdefault(a["image_id"], set()).add(a["category_id"])
            rle = a["segmentation"]
            assert isinstance(rle["counts"], str) and rle["size"] == [96, 96]
            m = mask_utils.decode(dict(rle, counts=rle["counts"].encode("ascii")))
            ys, xs = np.nonzero(m)
            assert a["area"] == m.sum()
            assert a["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
        for im in d["images"]:
            assert os.path.isfile(os.path.join(path, split, im["file_name"]))
            assert im["height"] == im["width"] == 96
            pos = present.get(im["id"], set())
            assert not set(im["neg_category_ids"]) & pos
            assert set(im["not_exhaustive_category_ids"]) <= pos
        assert any(im["neg_category_ids"] for im in d["images"])
        assert any(im["not_exhaustive_category_ids"] for im in d["images"])


def test_coco_folder_source_reads_it(dataset):
    path, summary = dataset
    cfg = detection_config.resolve(_config(path))
    source = detection.build_source(cfg)
    assert source.info.class_names[1:] == [c["name"] for c in summary["categories"]]
    assert source.info.frequencies == [""] + [c["frequency"] for c in summary["categories"]]
    stats = class_stats.source_statistics(source, "train")
    assert stats.image_counts[1:].tolist() == [c["train_images"] for c in summary["categories"]]
    assert stats.instance_counts[1:].tolist() == [c["train_instances"] for c in summary["categories"]]
    assert stats.frequency_groups() == source.info.frequencies

    evals = detection.build_eval_pipeline(_config(path), process_index=0, process_count=1)
    gt = evals.source.coco_ground_truth("val")
    val = _json(path, "val")
    assert len(gt["images"]) == 40 and len(gt["annotations"]) == len(val["annotations"])
    by_id = {im["id"]: im for im in val["images"]}
    for im in gt["images"]:
        for key in ("neg_category_ids", "not_exhaustive_category_ids"):
            assert im[key] == by_id[im["id"]][key]
    batch = next(iter(evals))
    assert batch["image"].shape == (8, 128, 128, 3) and batch["masks"].shape[1] == 16
    assert batch["valid"].any() and batch["num_dropped_instances"].sum() == 0


def test_official_lvis_api_scores_the_ground_truth_as_perfect(dataset, monkeypatch):
    lvis = pytest.importorskip("lvis")
    monkeypatch.setattr(np, "float", float, raising=False)  # lvis 0.5.3 still calls np.float
    path, _ = dataset
    json_path = os.path.join(path, "annotations", "lvis_v1_val.json")
    gt = lvis.LVIS(json_path)
    assert len(gt.get_cat_ids()) == 13 and len(gt.get_img_ids()) == 40
    for iou_type in ("bbox", "segm"):
        keep = "bbox" if iou_type == "bbox" else "segmentation"
        detections = [
            {"image_id": a["image_id"], "category_id": a["category_id"], keep: a[keep], "score": 1.0}
            for a in gt.dataset["annotations"]
        ]
        ev = lvis.LVISEval(gt, lvis.LVISResults(gt, detections), iou_type)
        ev.run()
        results = ev.get_results()
        for key in ("AP", "APr", "APc", "APf"):
            assert results[key] == pytest.approx(1.0), (iou_type, key)


def test_two_writes_are_identical_and_the_seed_matters(dataset, tmp_path):
    path, summary = dataset
    again = write_long_tailed_lvis(str(tmp_path / "again"), **SMALL)
    assert dict(again, path=summary["path"]) == summary
    assert _files(path) == _files(tmp_path / "again")
    other = write_long_tailed_lvis(str(tmp_path / "other"), **dict(SMALL, num_train=140, num_val=10, seed=4))
    assert other["frequency_groups"] == summary["frequency_groups"]
    assert other["categories"] != summary["categories"]


def test_impossible_sizes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="num_train=100: frequent classes need more than 100"):
        write_long_tailed_lvis(str(tmp_path), num_train=100)
    with pytest.raises(ValueError, match="no room"):
        write_long_tailed_lvis(str(tmp_path), num_train=150, max_objects=1)
