"""Scores of pseudo-boxes against true boxes (CorLoc, box recall, precision) and a detector
used as a classifier (DAP sec. 4.3), on hand-made cases and against pycocotools' IoU."""

import numpy as np
from pycocotools import mask as mask_utils

from frozen_det.evaluation.detector_as_classifier import detector_as_classifier, image_labels, summed_class_scores
from frozen_det.evaluation.localization import iou_matrix, localisation_quality, xywh_to_xyxy


def test_iou_matrix_equals_pycocotools():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 50, (6, 2)), rng.uniform(0, 50, (4, 2))
    a_xywh = np.concatenate([a, rng.uniform(1, 40, (6, 2))], 1)
    b_xywh = np.concatenate([b, rng.uniform(1, 40, (4, 2))], 1)
    expected = mask_utils.iou(a_xywh.tolist(), b_xywh.tolist(), [0] * 4)
    np.testing.assert_allclose(iou_matrix(xywh_to_xyxy(a_xywh), xywh_to_xyxy(b_xywh)), expected, rtol=1e-5)


def test_corloc_recall_and_precision():
    truth = {
        "annotations": [
            {"image_id": 1, "bbox": [0, 0, 10, 10]},
            {"image_id": 1, "bbox": [20, 20, 10, 10]},
            {"image_id": 2, "bbox": [0, 0, 10, 10]},
            {"image_id": 3, "bbox": [0, 0, 10, 10], "iscrowd": 1},  # no true box: image 3 not counted
        ]
    }
    pseudo = {
        "images": [{"id": 1}, {"id": 2}, {"id": 3}],
        "annotations": [
            {"image_id": 1, "bbox": [21, 21, 10, 10], "score": 0.9},  # top box hits the second object
            {"image_id": 1, "bbox": [40, 40, 5, 5], "score": 0.5},  # a miss
            {"image_id": 2, "bbox": [0, 0, 30, 30], "score": 0.8},  # top box too loose (IoU 1/9)
            {"image_id": 2, "bbox": [1, 0, 10, 10], "score": 0.1},  # a hit, not on top
        ],
    }
    q = localisation_quality(pseudo, truth)
    assert q["images"] == 2 and q["corloc"] == 0.5 and "corloc_wsol" not in q
    assert q["box_recall"] == 2 / 3 and q["precision"] == 2 / 4
    assert q["corloc_any_box"] == 1.0  # image 2's hit is not on top
    assert q["corloc_largest_box"] == 0.5  # image 1: the hit is the larger; image 2: the loose box

    wsol = [{"image_id": 1, "bbox": [0, 0, 9, 10]}, {"image_id": 2, "bbox": [0, 0, 5, 5]}]
    assert localisation_quality(dict(pseudo, wsol_boxes=wsol), truth)["corloc_wsol"] == 0.5


def test_the_detector_as_a_classifier_sums_detection_scores_per_class():
    classes = np.array([[1, 2, 2, 0], [3, 1, 1, 1], [1, 1, 1, 1]])
    scores = np.array([[0.9, 0.5, 0.5, 0.7], [0.8, 0.3, 0.3, 0.3], [0.9, 0.9, 0.9, 0.9]])
    valid = np.array([[True, True, True, False], [True, True, True, True], [False] * 4])
    sums = summed_class_scores(classes, scores, valid, num_classes=3)
    np.testing.assert_allclose(sums, [[0, 0.9, 1.0, 0], [0, 0.9, 0, 0.8], [0, 0, 0, 0]])

    batch = {"image": np.zeros((3, 8, 8, 3)), "image_id": np.array([5, 6, 7]), "example_valid": np.array([1, 1, 1])}

    def detect(variables, inputs):
        del variables
        return {
            "classes": classes,
            "scores": scores,
            "valid": valid,
            "image_id": inputs["image_id"],
            "example_valid": inputs["example_valid"],
        }

    coco = {
        "categories": [{"id": 7}, {"id": 9}, {"id": 11}],
        "images": [{"id": 5, "label": 11}, {"id": 6, "label": 7}, {"id": 7, "label": 7}],
    }
    labels = image_labels(coco)
    assert labels == {5: 3, 6: 1, 7: 1}
    result = detector_as_classifier(detect, None, [batch], ("image", "image_id", "example_valid"), labels, 3)
    # image 5: class 2 wins (1.0 > 0.9) but is class 3 -> wrong; image 6: class 1 (0.9 > 0.8)
    # -> right; image 7: no detection -> wrong.
    assert result["top1"] == 1 / 3 and result["images_without_detections"] == 1
    assert result["mean_per_class_accuracy"] == (0.5 + 0.0) / 2
