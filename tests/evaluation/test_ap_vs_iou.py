"""AP across IoU thresholds (frozen_det.evaluation.ap_vs_iou) against independent references: the
`mean-average-precision` package (VOC devkit conventions; COCO-style 101-point soft matching) on
random detections, and pycocotools' own AP50 / AP75; perfect detections score 1 everywhere,
boxes at IoU exactly 0.6 score 1 up to 0.6 and 0 above, and no curve rises with the threshold."""

import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from frozen_det.evaluation.ap_vs_iou import ap_vs_iou, coco_ap_at_thresholds, voc_ap

mean_average_precision = pytest.importorskip("mean_average_precision")
THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _random_problem(seed, num_images=30, num_classes=3):
    """Ground truth and noisy detections (jittered copies plus false positives) with float
    coordinates, as COCO dicts (xywh) and as the package's inclusive-pixel xyxy arrays."""
    rng = np.random.default_rng(seed)
    images, annotations, results, package = [], [], [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "width": 200, "height": 200, "file_name": f"{image_id}.png"})
        gt_rows, det_rows = [], []
        for _ in range(int(rng.integers(1, 5))):
            x0, y0 = rng.uniform(0, 140, 2)
            w, h = rng.uniform(15, 60, 2)
            c = int(rng.integers(1, num_classes + 1))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": c,
                    "iscrowd": 0,
                    "bbox": [x0, y0, w + 1.0, h + 1.0],
                    "area": (w + 1.0) * (h + 1.0),
                }
            )
            gt_rows.append([x0, y0, x0 + w, y0 + h, c - 1, 0, 0])
            for _ in range(int(rng.integers(0, 3))):  # jittered detections of this object
                dx0, dy0, dx1, dy1 = rng.normal(0, 6, 4)
                det_rows.append(
                    [
                        x0 + dx0,
                        y0 + dy0,
                        x0 + w + dx1,
                        y0 + h + dy1,
                        c - 1 if rng.random() < 0.85 else int(rng.integers(0, num_classes)),
                        rng.random(),
                    ]
                )
        for _ in range(int(rng.integers(0, 3))):  # false positives
            x0, y0 = rng.uniform(0, 140, 2)
            w, h = rng.uniform(15, 60, 2)
            det_rows.append([x0, y0, x0 + w, y0 + h, int(rng.integers(0, num_classes)), rng.random()])
        for x0, y0, x1, y1, c, score in det_rows:
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(c) + 1,
                    "score": float(score),
                    "bbox": [x0, y0, x1 - x0 + 1.0, y1 - y0 + 1.0],
                }
            )
        package.append((np.array(det_rows, np.float64).reshape(-1, 6), np.array(gt_rows, np.float64)))
    gt = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c, "name": str(c)} for c in range(1, num_classes + 1)],
    }
    return gt, results, package


def _package_map(package, num_classes, threshold, **value_kwargs):
    """The package's mAP (it accumulates in float32: equal to ours within 1e-6)."""
    metric = mean_average_precision.MetricBuilder.build_evaluation_metric(
        "map_2d", async_mode=False, num_classes=num_classes
    )
    for detections, ground_truth in package:
        metric.add(detections, ground_truth)
    return metric.value(iou_thresholds=threshold, **value_kwargs)["mAP"]


@pytest.mark.parametrize("seed", [0, 1])
def test_equal_to_the_mean_average_precision_package(seed):
    gt, results, package = _random_problem(seed)
    coco = coco_ap_at_thresholds(gt, results, THRESHOLDS)
    for t in THRESHOLDS:
        assert voc_ap(gt, results, t, "all_point")["AP"] == pytest.approx(_package_map(package, 3, t), abs=1e-6)
        assert voc_ap(gt, results, t, "11_point")["AP"] == pytest.approx(
            _package_map(package, 3, t, recall_thresholds=np.arange(0.0, 1.1, 0.1)), abs=1e-6
        )
        assert coco[t] == pytest.approx(
            _package_map(package, 3, t, recall_thresholds=np.arange(0.0, 1.01, 0.01), mpolicy="soft"), abs=1e-6
        )


def test_equal_to_pycocotools_at_050_and_075_and_never_rising():
    gt, results, _ = _random_problem(3)
    coco = COCO()
    coco.dataset = dict(gt, info={}, licenses=[])
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    curve = ap_vs_iou(gt, results, THRESHOLDS)
    ours = dict(zip(curve["iou_thresholds"], curve["coco_AP"]))
    assert ours[0.5] == pytest.approx(ev.stats[1], abs=1e-12) and ours[0.7] < ours[0.5]
    assert coco_ap_at_thresholds(gt, results, (0.75,))[0.75] == pytest.approx(ev.stats[2], abs=1e-12)
    for key in ("coco_AP", "voc_AP_all_point", "voc_AP_11_point"):
        assert np.all(np.diff(curve[key]) <= 1e-12), key


def test_perfect_detections_and_boxes_at_iou_exactly_0_6():
    gt = {
        "images": [{"id": 1, "width": 100, "height": 100}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [10, 10, 50, 40], "area": 2000}
        ],
        "categories": [{"id": 1, "name": "a"}],
    }
    perfect = [{"image_id": 1, "category_id": 1, "score": 0.9, "bbox": [10, 10, 50, 40]}]
    curve = ap_vs_iou(gt, perfect, THRESHOLDS)
    for key in ("coco_AP", "voc_AP_all_point", "voc_AP_11_point"):
        assert curve[key] == pytest.approx([1.0] * 9), key
    # A box of the same height, 3/5 of the width, inside the object: IoU exactly 0.6.
    shifted = [{"image_id": 1, "category_id": 1, "score": 0.9, "bbox": [10, 10, 30, 40]}]
    coco = coco_ap_at_thresholds(gt, shifted, THRESHOLDS)
    assert [coco[t] for t in THRESHOLDS] == pytest.approx([1.0] * 6 + [0.0] * 3)
