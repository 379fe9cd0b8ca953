"""COCO-style evaluation (docs/reference.md §6) through faster-coco-eval, the C++ port of
pycocotools' COCOeval: the same numbers (tests/evaluation/test_coco.py compares them with
pycocotools' to 1e-12; `tools/bench_eval.py` measures 4-13x less time, docs/performance.md).

Detections arrive as fixed-size padded arrays in original-image pixels (yxyx); only valid
entries are submitted (padding has no category). Masks arrive as per-detection probabilities
in the box frame (e.g. 28x28) and are pasted into the original image here, on the host.
"""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any, Mapping, Sequence

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster
from pycocotools import mask as mask_utils

SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "ARmax1", "ARmax10", "ARmax100", "ARs", "ARm", "ARl")


def paste_mask(mask: np.ndarray, box: Sequence[float], image_hw: tuple[int, int], threshold: float = 0.5) -> np.ndarray:
    """One [m, m] box-frame probability mask -> a bool [H, W] image mask (Detectron-style: pad by
    one pixel and expand the box by (m + 2) / m so the mask's border lands on the box edge, then
    bilinear sampling at pixel centres), the same rule as ops.masks.paste_masks."""
    height, width = image_hw
    m = mask.shape[0]
    padded = np.pad(mask.astype(np.float32), 1)
    ymin, xmin, ymax, xmax = (float(v) for v in box)
    cy, cx = (ymin + ymax) / 2, (xmin + xmax) / 2
    h = max(ymax - ymin, 1e-6) * (m + 2) / m
    w = max(xmax - xmin, 1e-6) * (m + 2) / m
    y0, x0 = cy - h / 2, cx - w / 2
    out = np.zeros((height, width), bool)
    r0, r1 = max(int(np.floor(y0)), 0), min(int(np.ceil(y0 + h)), height)
    c0, c1 = max(int(np.floor(x0)), 0), min(int(np.ceil(x0 + w)), width)
    if r1 <= r0 or c1 <= c0:
        return out
    # Pixel centre -> padded-mask coordinate (cell i of m + 2 has its centre at i).
    ys = (np.arange(r0, r1) + 0.5 - y0) / h * (m + 2) - 0.5
    xs = (np.arange(c0, c1) + 0.5 - x0) / w * (m + 2) - 0.5

    def weights(coords):
        coords = np.clip(coords, 0, m + 1)
        lo = np.minimum(np.floor(coords).astype(int), m)
        frac = coords - lo
        mat = np.zeros((coords.size, m + 2), np.float32)
        mat[np.arange(coords.size), lo] = 1 - frac
        mat[np.arange(coords.size), lo + 1] += frac
        return mat

    values = weights(ys) @ padded @ weights(xs).T
    out[r0:r1, c0:c1] = values > threshold
    return out


class DetectionResults:
    """Accumulates padded detections as COCO-format result dicts (xywh boxes in original
    pixels, dataset category ids, RLE masks): the common input of the COCO and LVIS APIs.

    Args:
      ground_truth: a COCO-format dict (images, annotations, categories) in original pixels.
      category_ids: maps the model's contiguous class id (index) to the dataset category id;
        index 0 (background) is unused.
      max_detections: detections per image submitted (the top-scoring ones).
    """

    def __init__(
        self,
        ground_truth: Mapping[str, Any],
        category_ids: Sequence[int],
        *,
        include_masks: bool = False,
        max_detections: int = 100,
    ):
        self._gt_dict = copy.deepcopy(dict(ground_truth))
        self._gt_dict.setdefault("info", {})
        self._gt_dict.setdefault("licenses", [])
        self.category_ids = list(category_ids)
        self.include_masks = include_masks
        self.max_detections = max_detections
        self.results: list[dict] = []
        self.image_ids: list[int] = []
        self._sizes = {int(im["id"]): (int(im["height"]), int(im["width"])) for im in self._gt_dict["images"]}

    def add(self, image_ids, boxes, scores, classes, valid, masks=None) -> None:
        """boxes: [B, K, 4] yxyx in original pixels; masks: [B, K, m, m] probabilities or None."""
        boxes, scores, classes, valid = map(np.asarray, (boxes, scores, classes, valid))
        for b, image_id in enumerate(np.asarray(image_ids).tolist()):
            image_id = int(image_id)
            if image_id not in self._sizes:
                raise KeyError(f"image id {image_id} is not in the ground truth")
            self.image_ids.append(image_id)
            order = [k for k in np.argsort(-scores[b], kind="stable") if valid[b, k]]
            for k in order[: self.max_detections]:
                ymin, xmin, ymax, xmax = (float(v) for v in boxes[b, k])
                result = {
                    "image_id": image_id,
                    "category_id": int(self.category_ids[int(classes[b, k])]),
                    "bbox": [xmin, ymin, xmax - xmin, ymax - ymin],
                    "score": float(scores[b, k]),
                }
                if self.include_masks and masks is not None:
                    binary = paste_mask(np.asarray(masks[b, k]), boxes[b, k], self._sizes[image_id])
                    rle = mask_utils.encode(np.asfortranarray(binary.astype(np.uint8)))
                    rle["counts"] = rle["counts"].decode("ascii")
                    result["segmentation"] = rle
                self.results.append(result)

    def ground_truth_dict(self) -> dict:
        """The COCO-format ground truth the detections are scored against."""
        return self._gt_dict

    def _ground_truth(self):
        """The ground truth in the evaluating API's own form."""
        raise NotImplementedError

    def _run(self, gt, iou_type: str) -> tuple[dict, dict]:
        """(summary, per-class AP) for "bbox" or "segm"."""
        raise NotImplementedError

    def evaluate(self) -> dict[str, Any]:
        """The summary ("AP", "AP50", ...), "per_class_AP" {category id: AP} and "num_images",
        plus mask_* keys with masks."""
        gt = self._ground_truth()
        summary, per_class = self._run(gt, "bbox")
        out: dict[str, Any] = dict(summary, per_class_AP=per_class, num_images=len(set(self.image_ids)))
        if self.include_masks:
            mask_summary, mask_per_class = self._run(gt, "segm")
            out.update({f"mask_{k}": v for k, v in mask_summary.items()})
            out["mask_per_class_AP"] = mask_per_class
        return out


def per_class_ap(precision: np.ndarray, category_ids) -> dict:
    """Per-category AP from a [T, R, K] precision array (IoU thresholds, recall points,
    categories; -1 where a category has no ground truth): the mean over valid entries, NaN
    for categories never evaluated."""
    out = {}
    for k, cat in enumerate(category_ids):
        p = precision[:, :, k]
        out[int(cat)] = float(np.mean(p[p > -1])) if np.any(p > -1) else float("nan")
    return out


class CocoEvaluator(DetectionResults):
    """COCOeval (bbox, and segm with masks) over the accumulated detections; COCOeval itself
    scores at most 100 detections per image, as the COCO metric defines."""

    def _run(self, gt: COCO, iou_type: str) -> tuple[dict, dict]:
        image_ids = sorted(set(self.image_ids))
        if not self.results:
            return {k: 0.0 for k in SUMMARY_KEYS}, {}
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes(copy.deepcopy(self.results))
            ev = COCOeval_faster(gt, dt, iou_type)
            ev.params.imgIds = image_ids
            # Keep COCO's [1, 10, 100]: COCOeval.summarize() hard-codes maxDets=100 for "AP".
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        summary = {k: float(v) for k, v in zip(SUMMARY_KEYS, ev.stats)}  # stats[12:]: extras
        # Per-class AP at IoU .50:.95, area all, max dets 100.
        return summary, per_class_ap(ev.eval["precision"][:, :, :, 0, -1], ev.params.catIds)

    def _ground_truth(self) -> COCO:
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO()
            gt.dataset = copy.deepcopy(self._gt_dict)
            gt.createIndex()
        return gt
