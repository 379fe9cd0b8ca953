"""CorLoc of CAM pseudo-boxes per box score, beside CorLoc as the weakly supervised localisation
literature computes it, on real photos, ImageNet-like canvases and BCCD:

    python tools/corloc_scores.py --output docs/results/corloc_scores.json [--canvases 100] [--bccd DIR]
    python tools/corloc_scores.py --table_from docs/results/corloc_scores.json   # the committed table

The classifier is the packaged ImageNet EfficientNet-Lite0 (the paper's CAM options: scales
288 / 576, flip, thresholds 0.2-0.5), boxing its own top-1 class, so a box is scored against
every true box of its image whatever the class (localisation only). Image sets:

* photos: scikit-image's bundled photos with boxes drawn by eye around the object of the class
  the Lite0 gives (tools/pseudo_box_photos.py; the rocket's class is given);
* canvases: the first `--canvases` validation canvases of the ImageNet-like set
  (frozen_det.data.offline.canvases, seed 0, one Fashion-MNIST object per canvas);
* bccd: BCCD's test split (VOC folder `--bccd`, or BCCD_DIR; skipped when absent), many cells
  per image.

Per image the CAM is computed once; per variant (the paper's text, the authors' release) and
box score (frozen_det.localization.cam_boxes.SCORES) the boxes follow, and per set: CorLoc of
the top-scoring box, of the largest box, of any box (the best a score could reach), and of the
WSOL box (Zhou et al. 2016: the largest component above 20% of the CAM's maximum), at IoU 0.5.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from bench_common import machine_info, write_json
from pseudo_box_photos import EYE_BOXES, GIVEN_CLASS

LITE0 = "configs/backbones/efficientnet_lite0_imagenet.py"
RULES = (
    ("paper", "mean_cam"),
    ("paper", "area"),
    ("paper", "excess_mass"),
    ("released", "area"),
    ("released", "excess_mass"),
)
COLUMNS = (
    ("corloc", "top box"),
    ("corloc_largest_box", "largest box"),
    ("corloc_any_box", "any box"),
    ("corloc_wsol", "WSOL box"),
)


def photo_set() -> list[dict]:
    import skimage.data
    from PIL import Image

    out = []
    for name, eye in EYE_BOXES.items():
        image = np.asarray(Image.fromarray(getattr(skimage.data, name)()).convert("RGB"))
        out.append({"image": image, "truth": [eye], "class_id": GIVEN_CLASS.get(name)})
    return out


def canvas_set(count: int) -> list[dict]:
    import tempfile

    from frozen_det.data.files import read_rgb
    from frozen_det.projects.canvases import ensure_canvases

    folder = os.path.join(tempfile.gettempdir(), f"corloc_scores_canvases_{count}")  # ensure_canvases keeps a set
    ensure_canvases(folder, "imagenet", num_train=1, num_val=count, seed=0)
    with open(os.path.join(folder, "annotations", "instances_val.json")) as f:
        coco = json.load(f)
    boxes = {}
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        boxes.setdefault(a["image_id"], []).append((x, y, x + w, y + h))
    return [
        {
            "image": np.asarray(read_rgb(os.path.join(folder, "val", image["file_name"]))),
            "truth": boxes[image["id"]],
            "class_id": None,
        }
        for image in coco["images"][:count]
    ]


def bccd_set(path: str) -> list[dict]:
    from frozen_det.data.detection.sources.voc_folder import VocFolderSource
    from frozen_det.data.files import read_rgb

    out = []
    for record in VocFolderSource(path).split_records("test"):
        truth = [(x1, y1, x2, y2) for (y1, x1, y2, x2), crowd in zip(record.boxes, record.is_crowd) if not crowd]
        image = np.asarray(read_rgb(record.image_path))
        out.append({"image": image, "truth": truth, "class_id": None})
    return out


def score_set(clf, items: list[dict], batch_size: int) -> dict:
    """Per rule "variant/score", the localisation metrics of the set's boxes."""
    from frozen_det.evaluation.localization import localisation_quality
    from frozen_det.localization.cam import batched_feature_maps
    from frozen_det.localization.cam_boxes import PseudoBoxOptions, pseudo_boxes_from_maps

    base = PseudoBoxOptions()
    t0 = time.perf_counter()
    maps = batched_feature_maps(clf, [item["image"] for item in items], base.scales, base.flip, batch_size)
    seconds = time.perf_counter() - t0
    truth = {
        "annotations": [
            {"image_id": i, "bbox": [x1, y1, x2 - x1, y2 - y1]}
            for i, item in enumerate(items)
            for x1, y1, x2, y2 in item["truth"]
        ]
    }
    results = {}
    for variant, score in RULES:
        options = PseudoBoxOptions(variant=variant, score=score)
        pseudo = {"images": [{"id": i} for i in range(len(items))], "annotations": [], "wsol_boxes": []}
        for i, (item, image_maps) in enumerate(zip(items, maps)):
            boxes, _, _ = pseudo_boxes_from_maps(clf, image_maps, item["image"].shape[:2], options, item["class_id"])
            for (y1, x1, y2, x2), s in zip(boxes.boxes.tolist(), boxes.scores.tolist()):
                pseudo["annotations"].append({"image_id": i, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})
            y1, x1, y2, x2 = boxes.wsol_box.tolist()
            pseudo["wsol_boxes"].append({"image_id": i, "bbox": [x1, y1, x2 - x1, y2 - y1]})
        quality = localisation_quality(pseudo, truth)
        results[f"{variant}/{score}"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in quality.items()}
    return {"images": len(items), "cam_seconds_per_image": round(seconds / max(len(items), 1), 3), "rules": results}


def table(results: dict) -> str:
    """The markdown table of a results file: one row per image set and rule."""
    lines = [
        "| images | n | variant / score | " + " | ".join(f"CorLoc, {title}" for _, title in COLUMNS) + " |",
        "|---|---:|---|" + "---:|" * len(COLUMNS),
    ]
    for name, entry in results["sets"].items():
        for rule, quality in entry["rules"].items():
            cells = " | ".join(f"{quality[key]:.3f}" for key, _ in COLUMNS)
            lines.append(f"| {name} | {entry['images']} | {rule} | {cells} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="")
    parser.add_argument("--canvases", type=int, default=100)
    parser.add_argument("--bccd", default=os.environ.get("BCCD_DIR", ""))
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--table_from", default="", help="print the table of a results JSON, nothing computed")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.table_from:
        with open(args.table_from) as f:
            print(table(json.load(f)))
        return

    from frozen_det.projects.provenance import commit
    from frozen_det.projects.runner import repo_config
    from frozen_det.pseudo_boxes import load_cam_classifier

    clf = load_cam_classifier(repo_config(LITE0))
    sets = {"photos": photo_set(), "canvases": canvas_set(args.canvases)}
    if args.bccd and os.path.isdir(args.bccd):
        sets["bccd"] = bccd_set(args.bccd)
    out = {
        **commit(),
        "command": "python tools/corloc_scores.py " + " ".join(argv),
        "classifier": LITE0,
        "machine": machine_info(),
        "sets": {name: score_set(clf, items, args.batch_size) for name, items in sets.items()},
    }
    print(table(out))
    if args.output:
        write_json(args.output, out)


if __name__ == "__main__":
    main()
