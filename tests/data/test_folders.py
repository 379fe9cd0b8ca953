"""Local folders: a generated Pascal-VOC folder (and BCCD, where present) through the VOC-folder
source, a generated COCO-format folder with polygons / RLE / crowds / bad rows, and
undecodable images."""

import json
import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from frozen_det.data import detection
from frozen_det.data.source import DataError

BCCD = os.environ.get("BCCD_DIR", "")  # tests/conftest.py


def _cfg(**kw):
    base = dict(canvas=128, batch_size=4, eval_batch_size=4, num_parallel_calls=2, max_instances=40)
    base.update(kw)
    return ml_collections.ConfigDict(base)


def test_voc_folder(voc_folder, caplog):
    cfg = _cfg(source="voc_folder", path=voc_folder, train_split="trainval", eval_split="test", max_instances=8)
    with caplog.at_level("WARNING", logger="frozen_det.data"):
        train = detection.build_train_pipeline(cfg, process_index=0, process_count=1)
        assert train.source.num_records("trainval") == 24
    assert train.source.num_records("test") == 8
    assert train.source.info.class_names == ["background", "bird", "cat", "dog", "person"]  # sorted names found
    assert train.source.skipped_report()["degenerate_boxes"] == 1
    assert "image_0005.xml" in caplog.text  # the degenerate box, named
    b = next(train)
    assert b["valid"].any() and b["image"].shape == (4, 128, 128, 3)
    ev = detection.build_eval_pipeline(cfg, process_index=0, process_count=1)
    gt = ev.source.coco_ground_truth("test")
    assert len(gt["images"]) == 8 and gt["images"][0]["width"] == 128
    np.testing.assert_allclose(next(iter(ev))["image_info"][0, 2], [1.0, 1.0])  # 128 -> 128
    # data.class_names fixes the classes and their order; other objects are counted, not fatal.
    cats = detection.build_train_pipeline(
        _cfg(source="voc_folder", path=voc_folder, train_split="trainval", class_names=("cat",)),
        process_index=0,
        process_count=1,
    )
    assert cats.source.info.class_names == ["background", "cat"]
    assert cats.source.skipped_report()["unknown_class_objects"] > 0


@pytest.mark.skipif(not os.path.isdir(BCCD), reason="BCCD not found (set BCCD_DIR)")
def test_bccd_voc_folder(caplog):
    cfg = _cfg(source="voc_folder", path=BCCD, train_split="trainval", eval_split="test", max_instances=20)
    with caplog.at_level("WARNING", logger="frozen_det.data"):
        train = detection.build_train_pipeline(cfg, process_index=0, process_count=1)
        assert train.source.num_records("trainval") == 292
    assert train.source.num_records("test") == 72
    assert train.source.info.class_names == ["background", "Platelets", "RBC", "WBC"]
    assert train.source.skipped_report()["degenerate_boxes"] == 2
    assert "BloodImage_00338.xml" in caplog.text and "BloodImage_00343.xml" in caplog.text
    b = next(train)
    assert b["valid"].any() and b["image"].shape == (4, 128, 128, 3)
    assert b["num_dropped_instances"].sum() >= 0 and train.report()["source_degenerate_boxes"] == 2
    ev = detection.build_eval_pipeline(cfg, process_index=0, process_count=1)
    gt = ev.source.coco_ground_truth("test")
    assert len(gt["images"]) == 72 and gt["images"][0]["width"] == 640
    first = next(iter(ev))
    np.testing.assert_allclose(first["image_info"][0, 2], [0.2, 0.2])  # 640 -> 128


def test_voc_folder_missing_split_and_folder(tmp_path, voc_folder):
    with pytest.raises(DataError, match="missing Annotations"):
        detection.build_train_pipeline(_cfg(source="voc_folder", path=str(tmp_path)), process_index=0, process_count=1)
    with pytest.raises(DataError, match=r"split 'nope' not found.*available splits: \['test', 'trainval'"):
        detection.build_train_pipeline(
            _cfg(source="voc_folder", path=voc_folder, train_split="nope"), process_index=0, process_count=1
        )


def _write_coco_folder(root):
    """4 images: polygons, RLE (compressed + uncompressed), a crowd, a corrupt image, a missing
    image, an annotation of an unknown image, a degenerate box, an image with no objects."""
    from pycocotools import mask as mask_utils

    os.makedirs(root / "annotations")
    os.makedirs(root / "train")
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i in range(1, 5):
        Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(root / "train" / f"{i}.jpg")
        images.append(dict(id=i, file_name=f"{i}.jpg", height=60, width=80))
    (root / "train" / "5.jpg").write_bytes(b"not a jpeg at all")
    images.append(dict(id=5, file_name="5.jpg", height=60, width=80))
    images.append(dict(id=6, file_name="missing.jpg", height=60, width=80))
    # image 1: a polygon square 10..30 x 20..50 (category 7) and a crowd RLE (category 3)
    anns.append(
        dict(
            id=1,
            image_id=1,
            category_id=7,
            bbox=[20, 10, 30, 20],
            iscrowd=0,
            area=600,
            segmentation=[[20, 10, 50, 10, 50, 30, 20, 30]],
        )
    )
    m = np.zeros((60, 80), np.uint8)
    m[40:55, 5:25] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode()
    anns.append(dict(id=2, image_id=1, category_id=3, bbox=[5, 40, 20, 15], iscrowd=1, area=300, segmentation=rle))
    # image 2: uncompressed RLE object + a degenerate box
    m2 = np.zeros((60, 80), np.uint8)
    m2[5:25, 40:70] = 1
    flat = m2.flatten(order="F")
    counts, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)
    anns.append(
        dict(
            id=3,
            image_id=2,
            category_id=3,
            bbox=[40, 5, 30, 20],
            iscrowd=0,
            area=600,
            segmentation=dict(size=[60, 80], counts=counts),
        )
    )
    anns.append(
        dict(
            id=4,
            image_id=2,
            category_id=7,
            bbox=[10, 10, 0, 5],
            iscrowd=0,
            area=0,
            segmentation=[[10, 10, 10, 15, 10, 15]],
        )
    )
    anns.append(dict(id=5, image_id=99, category_id=7, bbox=[1, 1, 5, 5], iscrowd=0, area=25, segmentation=[]))
    # image 3: nothing; image 4: polygon triangle; image 5: corrupt file with an object
    anns.append(
        dict(
            id=6,
            image_id=4,
            category_id=7,
            bbox=[10, 10, 40, 40],
            iscrowd=0,
            area=800,
            segmentation=[[10, 10, 50, 10, 10, 50]],
        )
    )
    anns.append(
        dict(
            id=7,
            image_id=5,
            category_id=7,
            bbox=[10, 10, 40, 40],
            iscrowd=0,
            area=800,
            segmentation=[[10, 10, 50, 10, 10, 50]],
        )
    )
    cats = [dict(id=7, name="seven"), dict(id=3, name="three")]
    (root / "annotations" / "instances_train.json").write_text(
        json.dumps(dict(images=images, annotations=anns, categories=cats))
    )


def test_coco_folder(tmp_path, caplog):
    _write_coco_folder(tmp_path)
    cfg = _cfg(
        source="coco_folder",
        path=str(tmp_path),
        train_split="train",
        eval_split="train",
        with_masks=True,
        mask_size=16,
        canvas_masks=True,
        max_instances=4,
        augment=dict(hflip=False, scale_min=1.6, scale_max=1.6),
    )
    with caplog.at_level("WARNING"):
        ev = detection.build_eval_pipeline(cfg, process_index=0, process_count=1)
        info = ev.source.info
        assert info.class_names == ["background", "three", "seven"] and info.category_ids == [0, 3, 7]
        batches = list(ev)
    rep = ev.report()
    assert rep["source_missing_images"] == 1 and rep["source_degenerate_boxes"] == 1
    assert rep["source_annotations_of_unknown_images"] == 1
    assert rep["examples_skipped"] == 1 and "5.jpg" in caplog.text  # the corrupt image
    b = batches[0]
    assert b["image_id"].tolist() == [1, 2, 3, 4] and b["example_valid"].all()
    assert len(batches) == 2 and not batches[1]["example_valid"].any()  # 5 records -> 2 batches
    # image 1 (eval keeps crowds, flagged): polygon square and crowd RLE
    assert b["is_crowd"][0].tolist()[:2] == [False, True] and b["valid"][0, :2].all()
    scale = 128 / 80
    np.testing.assert_allclose(b["boxes"][0, 0], np.array([10, 20, 30, 50]) * scale, atol=1e-4)
    cm = b["canvas_masks"][0, 1]
    ys, xs = np.nonzero(cm)
    assert abs(ys.min() - 40 * scale) <= 1 and abs(xs.max() + 1 - 25 * scale) <= 1.5  # RLE decoded
    ys, xs = np.nonzero(b["canvas_masks"][1, 0])  # uncompressed RLE
    assert abs(ys.min() - 5 * scale) <= 1 and abs(xs.min() - 40 * scale) <= 1
    assert not b["valid"][2].any()  # image without objects
    assert b["masks"][0, 0].mean() > 0.8
    gt = ev.source.coco_ground_truth("train")
    assert {a["category_id"] for a in gt["annotations"]} == {3, 7}
    # Train drops the crowd; the corrupt image is skipped and counted, never raised.
    train = detection.build_train_pipeline(cfg, process_index=0, process_count=1)
    tb = [next(train) for _ in range(2)]
    assert not any(x["is_crowd"].any() for x in tb)
    assert train.report()["examples_skipped"] >= 1


def test_coco_folder_missing_annotation(tmp_path):
    with pytest.raises(DataError, match="instances_train.json"):
        detection.build_train_pipeline(
            _cfg(source="coco_folder", path=str(tmp_path), with_masks=True), process_index=0, process_count=1
        )
