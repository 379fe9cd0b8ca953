"""A detector used as an image classifier (DAP, Zhong et al., CVPR 2021, sec. 4.3, "Accuracy on
ImageNet"): the score of class c for an image is the sum of the confidences of the image's
detections of class c; the predicted class is the highest sum. Images with no detection are
counted as wrong (and counted)."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from frozen_det.evaluation.gather import gathered_outputs


def summed_class_scores(classes: np.ndarray, scores: np.ndarray, valid: np.ndarray, num_classes: int) -> np.ndarray:
    """[B, num_classes + 1] (index = detection class id, 0 = background, never detected): the
    sum of the valid detections' scores per class, from [B, K] detection arrays."""
    out = np.zeros((classes.shape[0], num_classes + 1))
    rows = np.broadcast_to(np.arange(classes.shape[0])[:, None], classes.shape)
    np.add.at(out, (rows[valid], classes[valid]), scores[valid])
    return out


def image_labels(coco: Mapping) -> dict:
    """{image id: class id (1..C, categories in id order)} of a COCO dict whose images carry an
    image-level `label` (a category id), as the ImageNet-like canvases do."""
    index = {c["id"]: i + 1 for i, c in enumerate(sorted(coco["categories"], key=lambda c: c["id"]))}
    return {im["id"]: index[im["label"]] for im in coco["images"] if im.get("label") in index}


def detector_as_classifier(
    detect_fn: Callable,
    variables: Any,
    eval_pipeline,
    input_keys,
    labels: Mapping[int, int],
    num_classes: int,
    to_device: Callable | None = None,
) -> dict:
    """Top-1 accuracy (and mean per-class accuracy) of the detector as a classifier over the
    images of `eval_pipeline` that have a label in `labels` ({image id: class id 1..C});
    `detect_fn` as for frozen_det.evaluation.runner.evaluate_detections."""
    correct = np.zeros(num_classes + 1)
    seen = np.zeros(num_classes + 1)
    no_detection = 0
    for out in gathered_outputs(detect_fn, variables, eval_pipeline, input_keys, to_device):
        valid = out["valid"].astype(bool)
        sums = summed_class_scores(out["classes"], out["scores"], valid, num_classes)
        for i in range(len(valid)):
            label = labels.get(int(out["image_id"][i]))
            if label is None:
                continue
            seen[label] += 1
            if not valid[i].any():
                no_detection += 1
                continue
            correct[label] += int(np.argmax(sums[i]) == label)
    present = seen > 0
    return {
        "top1": float(correct.sum() / max(seen.sum(), 1)),
        "mean_per_class_accuracy": float(np.mean(correct[present] / seen[present])) if present.any() else 0.0,
        "images": int(seen.sum()),
        "images_without_detections": no_detection,
    }
