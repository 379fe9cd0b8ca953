"""LVIS evaluation: our padded detections give the official lvis API's numbers, and the
federated rules (negative / not-exhaustive categories, r/c/f groups) act as LVIS defines."""

import json

import numpy as np
import pytest

lvis = pytest.importorskip("lvis")

from frozen_det.evaluation.lvis import LvisEvaluator, _numpy_float_alias  # noqa: E402

# Dataset category ids 3 (rare), 7 (common), 9 (frequent) = contiguous ids 1, 2, 3.
CATEGORY_IDS = [0, 3, 7, 9]
FREQUENCY = {3: "r", 7: "c", 9: "f"}
# image id -> (height, width, objects (x, y, w, h, category), negatives, not exhaustive)
IMAGES = {
    1: (200, 300, [(10, 20, 50, 40, 3), (100, 60, 80, 90, 7)], [9], []),
    2: (150, 250, [(30, 30, 120, 60, 9)], [3], [9]),
    3: (180, 180, [(40, 40, 60, 60, 3), (90, 10, 50, 50, 9)], [7], []),
}


def ground_truth():
    images, annotations = [], []
    for image_id, (h, w, objects, neg, not_exhaustive) in IMAGES.items():
        images.append(
            {
                "id": image_id,
                "height": h,
                "width": w,
                "neg_category_ids": neg,
                "not_exhaustive_category_ids": not_exhaustive,
            }
        )
        for x, y, bw, bh, cat in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": [x, y, bw, bh],
                    "area": bw * bh,
                    "segmentation": [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]],
                }
            )
    categories = [{"id": c, "name": f"cat{c}", "frequency": f} for c, f in FREQUENCY.items()]
    return {"images": images, "annotations": annotations, "categories": categories}


def detections(extra=(), shift=0.0):
    """Perfect detections (+ `extra` (image id, x, y, w, h, category, score)) as padded arrays."""
    per_image = {i: [(x + shift, y, w, h, c, 0.9) for x, y, w, h, c in IMAGES[i][2]] for i in IMAGES}
    for image_id, x, y, w, h, c, score in extra:
        per_image[image_id].append((x, y, w, h, c, score))
    k = max(len(v) for v in per_image.values())
    ids = np.array(sorted(per_image))
    boxes = np.zeros((len(ids), k, 4), np.float32)
    scores = np.zeros((len(ids), k), np.float32)
    classes = np.zeros((len(ids), k), np.int32)
    valid = np.zeros((len(ids), k), bool)
    for b, image_id in enumerate(ids):
        for j, (x, y, w, h, c, score) in enumerate(per_image[image_id]):
            boxes[b, j] = (y, x, y + h, x + w)
            scores[b, j], classes[b, j], valid[b, j] = score, CATEGORY_IDS.index(c), True
    return ids, boxes, scores, classes, valid


def evaluate(dets, **kw):
    ev = LvisEvaluator(ground_truth(), CATEGORY_IDS, **kw)
    ev.add(*dets)
    return ev.evaluate()


def official(tmp_path, results, iou_type="bbox"):
    """The lvis API called directly on files, as its README shows."""
    gt_path, dt_path = tmp_path / "gt.json", tmp_path / "dt.json"
    gt_path.write_text(json.dumps(ground_truth()))
    dt_path.write_text(json.dumps(results))
    with _numpy_float_alias():
        ev = lvis.LVISEval(str(gt_path), str(dt_path), iou_type)
        ev.run()
    return ev.get_results()


def test_perfect_detections_score_one_in_every_group():
    result = evaluate(detections())
    for key in ("AP", "AP50", "AP75", "APr", "APc", "APf"):
        assert result[key] == pytest.approx(1.0), key
    assert result["per_class_AP"] == {3: pytest.approx(1.0), 7: pytest.approx(1.0), 9: pytest.approx(1.0)}


def test_shifted_boxes_match_the_official_api(tmp_path):
    dets = detections(shift=7.0)
    ours = evaluate(dets)
    results = []
    for b, image_id in enumerate(dets[0]):
        for j in np.flatnonzero(dets[4][b]):
            y0, x0, y1, x1 = dets[1][b, j].tolist()
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": CATEGORY_IDS[dets[3][b, j]],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": float(dets[2][b, j]),
                }
            )
    ref = official(tmp_path, results)
    assert 0.0 < ours["AP"] < 1.0
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value), key


def test_federated_rules():
    base = evaluate(detections())
    # Category 7 in image 2: neither present nor verified absent -> ignored entirely.
    unknown = evaluate(detections(extra=[(2, 0, 0, 40, 40, 7, 0.99)]))
    assert unknown["AP"] == pytest.approx(base["AP"])
    # Category 3 in image 2 is verified absent: a confident detection is a false positive.
    negative = evaluate(detections(extra=[(2, 150, 100, 40, 40, 3, 0.99)]))
    assert negative["APr"] < base["APr"] and negative["per_class_AP"][3] < 1.0
    # Category 9 in image 2 is not exhaustively annotated: an unmatched detection is no FP.
    not_exhaustive = evaluate(detections(extra=[(2, 150, 100, 40, 40, 9, 0.99)]))
    assert not_exhaustive["APf"] == pytest.approx(base["APf"])
    # ... while the same box in image 1, where 9 is verified absent, is one.
    counted = evaluate(detections(extra=[(1, 150, 100, 40, 40, 9, 0.99)]))
    assert counted["APf"] < base["APf"]


def test_masks_are_scored(tmp_path):
    ids, boxes, scores, classes, valid = detections()
    masks = np.ones(boxes.shape[:2] + (28, 28), np.float32)  # full-box masks = the GT polygons
    result = evaluate((ids, boxes, scores, classes, valid, masks), include_masks=True)
    assert result["mask_AP"] == pytest.approx(1.0, abs=0.02) and result["mask_APr"] > 0.9
    assert set(result["mask_per_class_AP"]) == {3, 7, 9}


def test_missing_federated_fields_fail_with_a_message():
    gt = ground_truth()
    del gt["images"][0]["neg_category_ids"]
    with pytest.raises(ValueError, match="not a federated"):
        LvisEvaluator(gt, CATEGORY_IDS)
    gt = ground_truth()
    del gt["categories"][1]["frequency"]
    with pytest.raises(ValueError, match="frequency"):
        LvisEvaluator(gt, CATEGORY_IDS)


def test_numpy_alias_is_scoped():
    with _numpy_float_alias():
        assert np.float is float
    assert "float" not in np.__dict__
