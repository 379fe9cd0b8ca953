"""COCO evaluation: our padded yxyx detections in original pixels give pycocotools' numbers."""

import contextlib
import io

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from frozen_det.evaluation.coco import CocoEvaluator, paste_mask

# Two images, three objects, dataset category ids 3 and 7 (contiguous ids 1 and 2).
CATEGORY_IDS = [0, 3, 7]
BOXES_XYWH = {1: [(10, 20, 50, 40, 3), (100, 60, 80, 90, 7)], 2: [(30, 30, 120, 60, 3)]}


def _box_rle(image_hw, x, y, w, h) -> dict:
    """The COCO RLE (JSON-ready) of an image-sized mask that is 1 inside the box."""
    seg = np.zeros(image_hw, np.uint8)
    seg[y : y + h, x : x + w] = 1
    rle = mask_utils.encode(np.asfortranarray(seg))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def ground_truth():
    images = [{"id": 1, "height": 200, "width": 300}, {"id": 2, "height": 150, "width": 250}]
    annotations = []
    for image_id, objects in BOXES_XYWH.items():
        for x, y, w, h, cat in objects:
            rle = _box_rle((200 if image_id == 1 else 150, 300 if image_id == 1 else 250), x, y, w, h)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                    "segmentation": rle,
                }
            )
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}],
    }


def padded_detections(shift=0.0, k=5):
    boxes = np.zeros((2, k, 4), np.float32)
    scores = np.zeros((2, k), np.float32)
    classes = np.zeros((2, k), np.int32)
    valid = np.zeros((2, k), bool)
    for b, (image_id, objects) in enumerate(BOXES_XYWH.items()):
        for i, (x, y, w, h, cat) in enumerate(objects):
            boxes[b, i] = (y, x + shift, y + h, x + w + shift)
            scores[b, i] = 0.9 - 0.1 * i
            classes[b, i] = CATEGORY_IDS.index(cat)
            valid[b, i] = True
    return np.array([1, 2]), boxes, scores, classes, valid


def test_perfect_detections_score_one():
    ev = CocoEvaluator(ground_truth(), CATEGORY_IDS)
    ev.add(*padded_detections())
    result = ev.evaluate()
    assert result["AP"] == pytest.approx(1.0) and result["AP50"] == pytest.approx(1.0)
    assert result["per_class_AP"] == {3: pytest.approx(1.0), 7: pytest.approx(1.0)}


def test_shifted_boxes_give_what_pycocotools_computes():
    ev = CocoEvaluator(ground_truth(), CATEGORY_IDS)
    ev.add(*padded_detections(shift=12.0))
    ours = ev.evaluate()
    # Independent path: xywh results written by hand, pycocotools called directly.
    results = []
    for image_id, objects in BOXES_XYWH.items():
        for i, (x, y, w, h, cat) in enumerate(objects):
            results.append(
                {"image_id": image_id, "category_id": cat, "bbox": [x + 12.0, y, w, h], "score": 0.9 - 0.1 * i}
            )
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dict(ground_truth(), info={}, licenses=[])
        gt.createIndex()
        ref = COCOeval(gt, gt.loadRes(results), "bbox")
        ref.evaluate(), ref.accumulate(), ref.summarize()
    assert 0.0 < ours["AP"] < 1.0
    np.testing.assert_allclose(
        [ours[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")], ref.stats[:6], atol=1e-12
    )


def test_masks_pasted_from_box_frame_crops():
    ev = CocoEvaluator(ground_truth(), CATEGORY_IDS, include_masks=True)
    ids, boxes, scores, classes, valid = padded_detections()
    masks = np.ones((2, 5, 28, 28), np.float32)  # the objects fill their boxes
    ev.add(ids, boxes, scores, classes, valid, masks)
    result = ev.evaluate()
    assert result["mask_AP50"] == pytest.approx(1.0)
    assert result["mask_AP"] > 0.9


def test_paste_mask_covers_its_box():
    pasted = paste_mask(np.ones((28, 28), np.float32), (20, 10, 60, 60), (100, 100))
    ys, xs = np.nonzero(pasted)
    assert (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1) == (20, 60, 10, 60)


def test_unknown_image_id_is_an_error():
    ev = CocoEvaluator(ground_truth(), CATEGORY_IDS)
    ids, *rest = padded_detections()
    with pytest.raises(KeyError, match="99"):
        ev.add(np.array([1, 99]), *rest)


def _random_ground_truth(rng, num_images=25, num_classes=4, size=(60, 80)):
    """Random boxes with masks, some crowd regions, one class without any ground truth."""
    height, width = size
    annotations = []
    for image_id in range(1, num_images + 1):
        for _ in range(rng.integers(0, 6)):
            h, w = rng.integers(3, height // 2), rng.integers(3, width // 2)
            y, x = rng.integers(0, height - h), rng.integers(0, width - w)
            rle = _box_rle(size, x, y, w, h)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(rng.integers(1, num_classes)),  # class num_classes never occurs
                    "bbox": [int(x), int(y), int(w), int(h)],
                    "area": int(w * h),
                    "iscrowd": int(rng.random() < 0.1),
                    "segmentation": rle,
                }
            )
    return {
        "images": [{"id": i, "height": height, "width": width} for i in range(1, num_images + 1)],
        "annotations": annotations,
        "categories": [{"id": c, "name": str(c)} for c in range(1, num_classes + 1)],
    }


def test_random_detections_give_pycocotools_numbers_boxes_masks_and_per_class():
    """The evaluator runs faster-coco-eval; its summary and per-class AP equal pycocotools'
    COCOeval on the same results (crowd regions, a class without ground truth, masks)."""
    rng = np.random.default_rng(0)
    gt_dict = _random_ground_truth(rng)
    category_ids = [0, 1, 2, 3, 4]
    k = 12
    ids = np.arange(1, 26)
    boxes = rng.uniform(0, 60, (25, k, 4)).astype(np.float32)
    boxes[..., 2:] = boxes[..., :2] + rng.uniform(2, 30, (25, k, 2))
    for a in gt_dict["annotations"]:  # half the objects found, moved a little
        if rng.random() < 0.5:
            x, y, w, h = a["bbox"]
            boxes[a["image_id"] - 1, a["id"] % k] = (y + rng.normal(), x + rng.normal(), y + h, x + w)
    scores = rng.random((25, k)).astype(np.float32)
    classes = rng.integers(1, 5, (25, k)).astype(np.int32)
    valid = rng.random((25, k)) < 0.9
    masks = rng.random((25, k, 14, 14)).astype(np.float32)
    ev = CocoEvaluator(gt_dict, category_ids, include_masks=True)
    ev.add(ids, boxes, scores, classes, valid, masks)
    ours = ev.evaluate()
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dict(gt_dict, info={}, licenses=[])
        gt.createIndex()
        for iou_type, prefix in (("bbox", ""), ("segm", "mask_")):
            ref = COCOeval(gt, gt.loadRes([dict(r) for r in ev.results]), iou_type)
            ref.evaluate(), ref.accumulate(), ref.summarize()
            keys = ("AP", "AP50", "AP75", "APs", "APm", "APl", "ARmax1", "ARmax10", "ARmax100", "ARs", "ARm", "ARl")
            np.testing.assert_allclose([ours[prefix + key] for key in keys], ref.stats, atol=1e-12)
            assert 0.0 < ours[prefix + "AP"] < 1.0
            precision = ref.eval["precision"][:, :, :, 0, -1]
            for i, cat in enumerate(ref.params.catIds):
                p = precision[:, :, i]
                expected = float(np.mean(p[p > -1])) if np.any(p > -1) else float("nan")
                np.testing.assert_allclose(ours[prefix + "per_class_AP"][cat], expected, atol=1e-12)
    assert np.isnan(ours["per_class_AP"][4])
