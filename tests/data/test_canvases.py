"""Objects on canvases (frozen_det.data.offline.canvases): deterministic COCO folders of real
Fashion-MNIST items that the detection pipeline reads; ImageNet-like canvases hold one class per
image (the public image label), VOC-like ones several classes; boxes are the tight boxes of the
visible masks."""

import json
import os

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from frozen_det.data import detection
from frozen_det.data.offline import fashion_mnist
from frozen_det.data.offline.canvases import write_canvases

pytestmark = pytest.mark.skipif(
    not fashion_mnist.available(),
    reason="Debian package dataset-fashion-mnist not installed",
)


def _annotations(root, split):
    with open(os.path.join(root, "annotations", f"instances_{split}.json")) as f:
        return json.load(f)


@pytest.mark.parametrize("mode", ["imagenet", "voc"])
def test_canvases_are_deterministic_coco_folders(tmp_path, mode):
    first, second = tmp_path / "a", tmp_path / "b"
    summary = write_canvases(str(first), mode, num_train=12, num_val=6, image_size=96)
    write_canvases(str(second), mode, num_train=12, num_val=6, image_size=96)
    assert summary["train"]["images"] == 12 and summary["val"]["images"] == 6
    for split in ("train", "val"):
        assert _annotations(first, split) == _annotations(second, split)
        for name in sorted(os.listdir(first / split)):
            assert (first / split / name).read_bytes() == (second / split / name).read_bytes()
    gt = _annotations(first, "train")
    by_image = {}
    for ann in gt["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
        m = mask_utils.decode(ann["segmentation"])
        ys, xs = np.nonzero(m)
        x, y, w, h = ann["bbox"]
        assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)  # tight visible box
        assert ann["area"] == m.sum()
    sides = [max(a["bbox"][2:]) / 96 for a in gt["annotations"]]
    if mode == "imagenet":
        for image in gt["images"]:
            assert {a["category_id"] for a in by_image[image["id"]]} == {image["label"]}  # one class, public
            assert 1 <= len(by_image[image["id"]]) <= 3
        assert max(sides) > 0.4
    else:
        assert all("label" not in image for image in gt["images"])
        assert any(len({a["category_id"] for a in anns}) > 1 for anns in by_image.values())
        assert max(sides) <= 0.41
    # The detection pipeline reads the folder.
    cfg = dict(
        source="coco_folder",
        path=str(first),
        train_split="train",
        eval_split="val",
        canvas=96,
        batch_size=4,
        eval_batch_size=6,
        max_instances=8,
        with_masks=True,
        mask_size=16,
    )
    batch = next(detection.build_train_pipeline(cfg, process_index=0, process_count=1))
    assert batch["valid"].any() and batch["masks"].shape == (4, 8, 16, 16)
    source = detection.build_eval_pipeline(cfg, process_index=0, process_count=1).source
    assert source.info.class_names[1:] == [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ]
    if mode == "imagenet":  # the public image labels as a classification set ("coco_labels")
        from frozen_det.data import classification

        cls_cfg = dict(
            source="coco_labels",
            path=str(first),
            train_split="train",
            eval_split="val",
            image_size=32,
            batch_size=4,
            eval_batch_size=6,
        )
        train = classification.build_train_pipeline(cls_cfg, process_index=0, process_count=1)
        assert train.source.info.class_names == source.info.class_names[1:]
        np.testing.assert_array_equal(train.source.labels("train"), [im["label"] - 1 for im in gt["images"]])
        assert next(train)["image"].shape == (4, 32, 32, 3)
