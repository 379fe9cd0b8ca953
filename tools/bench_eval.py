"""COCO evaluation time: pycocotools against faster-coco-eval on identical detections.

    python tools/bench_eval.py [--voc DIR] [--images 5000] [--repeats 3] [--json out.json]

Two inputs: the test split of a Pascal-VOC folder (e.g. BCCD; its ground truth as our
voc_folder source converts it) and a synthetic split of `--images` images (640x480, 1-20
objects of 20 classes, COCO-like sizes, polygon masks as COCO's own annotations have). The
detections are the ground truth moved and resized by seeded noise plus false positives, up
to 100 per image with random scores, boxes and (with `--segm`) RLE masks, as
frozen_det.evaluation.coco submits them. Each evaluator times the full path (index the ground
truth, load the results, evaluate, accumulate, summarize), round robin, and the table says
how far apart the two evaluators' numbers are: the largest absolute difference over every
summary value and the whole precision array (IoU x recall x class x area x max-dets), and
whether they are bit-identical.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import statistics
import sys
import time

import numpy as np
from bench_common import machine_info, write_json

EVALUATORS = ("pycocotools", "faster-coco-eval")


def voc_ground_truth(path: str, split: str) -> dict:
    from frozen_det.data.detection.sources.voc_folder import VocFolderSource

    return VocFolderSource(path).coco_ground_truth(split)


def synthetic_ground_truth(num_images: int, num_classes: int = 20, seed: int = 0) -> dict:
    """COCO-format ground truth with polygon masks (ellipses inscribed in the boxes)."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    for image_id in range(1, num_images + 1):
        height, width = 480, 640
        images.append({"id": image_id, "height": height, "width": width})
        for _ in range(rng.integers(1, 21)):
            # Log-uniform side lengths 8-400 px: small, medium and large objects all occur.
            w, h = np.exp(rng.uniform(np.log(8), np.log(400), 2))
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            polygon = np.stack([x + w / 2 * (1 + np.cos(angles)), y + h / 2 * (1 + np.sin(angles))], 1)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(rng.integers(1, num_classes + 1)),
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "area": float(np.pi * w * h / 4),
                    "iscrowd": 0,
                    "segmentation": [polygon.round(2).ravel().tolist()],
                }
            )
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c, "name": f"class_{c}"} for c in range(1, num_classes + 1)],
    }


def jittered_detections(ground_truth: dict, segm: bool, seed: int = 1) -> list[dict]:
    """Per image: every ground-truth box moved and resized by up to ~20% (some with the wrong
    class), plus false positives, at most 100 per image, random scores."""
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    by_image: dict[int, list] = {}
    for a in ground_truth["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    categories = [c["id"] for c in ground_truth["categories"]]
    results = []
    for image in ground_truth["images"]:
        height, width = image["height"], image["width"]
        boxes = []
        for a in by_image.get(image["id"], []):
            x, y, w, h = a["bbox"]
            dx, dy = rng.normal(0, 0.1, 2) * (w, h)
            sw, sh = np.exp(rng.normal(0, 0.15, 2))
            category = a["category_id"] if rng.random() > 0.1 else int(rng.choice(categories))
            boxes.append((x + dx, y + dy, w * sw, h * sh, category))
        for _ in range(rng.integers(0, 100 - len(boxes) + 1) // 2):
            w, h = rng.uniform(4, min(width, height) / 2, 2)
            boxes.append((rng.uniform(0, width - w), rng.uniform(0, height - h), w, h, int(rng.choice(categories))))
        for x, y, w, h, category in boxes[:100]:
            x0, y0 = max(x, 0.0), max(y, 0.0)
            x1, y1 = min(x + w, width), min(y + h, height)
            if x1 - x0 < 1 or y1 - y0 < 1:
                continue
            result = {
                "image_id": image["id"],
                "category_id": category,
                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                "score": float(rng.random()),
            }
            if segm:
                binary = np.zeros((height, width), np.uint8)
                binary[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))] = 1
                rle = mask_utils.encode(np.asfortranarray(binary))
                rle["counts"] = rle["counts"].decode("ascii")
                result["segmentation"] = rle
            results.append(result)
    return results


def run_evaluator(name: str, ground_truth: dict, results: list[dict], iou_type: str):
    """(stats, precision array) of one full evaluation."""
    if name == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval as Eval
    else:
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as Eval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(ground_truth)
        gt.createIndex()
        ev = Eval(gt, gt.loadRes(copy.deepcopy(results)), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats[:12], np.float64), np.asarray(ev.eval["precision"], np.float64)


def bench(label: str, ground_truth: dict, results: list[dict], iou_type: str, repeats: int) -> dict:
    times: dict[str, list[float]] = {name: [] for name in EVALUATORS}
    outputs = {}
    for _ in range(repeats):
        for name in EVALUATORS:
            t0 = time.perf_counter()
            outputs[name] = run_evaluator(name, ground_truth, results, iou_type)
            times[name].append(time.perf_counter() - t0)
    (stats_a, precision_a), (stats_b, precision_b) = outputs["pycocotools"], outputs["faster-coco-eval"]
    row = {
        "input": label,
        "iou_type": iou_type,
        "images": len(ground_truth["images"]),
        "ground_truth": len(ground_truth["annotations"]),
        "detections": len(results),
        "seconds": {name: statistics.median(t) for name, t in times.items()},
        "bit_identical": bool(np.array_equal(stats_a, stats_b) and np.array_equal(precision_a, precision_b)),
        "max_abs_difference": float(max(np.max(np.abs(stats_a - stats_b)), np.max(np.abs(precision_a - precision_b)))),
        "AP": float(stats_a[0]),
    }
    row["speedup"] = row["seconds"]["pycocotools"] / row["seconds"]["faster-coco-eval"]
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voc", help="a Pascal-VOC folder whose test split is evaluated (e.g. BCCD)")
    parser.add_argument("--voc_split", default="test")
    parser.add_argument("--images", type=int, default=5000, help="images of the synthetic split")
    parser.add_argument("--segm", action="store_true", help="also time mask (segm) evaluation of the synthetic split")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the table and the machine description here")
    args = parser.parse_args()

    inputs = []
    if args.voc:
        gt = voc_ground_truth(args.voc, args.voc_split)
        inputs.append((f"VOC folder {args.voc} {args.voc_split}", gt, jittered_detections(gt, segm=False), "bbox"))
    gt = synthetic_ground_truth(args.images)
    results = jittered_detections(gt, segm=args.segm)
    inputs.append((f"synthetic {args.images} images", gt, results, "bbox"))
    if args.segm:
        inputs.append((f"synthetic {args.images} images", gt, results, "segm"))

    rows = []
    print("| input | type | images | detections | pycocotools (s) | faster-coco-eval (s) | speedup | max difference |")
    print("|---|---|---|---|---|---|---|---|")
    for label, gt, results, iou_type in inputs:
        row = bench(label, gt, results, iou_type, args.repeats)
        rows.append(row)
        s = row["seconds"]
        print(
            f"| {label} | {iou_type} | {row['images']:,} | {row['detections']:,} | {s['pycocotools']:.2f} | "
            f"{s['faster-coco-eval']:.2f} | {row['speedup']:.1f}x | "
            f"{'0 (bit-identical)' if row['bit_identical'] else format(row['max_abs_difference'], '.1e')} |",
            flush=True,
        )
    if args.json:
        from frozen_det.projects.provenance import commit

        write_json(args.json, {"rows": rows, "machine": machine_info(), "repeats": args.repeats, **commit()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
