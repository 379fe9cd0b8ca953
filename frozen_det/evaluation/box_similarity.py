"""How a run's box features follow box overlap: PreDet's Fig. 5b analysis (Ramanathan, Wang,
Mahajan, "PreDet: Large-scale weakly supervised pre-training for detection", ICCV 2021, sec. 4).

Pairs of boxes in the same image -- a reference box (an image's true boxes, or random boxes) and
a second box jittered from it -- whose IoUs spread evenly over 0.05-0.95 (`IOU_BINS`, one pair per
bin and reference where the jitter reaches it); both boxes' features from a run; the cosine
similarity of each pair; per box-size bucket the Pearson and Spearman correlations between IoU
and similarity, and the mean similarity per IoU bin. A representation for detection should
change smoothly with overlap (high correlation); one made for whole-image classification need not.

Three functions so that any two runs can be compared on the same pairs:

    pairs = box_pairs(seed, reference_boxes, image_shape)          # numpy, seeded
    fn = roi_feature_fn(model, variables, mean, std, box_head_features)   # jitted (images, boxes) -> features
    result = similarity_vs_iou(fn, images, pairs)                    # statistics (JSON-able)

Features (`roi_feature_fn` with one of two readers):

* `box_head_features`, of a two-stage detector or a PreDet model (a run's variables): the FPN,
  RoIAlign of each box at its level (the detector's own `roi_features`), the box head's convs /
  FCs, and its last FC's output -- the representation the box classifier reads (PreDet's ``b``,
  the detector's `box_features`);
* `backbone_roi_features(level)`, of a model whose backbone is pretrained and whose neck and heads
  would be random (e.g. the packaged ImageNet EfficientNet-Lite0): RoIAlign (7 x 7, one level) on
  the backbone's C4 map (`level`, stride 16; C5 at stride 32 is only 4 x 4 on a 128 canvas, too
  coarse for small boxes) averaged over the 7 x 7 bins -> one C4-channel vector per box (the
  "RoI-pooled backbone feature" of an ImageNet-only network).

Box-size buckets (`SIZE_BUCKETS`): the reference box's sqrt(area) relative to sqrt(H W) of the
canvas: small < 0.15, medium 0.15-0.3, large >= 0.3 (on a 128 canvas: < 19 px, 19-38 px, larger;
COCO's absolute 32 / 96 px thresholds would put nearly every box of our small canvases in one
bucket).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from frozen_det.ops.roi_align import multilevel_roi_align

IOU_BINS = tuple(np.round(np.linspace(0.05, 0.95, 10), 2))  # 9 bins of width 0.1
SIZE_BUCKETS = {"small": (0.0, 0.15), "medium": (0.15, 0.3), "large": (0.3, np.inf)}


# --------------------------------------------------------------------------- boxes


def iou_elementwise(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """IoU of corresponding yxyx boxes ``[..., 4] x [..., 4] -> [...]``."""
    b1, b2 = np.asarray(boxes1, np.float64), np.asarray(boxes2, np.float64)
    tl, br = np.maximum(b1[..., :2], b2[..., :2]), np.minimum(b1[..., 2:], b2[..., 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=-1)
    area = lambda b: np.prod(np.clip(b[..., 2:] - b[..., :2], 0, None), axis=-1)
    union = area(b1) + area(b2) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def random_boxes(seed: int, num_images: int, per_image: int, image_shape, min_side=0.06, max_side=0.6) -> list:
    """Reference boxes without annotations: `per_image` uniform yxyx boxes per image, sides
    uniform in [min_side, max_side] x the canvas side."""
    rng = np.random.default_rng(seed)
    hw = np.asarray(image_shape[:2], np.float64)
    out = []
    for _ in range(num_images):
        sides = rng.uniform(min_side, max_side, (per_image, 2)) * hw
        corner = rng.uniform(0, 1, (per_image, 2)) * (hw - sides)
        out.append(np.concatenate([corner, corner + sides], axis=1).astype(np.float32))
    return out


def box_pairs(
    seed: int,
    reference_boxes: Sequence[np.ndarray],
    image_shape,
    bins: Sequence[float] = IOU_BINS,
    num_candidates: int = 400,
    min_side: float = 2.0,
) -> dict:
    """Pairs (reference, jittered) with IoUs spread over `bins`: for every reference box (image i's
    ``reference_boxes[i]`` yxyx pixels, inside the canvas `image_shape`), `num_candidates` boxes
    with the centre moved by up to t x its side and each side scaled by 3^(+-t), t uniform in
    [0, 1] per candidate (so high and low IoUs are both reached), clipped to the canvas
    (sides >= `min_side`); per IoU bin, one candidate that falls in it (the first one drawn), so
    every reference contributes at most one pair per bin. Returns numpy arrays over the P pairs:
    `image` (index into reference_boxes), `boxes1` (the reference), `boxes2`, `iou`, `bin`
    (0..len(bins)-2), `relative_size` (sqrt area of the reference / sqrt(H W))."""
    rng = np.random.default_rng(seed)
    h, w = float(image_shape[0]), float(image_shape[1])
    edges = np.asarray(bins, np.float64)
    out = {k: [] for k in ("image", "boxes1", "boxes2", "iou", "bin")}
    for i, refs in enumerate(reference_boxes):
        refs = np.asarray(refs, np.float64).reshape(-1, 4)
        for ref in refs:
            if np.any(ref[2:] - ref[:2] < min_side):
                continue
            centre, sides = (ref[:2] + ref[2:]) / 2, ref[2:] - ref[:2]
            strength = rng.uniform(0, 1, (num_candidates, 1))  # small strengths reach the high IoUs
            shift = rng.uniform(-1, 1, (num_candidates, 2)) * strength * sides
            scale = np.exp(rng.uniform(-1, 1, (num_candidates, 2)) * strength * np.log(3))
            c, s = centre + shift, sides * scale
            cand = np.concatenate([c - s / 2, c + s / 2], axis=1)
            cand = np.clip(cand, 0, [h, w, h, w])
            ok = np.all(cand[:, 2:] - cand[:, :2] >= min_side, axis=1)
            iou = iou_elementwise(np.broadcast_to(ref, cand.shape), cand)
            which = np.digitize(iou, edges) - 1  # bin index; -1 / len-1: outside
            for b in range(len(edges) - 1):
                hits = np.flatnonzero(ok & (which == b))
                if hits.size:
                    j = hits[0]
                    out["image"].append(i)
                    out["boxes1"].append(ref)
                    out["boxes2"].append(cand[j])
                    out["iou"].append(iou[j])
                    out["bin"].append(b)
    pairs = {
        "image": np.asarray(out["image"], np.int64),
        "boxes1": np.asarray(out["boxes1"], np.float32).reshape(-1, 4),
        "boxes2": np.asarray(out["boxes2"], np.float32).reshape(-1, 4),
        "iou": np.asarray(out["iou"], np.float64),
        "bin": np.asarray(out["bin"], np.int64),
    }
    # IoU of the float32 boxes the features are computed on (what the statistics use).
    pairs["iou"] = iou_elementwise(pairs["boxes1"], pairs["boxes2"])
    pairs["relative_size"] = np.sqrt(np.prod(pairs["boxes1"][:, 2:] - pairs["boxes1"][:, :2], axis=1) / (h * w))
    pairs["bins"] = edges
    return pairs


# --------------------------------------------------------------------------- statistics


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties averaged."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), np.float64)
    sorted_x = x[order]
    start = 0
    while start < len(x):
        stop = start + 1
        while stop < len(x) and sorted_x[stop] == sorted_x[start]:
            stop += 1
        ranks[order[start:stop]] = (start + stop + 1) / 2.0
        start = stop
    return ranks


def pearson(x, y) -> float:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2:
        return float("nan")
    x, y = x - x.mean(), y - y.mean()
    denom = np.sqrt(np.sum(x * x) * np.sum(y * y))
    return float(np.sum(x * y) / denom) if denom > 0 else float("nan")


def spearman(x, y) -> float:
    return pearson(_ranks(np.asarray(x, np.float64)), _ranks(np.asarray(y, np.float64)))


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norm = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.sum(a * b, axis=-1) / np.maximum(norm, 1e-12)


def statistics(iou: np.ndarray, similarity: np.ndarray, relative_size: np.ndarray, bins=IOU_BINS) -> dict:
    """Per size bucket (and "all"): pairs, Pearson, Spearman, mean similarity per IoU bin."""
    edges = np.asarray(bins, np.float64)
    which = np.clip(np.digitize(iou, edges) - 1, 0, len(edges) - 2)
    out = {}
    buckets = dict(SIZE_BUCKETS, all=(-np.inf, np.inf))
    for name, (lo, hi) in buckets.items():
        m = (relative_size >= lo) & (relative_size < hi)
        members = [m & (which == b) for b in range(len(edges) - 1)]
        per_bin = [float(similarity[k].mean()) if np.any(k) else None for k in members]
        out[name] = {
            "pairs": int(m.sum()),
            "pearson": pearson(iou[m], similarity[m]),
            "spearman": spearman(iou[m], similarity[m]),
            "mean_similarity_per_bin": per_bin,
            "pairs_per_bin": [int(np.sum(k)) for k in members],
        }
    return out


# --------------------------------------------------------------------------- features


def similarity_vs_iou(feature_fn: Callable, images: np.ndarray, pairs: dict, batch_size: int = 8) -> dict:
    """`feature_fn(images [B, H, W, 3] float32 on [0, 255], boxes [B, K, 4]) -> [B, K, D]` on every
    pair's two boxes (grouped by image, padded to a fixed K and B so it compiles once); the cosine
    similarity per pair and `statistics`. Returns the statistics plus `iou_bins` and the per-pair
    `iou` / `similarity` / `relative_size` lists (for plots)."""
    images = np.asarray(images, np.float32)
    n = len(images)
    per_image = [np.flatnonzero(pairs["image"] == i) for i in range(n)]
    k = max(1, max(len(p) for p in per_image)) * 2
    similarity = np.full(len(pairs["iou"]), np.nan)
    for start in range(0, n, batch_size):
        idx = list(range(start, min(start + batch_size, n)))
        batch = np.zeros((batch_size,) + images.shape[1:], np.float32)
        boxes = np.zeros((batch_size, k, 4), np.float32)
        boxes[..., 2:] = 1.0
        for row, i in enumerate(idx):
            batch[row] = images[i]
            p = per_image[i]
            boxes[row, : len(p)] = pairs["boxes1"][p]
            boxes[row, len(p) : 2 * len(p)] = pairs["boxes2"][p]
        features = np.asarray(feature_fn(batch, boxes), np.float64)
        for row, i in enumerate(idx):
            p = per_image[i]
            similarity[p] = cosine(features[row, : len(p)], features[row, len(p) : 2 * len(p)])
    result = {"iou_bins": [float(b) for b in pairs["bins"]], "num_pairs": int(len(similarity))}
    result.update(statistics(pairs["iou"], similarity, pairs["relative_size"], pairs["bins"]))
    result["per_pair"] = {
        "iou": pairs["iou"].round(4).tolist(),
        "similarity": similarity.round(4).tolist(),
        "relative_size": pairs["relative_size"].round(4).tolist(),
    }
    return result


def box_head_features(module, images, boxes):
    """A detector's box representation (`TwoStageDetector.box_features`) of `boxes` in `images`."""
    return module.box_features(module.features(images, train=False), boxes, train=False)


def backbone_roi_features(level: int = 4) -> Callable:
    """A reader of the backbone alone: its C`level` map RoI-aligned (7 x 7) and averaged per box."""

    def read(module, images, boxes):
        c = module.backbone(images, train=False)[level]
        return jnp.mean(multilevel_roi_align({level: c}, boxes, 7, sampling_ratio=2, aligned=True), axis=(-3, -2))

    return read


def roi_feature_fn(model, variables, mean, std, reader: Callable) -> Callable:
    """jitted ``(images [B, H, W, 3] on [0, 255], boxes [B, K, 4] yxyx) -> [B, K, D]`` float32:
    `reader(module, normalised images, boxes)` applied to `model` with `variables`, the images
    normalised by the data's `mean` / `std`."""
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)

    @jax.jit
    def fn(images, boxes):
        x = (jnp.asarray(images, jnp.float32) - mean) / std
        return model.apply(variables, x, jnp.asarray(boxes, jnp.float32), method=reader).astype(jnp.float32)

    return fn
