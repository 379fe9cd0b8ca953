"""How well pseudo-boxes localise objects, against the true boxes of the same images (both
COCO-format dicts; matched by image id):

* CorLoc (Deselaers et al. 2012, the weakly supervised localisation metric): the share of
  images whose top-scoring box has IoU >= `iou` with a true box of the image; beside it the
  same share for each image's largest box and for any of its boxes (the best a score could
  reach), and, where the file has them, for its `wsol_boxes`, the one box per image by which
  the CAM literature reports CorLoc (Zhou et al. 2016; frozen_det.localization.cam_boxes);
* box recall: the share of true boxes that some pseudo-box covers with IoU >= `iou`;
* precision: the share of pseudo-boxes with IoU >= `iou` with some true box.
"""

from __future__ import annotations

import collections

import numpy as np

from frozen_det.ops.boxes import pairwise_iou


def xywh_to_xyxy(boxes) -> np.ndarray:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU [N, M] of x1y1x2y2 boxes (frozen_det.ops.boxes.pairwise_iou: IoU does not care
    which axis comes first)."""
    return np.asarray(pairwise_iou(np.asarray(a, np.float32), np.asarray(b, np.float32)))


def _by_image(annotations) -> dict:
    out = collections.defaultdict(list)
    for a in annotations:
        out[a["image_id"]].append(a)
    return out


def localisation_quality(pseudo: dict, truth: dict, iou: float = 0.5) -> dict:
    """CorLoc (of the top-scoring box, the largest, any box, and the `wsol_boxes` where
    `pseudo` has them), box recall and precision of `pseudo` (annotations with `score`) against
    `truth`, over the images of `pseudo` that have true boxes."""
    true_by_image = _by_image(a for a in truth["annotations"] if not a.get("iscrowd"))
    pseudo_by_image = _by_image(pseudo["annotations"])
    wsol_by_image = {a["image_id"]: a["bbox"] for a in pseudo.get("wsol_boxes", ())}
    hits = collections.Counter()
    images, covered, true_total, precise, pseudo_total = 0, 0, 0, 0, 0
    for image in pseudo["images"]:
        gt = true_by_image.get(image["id"], [])
        if not gt:
            continue
        images += 1
        gt_boxes = xywh_to_xyxy([a["bbox"] for a in gt])
        true_total += len(gt_boxes)
        if image["id"] in wsol_by_image:
            hits["wsol"] += bool(iou_matrix(xywh_to_xyxy(wsol_by_image[image["id"]]), gt_boxes).max() >= iou)
        boxes = sorted(pseudo_by_image.get(image["id"], []), key=lambda a: -a.get("score", 1.0))
        if not boxes:
            continue
        xyxy = xywh_to_xyxy([a["bbox"] for a in boxes])
        ious = iou_matrix(xyxy, gt_boxes)
        hit = ious.max(axis=1) >= iou
        areas = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
        hits["top"] += bool(hit[0])
        hits["largest"] += bool(hit[int(np.argmax(areas))])
        hits["any"] += bool(hit.any())
        covered += int((ious.max(axis=0) >= iou).sum())
        precise += int(hit.sum())
        pseudo_total += len(boxes)
    out = {
        "corloc": hits["top"] / max(images, 1),
        "corloc_largest_box": hits["largest"] / max(images, 1),
        "corloc_any_box": hits["any"] / max(images, 1),
        "box_recall": covered / max(true_total, 1),
        "precision": precise / max(pseudo_total, 1),
        "images": images,
        "iou": iou,
    }
    if wsol_by_image:
        out["corloc_wsol"] = hits["wsol"] / max(images, 1)
    return out
