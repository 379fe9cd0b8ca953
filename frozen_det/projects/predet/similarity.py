"""PreDet's Fig. 5b for any runs (Ramanathan, Wang, Mahajan, "PreDet: Large-scale weakly
supervised pre-training for detection", ICCV 2021, sec. 4): cosine similarity of two boxes' RoI
features against their IoU, per box-size bucket (frozen_det.evaluation.box_similarity), the same
box pairs for every run. The PreDet project's similarity rows and the command
tools/plot_box_similarity.py use it.

A run is named by a SPEC: a run's folder (two_stage or predet: its FPN + box head's last FC) or
"lite0" (the packaged ImageNet EfficientNet-Lite0 backbone alone, RoIAlign on its C4 map averaged
over the bins, with the mean / std of configs/canvases/detector.py:lite0). Images (``load_images``):
"bccd" (the BCCD test images, BCCD_DIR, with their true boxes as references), "photos"
(scikit-image's chelsea, coffee, astronaut, rocket, random reference boxes), or a folder: a COCO
folder (annotations/instances_<split>.json; its true boxes) or any folder of images (random
boxes). Every image is resized to canvas x canvas (aspect not kept; boxes scaled with it).
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np

from frozen_det.data.files import is_image_file
from frozen_det.projects.runner import repo_config

BUCKETS = ("small", "medium", "large", "all")


def _resize(image, boxes, canvas: int):
    from PIL import Image

    image = Image.fromarray(np.asarray(image, np.uint8)).convert("RGB")
    sy, sx = canvas / image.height, canvas / image.width
    resized = np.asarray(image.resize((canvas, canvas), Image.BILINEAR), np.float32)
    boxes = None if boxes is None else np.asarray(boxes, np.float32).reshape(-1, 4) * [sy, sx, sy, sx]
    return resized, boxes


def load_images(spec: str, canvas: int = 128, max_images: int = 64, seed: int = 0, split: str = "val"):
    """(images [N, canvas, canvas, 3] float32 on [0, 255], reference boxes: list of [n_i, 4] yxyx,
    a description)."""
    from PIL import Image

    from frozen_det.evaluation.box_similarity import random_boxes

    raw, boxes = [], []
    if spec == "bccd":
        import xml.etree.ElementTree as ET

        data = repo_config("configs/data/bccd.py").data
        with open(os.path.join(data.path, "ImageSets", "Main", f"{data.eval_split}.txt")) as f:
            ids = f.read().split()[:max_images]
        for image_id in ids:
            raw.append(np.asarray(Image.open(os.path.join(data.path, "JPEGImages", f"{image_id}.jpg")).convert("RGB")))
            root = ET.parse(os.path.join(data.path, "Annotations", f"{image_id}.xml")).getroot()
            corners = [
                [float(o.find("bndbox").find(k).text) for k in ("ymin", "xmin", "ymax", "xmax")]
                for o in root.iter("object")
            ]
            boxes.append(np.asarray(corners, np.float32).reshape(-1, 4))
        described = f"BCCD {data.eval_split} ({len(raw)} images, true boxes)"
    elif spec == "photos":
        from skimage import data as skdata

        raw = [np.asarray(f()) for f in (skdata.chelsea, skdata.coffee, skdata.astronaut, skdata.rocket)]
        raw = [np.repeat(r[..., None], 3, -1) if r.ndim == 2 else r[..., :3] for r in raw]
        boxes = [None] * len(raw)
        described = "scikit-image photos (4 images, random boxes)"
    else:
        annotations = os.path.join(spec, "annotations", f"instances_{split}.json")
        if os.path.exists(annotations):
            with open(annotations) as f:
                coco = json.load(f)
            by_image: dict = {}
            for a in coco["annotations"]:
                x, y, w, h = a["bbox"]
                by_image.setdefault(a["image_id"], []).append((y, x, y + h, x + w))
            for image in coco["images"][:max_images]:
                raw.append(np.asarray(Image.open(os.path.join(spec, split, image["file_name"])).convert("RGB")))
                boxes.append(np.asarray(by_image.get(image["id"], []), np.float32))
            described = f"{spec} {split} ({len(raw)} images, true boxes)"
        else:
            paths = sorted(p for p in glob.glob(os.path.join(spec, "**", "*"), recursive=True))
            paths = [p for p in paths if is_image_file(p)][:max_images]
            if not paths:
                raise ValueError(f"images {spec}: not bccd / photos, and no images under it")
            raw = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
            boxes = [None] * len(raw)
            described = f"{spec} ({len(raw)} images, random boxes)"
    images, references = [], []
    randoms = random_boxes(seed, len(raw), 8, (canvas, canvas))
    for image, b, r in zip(raw, boxes, randoms):
        resized, scaled = _resize(image, b, canvas)
        images.append(resized)
        references.append(r if scaled is None or not len(scaled) else scaled)
    return np.stack(images), references, described


def feature_fn(spec: str):
    """The jitted feature function of a SPEC (a run's folder or "lite0")."""
    from frozen_det.evaluation.box_similarity import backbone_roi_features, box_head_features, roi_feature_fn
    from frozen_det.training.run import Run, pretrained_model

    if spec == "lite0":
        config, _, model, variables = pretrained_model(repo_config("configs/canvases/detector.py:lite0"))
        return roi_feature_fn(model, variables, config.data.mean, config.data.std, backbone_roi_features(4))
    if not os.path.isdir(spec):
        raise ValueError(f"runs: {spec!r} is neither 'lite0' nor a run's folder")
    with Run(spec) as run:
        mean, std = run.config.data.mean, run.config.data.std
        return roi_feature_fn(run.model, run.variables(), mean, std, box_head_features)


def compare(runs: dict, images, references, seed: int = 0, max_pairs_per_image: int = 36) -> dict:
    """{name: similarity_vs_iou result} of {name: SPEC} on one set of pairs (at most
    `max_pairs_per_image`, drawn from `seed`)."""
    from frozen_det.evaluation.box_similarity import box_pairs, similarity_vs_iou

    canvas = images.shape[1:3]
    rng = np.random.default_rng(seed)
    per_ref = max(1, max_pairs_per_image // 9)
    refs = [r[rng.permutation(len(r))[:per_ref]] for r in references]
    pairs = box_pairs(seed, refs, canvas)
    out = {}
    for name, spec in runs.items():
        result = similarity_vs_iou(feature_fn(spec), images, pairs)
        out[name] = dict(result, spec=spec)
    return out


def summary(results: dict) -> str:
    lines = ["| run | bucket | pairs | Pearson | Spearman |", "|---|---|---|---|---|"]
    for name, r in results.items():
        for bucket in BUCKETS:
            s = r[bucket]
            lines.append(f"| {name} | {bucket} | {s['pairs']} | {s['pearson']:.3f} | {s['spearman']:.3f} |")
    return "\n".join(lines) + "\n"


def plot(results: dict, output: str, title: str = "") -> None:
    """Mean similarity per IoU bin, one panel per size bucket, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(BUCKETS), figsize=(13, 3.4), sharey=True)
    for ax, bucket in zip(axes, BUCKETS):
        for name, r in results.items():
            edges = np.asarray(r["iou_bins"])
            centres = (edges[:-1] + edges[1:]) / 2
            means = [np.nan if m is None else m for m in r[bucket]["mean_similarity_per_bin"]]
            s = r[bucket]
            ax.plot(centres, means, marker="o", label=f"{name} (r={s['pearson']:.2f}, rho={s['spearman']:.2f})")
        ax.set_title(f"{bucket} boxes")
        ax.set_xlabel("IoU of the pair")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("cosine similarity (mean per bin)")
    fig.suptitle(title or "RoI feature similarity vs IoU (PreDet Fig. 5b)")
    fig.tight_layout()
    fig.savefig(output, dpi=110)
    plt.close(fig)
