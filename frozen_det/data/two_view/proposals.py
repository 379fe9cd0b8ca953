"""Unsupervised region proposals (a simplified selective search) and their per-image cache.

PreDet (sec. 3.2) draws its query boxes from an unsupervised proposal method ("EdgeBox"), run
once per image before pre-training. EdgeBoxes is only shipped with OpenCV's contrib module, so
this is a small selective search (Uijlings et al., "Selective Search for Object Recognition",
IJCV 2013) on scikit-image's Felzenszwalb-Huttenlocher segmentation:

1. Over-segment the image at several scales ``k`` (one hierarchy per scale: the diversification).
2. Greedily merge the most similar pair of *adjacent* regions until one region is left; the
   similarity is the sum of colour (histogram intersection of L1-normalised 25-bin-per-channel
   RGB histograms), size (favours merging small regions first) and fill (favours pairs whose
   union fills its bounding box) -- the paper's texture term and extra colour spaces are left out.
3. Every region ever formed is a box. Boxes are ranked as the paper does: a region's position
   in its hierarchy (1 for the last merge, the whole image) times a uniform random number, lower
   first; exact duplicates are dropped, then boxes smaller than ``min_box_size`` pixels, then a
   greedy NMS at ``nms_iou`` (PreDet's footnote: NMS is applied to the proposals queries are drawn
   from), and the first ``max_boxes`` are kept.

Boxes are float32 yxyx in pixels of the input image (a region of rows r0..r1 and columns c0..c1
is the box ``[r0, c0, r1 + 1, c1 + 1]``), within ``[0, H] x [0, W]``. Deterministic for a seed.
scikit-image is needed at proposal time only (an offline step); the cache is plain numpy.
"""

from __future__ import annotations

import heapq
import os
import uuid
from typing import Hashable, Iterable, Mapping, Sequence, Tuple

import numpy as np
from PIL import Image

from frozen_det.ops.nms import nms_indices

_BINS = 25


# ----------------------------------------------------------------------------------------------
# Regions of one segmentation
# ----------------------------------------------------------------------------------------------


def _region_stats(labels: np.ndarray, image: np.ndarray):
    """Per-region yxyx boxes ``[R, 4]``, pixel counts ``[R]`` and L1-normalised colour histograms."""
    h, w = labels.shape
    num = int(labels.max()) + 1
    flat = labels.ravel()
    sizes = np.bincount(flat, minlength=num).astype(np.float64)
    ys, xs = np.divmod(np.arange(h * w), w)
    boxes = np.empty((num, 4), np.float64)
    boxes[:, :2] = np.inf
    boxes[:, 2:] = -np.inf
    np.minimum.at(boxes[:, 0], flat, ys)
    np.minimum.at(boxes[:, 1], flat, xs)
    np.maximum.at(boxes[:, 2], flat, ys + 1)
    np.maximum.at(boxes[:, 3], flat, xs + 1)
    bins = (image.reshape(-1, 3).astype(np.int64) * _BINS) // 256
    hist = np.concatenate(
        [np.bincount(flat * _BINS + bins[:, c], minlength=num * _BINS).reshape(num, _BINS) for c in range(3)], axis=1
    )
    return boxes, sizes, hist / (3.0 * sizes[:, None])


def _adjacent_pairs(labels: np.ndarray) -> np.ndarray:
    """``[E, 2]`` unique pairs ``a < b`` of 4-connected neighbouring regions."""
    a = np.concatenate([labels[:, :-1].ravel(), labels[:-1, :].ravel()])
    b = np.concatenate([labels[:, 1:].ravel(), labels[1:, :].ravel()])
    differ = a != b
    lo, hi = np.minimum(a[differ], b[differ]), np.maximum(a[differ], b[differ])
    n = int(labels.max()) + 1
    codes = np.unique(lo.astype(np.int64) * n + hi)
    return np.stack([codes // n, codes % n], axis=1)


def _similarity(box_a, size_a, hist_a, box_b, size_b, hist_b, image_size):
    """Colour + size + fill similarity; arrays of pairs (leading axis) or single regions."""
    colour = np.minimum(hist_a, hist_b).sum(-1)
    size = 1.0 - (size_a + size_b) / image_size
    union = np.concatenate([np.minimum(box_a[..., :2], box_b[..., :2]), np.maximum(box_a[..., 2:], box_b[..., 2:])], -1)
    union_area = (union[..., 2] - union[..., 0]) * (union[..., 3] - union[..., 1])
    fill = 1.0 - (union_area - size_a - size_b) / image_size
    return colour + size + fill


def hierarchical_grouping(labels: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Selective search's greedy grouping of one segmentation: returns the boxes of all regions in
    creation order (the initial regions, then one per merge; the last is the whole image), ``[2R - 1, 4]``.

    Similarities of untouched pairs never change, so a max-heap with lazy deletion of pairs that
    involve an already merged region gives the exact greedy order in ``O(E log E)``.
    """
    boxes, sizes, hists = _region_stats(labels, image)
    boxes, sizes, hists = list(boxes), list(sizes), list(hists)
    image_size = float(labels.size)
    pairs = _adjacent_pairs(labels)
    neighbours = [set() for _ in boxes]
    for a, b in pairs:
        neighbours[a].add(int(b))
        neighbours[b].add(int(a))
    a, b = pairs[:, 0], pairs[:, 1]
    sims = _similarity(
        np.asarray(boxes)[a], np.asarray(sizes)[a], np.asarray(hists)[a],
        np.asarray(boxes)[b], np.asarray(sizes)[b], np.asarray(hists)[b], image_size,
    )  # fmt: skip
    # Ties broken by the pair's indices (heap order), so the result is deterministic.
    heap = [(-float(s), int(i), int(j)) for s, i, j in zip(sims, a, b)]
    heapq.heapify(heap)
    alive = [True] * len(boxes)
    while heap:
        _, i, j = heapq.heappop(heap)
        if not (alive[i] and alive[j]):
            continue
        new = len(boxes)
        size = sizes[i] + sizes[j]
        boxes.append(np.concatenate([np.minimum(boxes[i][:2], boxes[j][:2]), np.maximum(boxes[i][2:], boxes[j][2:])]))
        hists.append((sizes[i] * hists[i] + sizes[j] * hists[j]) / size)
        sizes.append(size)
        alive[i] = alive[j] = False
        alive.append(True)
        around = (neighbours[i] | neighbours[j]) - {i, j}
        neighbours.append(around)
        for n in around:
            neighbours[n] -= {i, j}
            neighbours[n].add(new)
            s = _similarity(boxes[new], size, hists[new], boxes[n], sizes[n], hists[n], image_size)
            heapq.heappush(heap, (-float(s), n, new))
    return np.asarray(boxes, np.float64)


# ----------------------------------------------------------------------------------------------
# Proposals
# ----------------------------------------------------------------------------------------------


def selective_search(
    image: np.ndarray,
    scales: Sequence[float] = (50.0, 100.0, 200.0, 400.0),
    sigma: float = 0.8,
    max_boxes: int = 500,
    min_box_size: float = 8.0,
    nms_iou: float = 0.7,
    max_side: int = 512,
    seed: int = 0,
) -> np.ndarray:
    """Up to ``max_boxes`` ranked proposals, float32 yxyx ``[K, 4]`` in the input image's pixels.

    Args:
      image: uint8 ``[H, W, 3]`` (or ``[H, W]`` grey).
      scales: Felzenszwalb ``k`` values, one hierarchy each (larger k: larger initial regions);
        ``min_size`` of each segmentation is ``k`` as in the selective-search paper.
      sigma: Gaussian pre-smoothing of the segmentation.
      max_boxes: K.
      min_box_size: boxes shorter or narrower than this (input pixels) are dropped.
      nms_iou: greedy NMS threshold on the ranked boxes (>= 1 disables it).
      max_side: images are first downscaled so the longer side is at most this (speed), and
        boxes are scaled back.
      seed: the ranking's random factors.
    """
    from skimage.segmentation import felzenszwalb

    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"selective_search: expected a uint8 [H, W, 3] image, got {image.dtype} {image.shape}.")
    height, width = image.shape[:2]
    factor = min(1.0, max_side / max(height, width))
    small = image
    if factor < 1.0:
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        small = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    rng = np.random.default_rng(seed)

    all_boxes, priorities = [], []
    for k in scales:
        labels = felzenszwalb(small, scale=float(k), sigma=sigma, min_size=int(k))
        labels = np.unique(labels, return_inverse=True)[1].reshape(labels.shape)
        boxes = hierarchical_grouping(labels, small)
        position = np.arange(len(boxes), 0, -1, dtype=np.float64)  # last merge (whole image) = 1
        all_boxes.append(boxes)
        priorities.append(position * rng.uniform(size=len(boxes)))
    boxes = np.concatenate(all_boxes)[np.argsort(np.concatenate(priorities), kind="stable")]

    boxes = boxes * np.array([height / small.shape[0], width / small.shape[1]] * 2)
    boxes = np.clip(boxes, 0.0, [height, width, height, width])
    _, first = np.unique(np.round(boxes, 3), axis=0, return_index=True)
    boxes = boxes[np.sort(first)]  # exact duplicates removed, ranking order kept
    big = (boxes[:, 2] - boxes[:, 0] >= min_box_size) & (boxes[:, 3] - boxes[:, 1] >= min_box_size)
    boxes = boxes[big][: 4 * max_boxes]
    keep = nms_indices(boxes, -np.arange(len(boxes), dtype=np.float32), nms_iou)  # greedy NMS in ranking order
    return boxes[keep][:max_boxes].astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Cache: proposals computed once, offline, per image id
# ----------------------------------------------------------------------------------------------


def save_proposals(path: str, proposals: Mapping[Hashable, np.ndarray]) -> None:
    """Write ``{image id: float32 [K_i, 4]}`` to one ``.npz`` (ids may be ints or strings; boxes
    are concatenated with offsets, so any K_i and any id work). Written atomically."""
    ids = list(proposals)
    if all(isinstance(i, (int, np.integer)) for i in ids):
        id_kind = "int"
    elif all(isinstance(i, str) for i in ids):
        id_kind = "str"
    else:
        raise ValueError("save_proposals: image ids must be all ints or all strings.")
    arrays = [np.asarray(proposals[i], np.float32).reshape(-1, 4) for i in ids]
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays])]).astype(np.int64)
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"  # one per writer: processes of a sharded run may write at once
    with open(tmp, "wb") as f:
        np.savez_compressed(
            f,
            ids=np.asarray(ids, np.int64 if id_kind == "int" else np.str_),
            boxes=np.concatenate(arrays) if arrays else np.zeros((0, 4), np.float32),
            offsets=offsets,
            id_kind=np.asarray(id_kind),
        )
    os.replace(tmp, path)


def load_proposals(path: str) -> dict:
    """Read :func:`save_proposals`' file back: ``{image id: float32 [K_i, 4]}``."""
    with np.load(path, allow_pickle=False) as data:
        cast = int if str(data["id_kind"]) == "int" else str
        boxes, offsets = data["boxes"], data["offsets"]
        return {cast(i): boxes[offsets[n] : offsets[n + 1]] for n, i in enumerate(data["ids"].tolist())}


def cache_proposals(path: str, images: Iterable[Tuple[Hashable, np.ndarray]], **kwargs) -> dict:
    """Proposals for ``(image id, uint8 image)`` pairs, computed only for ids not already in the
    cache file at ``path`` (created or extended, then rewritten); ``kwargs`` go to
    :func:`selective_search`. Returns the whole cache as a dict."""
    cache = load_proposals(path) if os.path.exists(path) else {}
    added = 0
    for image_id, image in images:
        if image_id not in cache:
            cache[image_id] = selective_search(image, **kwargs)
            added += 1
    if added or not os.path.exists(path):
        save_proposals(path, cache)
    return cache
