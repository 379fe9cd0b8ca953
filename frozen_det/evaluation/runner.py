"""Run a detector over an eval split and score it with COCO (COCOeval, frozen_det.evaluation.coco) or LVIS (official
`lvis` API, federated rules) metrics; write evaluation results as JSON.

Each process runs the same number of jitted detection steps over its shard (the eval pipeline
pads the last batch); detections are gathered to every process and the host scores them.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Callable

import jax

from frozen_det.evaluation.coco import CocoEvaluator
from frozen_det.evaluation.gather import gathered_outputs

METRICS = ("coco", "lvis")


def resolve_metric(metric: str, source) -> str:
    """`data.eval_metric`: "auto" is LVIS for sources with r/c/f frequencies (LVIS json folders,
    TFDS lvis), else COCO."""
    if metric == "auto":
        lvis_like = source.info.frequencies is not None or getattr(source, "kind", "") == "lvis"
        return "lvis" if lvis_like else "coco"
    if metric not in METRICS:
        raise ValueError(f"config.data.eval_metric={metric!r}: choose 'auto' or one of {METRICS}")
    return metric


def evaluate_detections(
    detect_fn: Callable,
    variables: Any,
    eval_pipeline,
    input_keys,
    *,
    to_device: Callable | None = None,
    include_masks: bool = False,
    max_detections: int = 100,
    metric: str = "auto",
    iou_thresholds=None,
) -> dict:
    """Runs one pass of `eval_pipeline` through `detect_fn(variables, batch)` (fed the batch's
    `input_keys`; returns original_boxes, scores, classes, valid, image_id, example_valid and
    optionally masks) and returns the COCO or LVIS summary (CocoEvaluator, LvisEvaluator), with
    per-class AP keyed by class name and `metric` naming the protocol; with `iou_thresholds`,
    also "ap_vs_iou" (frozen_det.evaluation.ap_vs_iou: COCO-style and VOC AP at each)."""
    source = eval_pipeline.source
    metric = resolve_metric(metric, source)
    ground_truth = source.coco_ground_truth(eval_pipeline.split)
    if metric == "lvis":
        from frozen_det.evaluation.lvis import LvisEvaluator

        evaluator = LvisEvaluator(
            ground_truth, source.info.category_ids, include_masks=include_masks, max_detections=max_detections
        )
    else:
        evaluator = CocoEvaluator(
            ground_truth, source.info.category_ids, include_masks=include_masks, max_detections=max_detections
        )
    for out in gathered_outputs(detect_fn, variables, eval_pipeline, input_keys, to_device):
        if not len(out["image_id"]):
            continue
        evaluator.add(
            out["image_id"],
            out["original_boxes"],
            out["scores"],
            out["classes"],
            out["valid"],
            out["masks"] if include_masks and "masks" in out else None,
        )
    result = dict(evaluator.evaluate(), metric=metric)
    if iou_thresholds:
        from frozen_det.evaluation.ap_vs_iou import ap_vs_iou

        result["ap_vs_iou"] = ap_vs_iou(evaluator.ground_truth_dict(), evaluator.results, iou_thresholds)
    names = source.info.class_names
    by_category = {int(c): names[i] for i, c in enumerate(source.info.category_ids) if i > 0}
    for key in ("per_class_AP", "mask_per_class_AP"):
        if key in result:
            result[key] = {by_category.get(int(c), str(c)): v for c, v in result[key].items()}
    return result


def json_safe(value: Any) -> Any:
    """`value` (nested dicts, lists, numbers) with every NaN or infinity as None: JSON has neither,
    and strict parsers reject Python's `NaN` (e.g. the AP of a class without ground truth)."""
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        value = value.tolist()
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_eval_json(workdir: str, split: str, step: int, result: dict, suffix: str = "") -> str:
    """`workdir/eval/<split>_step<N><suffix>.json` (process 0 only), strict JSON (`json_safe`:
    null where a metric is undefined)."""
    path = os.path.join(workdir, "eval", f"{split.replace('/', '_')}_step{step}{suffix}.json")
    if jax.process_index() == 0:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(json_safe(dict(result, step=step, split=split)), f, indent=2, sort_keys=True, allow_nan=False)
    return path
