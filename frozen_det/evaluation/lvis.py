"""LVIS evaluation through the official `lvis` API (docs/reference.md §6, "LVIS").

The federated rules live in ``lvis.LVISEval``: per image, detections of categories that are
neither present nor in ``neg_category_ids`` are discarded, unmatched detections of categories in
``not_exhaustive_category_ids`` are not false positives, at most 300 detections per image count,
and APr / APc / APf group categories by their ``frequency`` (r/c/f).

Install: ``pip install "frozen_det[lvis]"`` (the test extra includes it).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from frozen_det.evaluation.coco import DetectionResults, per_class_ap

LVIS_MAX_DETECTIONS = 300
SUMMARY_KEYS = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "APr",
    "APc",
    "APf",
    "AR@300",
    "ARs@300",
    "ARm@300",
    "ARl@300",
)
_IMAGE_FIELDS = ("neg_category_ids", "not_exhaustive_category_ids")


def _lvis_api():
    try:
        import lvis
    except ImportError as e:
        raise ImportError(
            "LVIS evaluation needs the official `lvis` package: pip install "
            "'frozen_det[lvis]' (or set data.eval_metric='coco')"
        ) from e
    return lvis


@contextlib.contextmanager
def _numpy_float_alias():
    """lvis 0.5.3 (the last release) calls ``np.float``, removed in NumPy 1.24; the alias is
    provided only while the API runs and removed afterwards."""
    added = "float" not in np.__dict__
    if added:
        np.float = float
    try:
        yield
    finally:
        if added:
            del np.float


def check_lvis_ground_truth(ground_truth: Mapping[str, Any]) -> None:
    """The federated fields the API needs, with a message naming what is missing."""
    missing_freq = [
        c.get("name", c["id"]) for c in ground_truth["categories"] if c.get("frequency") not in ("r", "c", "f")
    ]
    if missing_freq:
        raise ValueError(
            f"LVIS evaluation: categories without an r/c/f 'frequency' (e.g. {missing_freq[:5]}); "
            "the source must provide them (LVIS json) or they are computed from the train split"
        )
    missing_img = [im["id"] for im in ground_truth["images"] if any(k not in im for k in _IMAGE_FIELDS)]
    if missing_img:
        raise ValueError(
            f"LVIS evaluation: images without {_IMAGE_FIELDS} (e.g. ids {missing_img[:5]}): "
            "this is not a federated (LVIS-format) dataset; use data.eval_metric='coco'"
        )


class LvisEvaluator(DetectionResults):
    """Accumulates detections (see DetectionResults.add) and scores them with ``lvis.LVISEval``.

    ``max_detections`` defaults to LVIS's 300 per image (the API keeps the top 300 anyway).
    """

    def __init__(
        self,
        ground_truth: Mapping[str, Any],
        category_ids: Sequence[int],
        *,
        include_masks: bool = False,
        max_detections: int = LVIS_MAX_DETECTIONS,
    ):
        check_lvis_ground_truth(ground_truth)
        super().__init__(ground_truth, category_ids, include_masks=include_masks, max_detections=max_detections)

    def _ground_truth(self):
        lvis = _lvis_api()

        class InMemoryLVIS(lvis.LVIS):
            """The API reads its ground truth from a path; ours is a dict already."""

            def _load_json(self, dataset):
                return dataset

        return InMemoryLVIS(self._gt_dict)

    def _run(self, gt, iou_type: str) -> tuple[dict, dict]:
        if not self.results:
            return {k: 0.0 for k in SUMMARY_KEYS}, {}
        lvis = _lvis_api()
        # LVISResults keys off the first result: boxes only for bbox; for segm only masks, so
        # areas (size ranges) are mask areas, as Detectron2's LVIS evaluator does.
        drop = "segmentation" if iou_type == "bbox" else "bbox"
        results = [{k: v for k, v in r.items() if k != drop} for r in self.results]
        quiet = logging.getLogger("lvis")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            with _numpy_float_alias(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # the API's logger.warn calls
                dt = lvis.LVISResults(gt, results, max_dets=LVIS_MAX_DETECTIONS)
                ev = lvis.LVISEval(gt, dt, iou_type)
                ev.params.img_ids = sorted(set(self.image_ids))
                ev.run()
        finally:
            quiet.setLevel(level)
        summary = {k: float(v) for k, v in ev.get_results().items()}
        # Per-class AP over IoU .50:.95, area "all". Groups without evaluated categories
        # report -1 (the API's convention).
        return summary, per_class_ap(ev.eval["precision"][:, :, :, 0], ev.params.cat_ids)
