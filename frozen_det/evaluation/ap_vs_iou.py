"""Average precision across IoU thresholds: how localisation quality separates detectors (Li et
al., "An analysis of pre-training on object detection", Fig. 1 / Table 2: detection
pre-training's gain grows with the IoU threshold).

* `coco_ap_at_thresholds`: COCO-style AP (101 recall points, max 100 detections, area "all",
  crowds ignored) at any list of IoU thresholds, read from COCOeval's precision array
  ([T, R, K, A, M]); COCOeval.summarize() is not used because it looks up 0.5 and 0.75 by
  exact float equality in the threshold list.
* `voc_ap`: Pascal VOC AP per class and its mean, with the devkit's conventions (VOCdevkit
  `VOCevaldet` / `voc_eval.py`): a detection matches the unmatched ground truth of its class with
  the highest IoU when that IoU is above the threshold (strictly), "difficult" ground truth is
  neither a hit nor a miss, areas count pixels inclusively (+1); AP by the "all_point" rule (area
  under the precision envelope, VOC 2010+) or the "11_point" rule (VOC 2007).

Both take COCO-format ground truth and results (xywh boxes), as the evaluators produce.
"""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Mapping, Sequence

import numpy as np

DEFAULT_THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(1, 10))


def coco_ap_at_thresholds(
    ground_truth: Mapping, results: Sequence[Mapping], thresholds=DEFAULT_THRESHOLDS, iou_type: str = "bbox"
) -> dict:
    """{threshold: AP} (-1 where no category has ground truth)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    thresholds = [float(t) for t in thresholds]
    if not results:
        return {t: 0.0 for t in thresholds}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(dict(ground_truth))
        gt.dataset.setdefault("info", {})
        gt.dataset.setdefault("licenses", [])
        gt.createIndex()
        dt = gt.loadRes(copy.deepcopy(list(results)))
        ev = COCOeval(gt, dt, iou_type)
        ev.params.iouThrs = np.asarray(thresholds, np.float64)
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"]  # [T, R, K, A, M]; area 0 = all, maxDets -1 = 100
    out = {}
    for i, t in enumerate(thresholds):
        p = precision[i, :, :, 0, -1]
        out[t] = float(np.mean(p[p > -1])) if np.any(p > -1) else -1.0
    return out


def _iou_inclusive(box, boxes):
    """IoU of one xyxy box with many, areas counting pixels inclusively (the VOC devkit's +1)."""
    ix = np.maximum(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]) + 1.0, 0.0)
    iy = np.maximum(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]) + 1.0, 0.0)
    inter = ix * iy
    area = lambda b: (b[..., 2] - b[..., 0] + 1.0) * (b[..., 3] - b[..., 1] + 1.0)
    return inter / (area(box) + area(boxes) - inter)


def average_precision(recall: np.ndarray, precision: np.ndarray, rule: str = "all_point") -> float:
    """VOC AP of a precision-recall curve (detections in score order)."""
    if rule == "11_point":
        return float(
            np.mean([np.max(precision[recall >= t]) if np.any(recall >= t) else 0.0 for t in np.linspace(0.0, 1.0, 11)])
        )
    if rule != "all_point":
        raise ValueError(f"VOC AP rule {rule!r}: 'all_point' or '11_point'")
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # the precision envelope
    changes = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


def voc_ap(
    ground_truth: Mapping, results: Sequence[Mapping], iou_threshold: float = 0.5, rule: str = "all_point"
) -> dict:
    """{"AP": mean over categories with ground truth, "per_class_AP": {category id: AP}}.
    Ground truth with "difficult" or "iscrowd" set is ignored (the VOC convention for
    difficult objects)."""
    boxes = lambda b: np.array([b[0], b[1], b[0] + b[2] - 1.0, b[1] + b[3] - 1.0], np.float64)  # xywh -> inclusive xyxy
    per_class = {}
    for category in sorted({c["id"] for c in ground_truth["categories"]}):
        gts = {}
        for a in ground_truth["annotations"]:
            if a["category_id"] == category:
                entry = gts.setdefault(a["image_id"], {"boxes": [], "ignore": []})
                entry["boxes"].append(boxes(a["bbox"]))
                entry["ignore"].append(bool(a.get("difficult", 0) or a.get("iscrowd", 0)))
        positives = sum(not ig for g in gts.values() for ig in g["ignore"])
        if positives == 0:
            continue
        for g in gts.values():
            g["boxes"], g["ignore"] = np.array(g["boxes"]), np.array(g["ignore"])
            g["used"] = np.zeros(len(g["boxes"]), bool)
        dets = sorted((r for r in results if r["category_id"] == category), key=lambda r: -r["score"])
        tp, fp = np.zeros(len(dets)), np.zeros(len(dets))
        for i, det in enumerate(dets):
            g = gts.get(det["image_id"])
            if g is None:
                fp[i] = 1
                continue
            ious = _iou_inclusive(boxes(det["bbox"]), g["boxes"])
            best = int(np.argmax(ious))
            if ious[best] > iou_threshold:
                if g["ignore"][best]:
                    continue  # difficult: neither a hit nor a miss
                if not g["used"][best]:
                    tp[i], g["used"][best] = 1, True
                else:
                    fp[i] = 1
            else:
                fp[i] = 1
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        recall = tp / positives
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        per_class[category] = average_precision(recall, precision, rule)
    return {"AP": float(np.mean(list(per_class.values()))) if per_class else -1.0, "per_class_AP": per_class}


def ap_vs_iou(ground_truth: Mapping, results: Sequence[Mapping], thresholds=DEFAULT_THRESHOLDS) -> dict:
    """The curves of one evaluation: COCO-style AP and VOC AP (both rules) at every threshold."""
    thresholds = [float(t) for t in thresholds]
    return {
        "iou_thresholds": thresholds,
        "coco_AP": list(coco_ap_at_thresholds(ground_truth, results, thresholds).values()),
        "voc_AP_all_point": [voc_ap(ground_truth, results, t, "all_point")["AP"] for t in thresholds],
        "voc_AP_11_point": [voc_ap(ground_truth, results, t, "11_point")["AP"] for t in thresholds],
    }
