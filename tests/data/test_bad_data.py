"""Data that trains on nothing is an error, and nothing about the data is silent (issue 31): class
names that match no object (with the fix when only case differs), a train split without one
object, VOC `<size>` that disagrees with the image, skip counters per split, `show`'s report of
skips, truncated JPEGs that still decode (and keep their ground truth in evaluation)."""

import glob
import logging
import os
import re
import shutil

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from frozen_det.data import detection
from frozen_det.data.detection.sources.voc_folder import VocFolderSource
from frozen_det.data.source import DataError, decode_image


def voc_config(path, **kw):
    data = dict(source="voc_folder", path=str(path), train_split="trainval", eval_split="test", canvas=128)
    data.update(batch_size=4, eval_batch_size=4, num_parallel_calls=2, max_instances=8, **kw)
    return ml_collections.ConfigDict(data)


def copy_of(voc_folder, tmp_path):
    return shutil.copytree(voc_folder, tmp_path / "voc")


def test_class_names_that_match_no_object_fail_naming_the_names_and_the_case_fix(voc_folder):
    source = VocFolderSource(voc_folder, class_names=["Bird", "Cat", "Dog"])
    with pytest.raises(DataError, match=r"match none of the objects' names \['bird', 'cat', 'dog', 'person'\]") as e:
        source.split_records("trainval")
    assert str(e.value).endswith("class names are case-sensitive: data.class_names=('bird', 'cat', 'dog')?")


def test_a_train_split_without_one_object_fails_before_anything_compiles(voc_folder, tmp_path):
    root = copy_of(voc_folder, tmp_path)
    for xml in glob.glob(os.path.join(root, "Annotations", "*.xml")):
        with open(xml) as f:
            text = f.read()
        with open(xml, "w") as f:
            f.write(re.sub(r"<object>.*?</object>", "", text))
    with pytest.raises(DataError, match=r"train split 'trainval' .* has no object of any class .* train on nothing"):
        detection.build_train_pipeline(voc_config(root, class_names=("bird", "cat", "dog")), process_index=0)


def test_an_xml_size_unlike_the_image_rescales_its_boxes_or_skips_it(voc_folder, tmp_path, caplog):
    root = copy_of(voc_folder, tmp_path)
    xml = os.path.join(root, "Annotations", "image_0001.xml")
    with open(xml) as f:
        text = f.read()
    with open(xml, "w") as f:  # the image is 128 x 96; the XML claims twice that, boxes in its frame
        f.write(text.replace("<width>128</width><height>96</height>", "<width>256</width><height>192</height>"))
    truth = VocFolderSource(voc_folder).split_records("trainval")[0]
    with caplog.at_level(logging.WARNING, logger="frozen_det.data"):
        rescaled = VocFolderSource(root)
        record = rescaled.split_records("trainval")[0]
    assert (record.height, record.width) == (96, 128)
    np.testing.assert_allclose(record.boxes, truth.boxes / 2, atol=1e-4)  # from the XML's frame to the image's
    assert rescaled.skipped_report("trainval")["size_mismatch_rescaled"] == 1
    assert "image_0001.xml: <size> 256x192 disagrees with the image" in caplog.text
    ground_truth = rescaled.coco_ground_truth("trainval")["images"][0]
    assert (ground_truth["height"], ground_truth["width"]) == (96, 128)

    skipping = VocFolderSource(root, size_mismatch="skip")
    assert [r.image_id for r in skipping.split_records("trainval")][0] == 2
    assert skipping.skipped_report("trainval")["size_mismatch_skipped"] == 1


def test_skip_counts_are_per_split_and_show_reports_skips_not_drawings(voc_folder, tmp_path, caplog):
    from frozen_det.data.show import run

    source = VocFolderSource(voc_folder)
    with caplog.at_level(logging.INFO, logger="frozen_det.data"):
        source.split_records("trainval")
        source.split_records("test")
    assert source.skipped_report("trainval")["degenerate_boxes"] == 1  # image 5
    assert "degenerate_boxes" not in source.skipped_report("test")
    test_line = next(r.getMessage() for r in caplog.records if "split test:" in r.getMessage())
    assert "degenerate_boxes" not in test_line

    # A copy: pipelines share one source per folder and process (data.pipeline.cached_source), and
    # other tests read the shared folder's warnings as its first reader.
    summary = run(voc_config(copy_of(voc_folder, tmp_path)), 2, str(tmp_path / "show"))
    assert len(summary["written"]) == 2
    assert "examples" not in summary["skipped"] and summary["skipped"]["source_degenerate_boxes"] == 1


def truncated_jpeg(path, fraction=0.7):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(path, quality=90)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * fraction)])


def test_a_truncated_jpeg_that_still_decodes_keeps_its_place_in_evaluation(voc_folder, tmp_path):
    truncated_jpeg(tmp_path / "cut.jpg")
    image = decode_image(tf.io.read_file(str(tmp_path / "cut.jpg")))
    assert image.shape == (96, 128, 3)
    with open(tmp_path / "cut.jpg", "rb") as f:
        with pytest.raises(tf.errors.InvalidArgumentError):
            decode_image(tf.constant(f.read()[:400]))  # too little of it: skipped and counted, as before

    root = copy_of(voc_folder, tmp_path)
    first_test_image = os.path.join(root, "JPEGImages", "image_0025.jpg")
    with open(first_test_image, "rb") as f:
        data = f.read()
    with open(first_test_image, "wb") as f:
        f.write(data[: int(len(data) * 0.8)])
    pipeline = detection.build_eval_pipeline(voc_config(root), process_index=0, process_count=1)
    ids = [int(i) for batch in pipeline for i, ok in zip(batch["image_id"], batch["example_valid"]) if ok]
    assert sorted(ids) == list(range(25, 33)) and pipeline.report()["examples_skipped"] == 0


def test_an_image_folder_whose_class_names_match_no_folder_names_the_case_fix(tmp_path):
    from frozen_det.data.classification.sources import ImageFolderSource

    for name in ("circle", "square"):
        (tmp_path / "train" / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "train" / name / "a.png")
    source = ImageFolderSource(str(tmp_path), class_names=("Circle", "Square"))
    with pytest.raises(DataError, match=r"match none of them.*data.class_names=\('circle', 'square'\)\?"):
        source.num_records("train")
