"""Two MoCo v2 views of one image with the same query boxes in each (PreDet sec. 3.2, 4.1).

PreDet's pretext task looks up, in view 1, the boxes that cover the region of a query box seen
in view 2. Both views are MoCo v2 augmentations of one image ("We use the same augmentations as
MoCo-v2", sec. 4.1): random resized crop (scale 0.2-1, aspect 3/4-4/3) to a fixed square,
horizontal flip, colour jitter (0.4, 0.4, 0.4, 0.1) with probability 0.8, greyscale with
probability 0.2, Gaussian blur (sigma 0.1-2) with probability 0.5. The Q = 16 queries are drawn
among candidate boxes -- cached unsupervised region proposals (the paper uses EdgeBoxes; see
frozen_det.data.two_view.proposals) or random boxes -- and carried into each view's coordinates.

Choices the paper leaves open, made here:

* A query must lie *fully inside* the intersection of the two crops (no clipping), so both views
  see all of it and its box in one view maps exactly onto the other; it must also be at least
  ``min_view_size`` pixels high and wide in both views (the ROI pooling has something to pool).
* The two crops are drawn independently as MoCo does; if fewer than ``min_queries`` candidates
  are eligible, the pair is re-drawn (up to ``max_attempts`` times, keeping the best pair). This
  biases the crops slightly towards overlapping, which the task needs.
* Queries are a uniformly random subset of the eligible candidates (without replacement, in
  random order). De-duplication (the paper's footnote: "NMS applied to Edge Box proposals") is the
  candidate source's job (frozen_det.data.two_view.proposals applies NMS).
* Rows are padded to Q with zero boxes and ``query_valid`` False; row i of every output is the
  same query (never dropped or reordered by the augmentation, which is geometric and keeps every
  query inside both views).

Geometry: a crop is a rectangle of the image (``top, left, height, width`` in pixels, corners
convention) resized to ``size x size`` and optionally flipped left-right; a point maps as
``y' = (y - top) * size / height``, ``x' = (x - left) * size / width`` (then ``x' -> size - x'``
when flipped). :func:`image_to_view` / :func:`view_to_image` apply it to yxyx boxes. The image is
resampled with Pillow's ``resize(box=...)``, whose continuous mapping is exactly this one.

Pure numpy + Pillow, deterministic given the ``numpy.random.Generator``; no jax (the data package
never touches devices).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Tuple

import numpy as np
from matplotlib.colors import hsv_to_rgb, rgb_to_hsv
from PIL import Image, ImageFilter

# ITU-R 601 luma weights, as Pillow's "L" conversion and torchvision's greyscale use.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@dataclasses.dataclass(frozen=True)
class Crop:
    """One view's geometry: an image rectangle (pixels) resized to ``size x size``, then ``flip``ped."""

    top: float
    left: float
    height: float
    width: float
    size: int
    flip: bool = False

    @property
    def box(self) -> np.ndarray:
        """The crop rectangle as a yxyx box in image pixels."""
        return np.array([self.top, self.left, self.top + self.height, self.left + self.width], np.float64)


@dataclasses.dataclass(frozen=True)
class TwoViewConfig:
    """MoCo v2 augmentation (the defaults) and PreDet's query parameters (sec. 4.1: 16 queries;
    input 480 x 480 in the paper, 224 here by default as in MoCo)."""

    size: int = 224
    scale: Tuple[float, float] = (0.2, 1.0)
    ratio: Tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    flip_prob: float = 0.5
    photometric: bool = True  # False: geometry only (tests, visualisation)
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    blur_sigma: Tuple[float, float] = (0.1, 2.0)
    num_queries: int = 16
    min_view_size: float = 8.0  # a query's height and width in both views, view pixels
    min_queries: int = 1
    max_attempts: int = 10


# ----------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------


def sample_crop(
    rng: np.random.Generator,
    image_hw: Tuple[int, int],
    size: int,
    scale: Tuple[float, float] = (0.2, 1.0),
    ratio: Tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    flip_prob: float = 0.5,
) -> Crop:
    """A random resized crop with the sampling rule of torchvision's ``RandomResizedCrop`` (used by
    MoCo v2): area fraction uniform in ``scale``, aspect ratio (w / h) log-uniform in ``ratio``,
    integer sides, uniform position; after 10 failed tries a centre crop of the whole image with
    its aspect clamped to ``ratio``. Flipped with probability ``flip_prob``."""
    height, width = image_hw
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            break
    else:
        aspect = width / height
        if aspect < ratio[0]:
            w, h = width, int(round(width / ratio[0]))
        elif aspect > ratio[1]:
            w, h = int(round(height * ratio[1])), height
        else:
            w, h = width, height
        top, left = (height - h) // 2, (width - w) // 2
    return Crop(float(top), float(left), float(h), float(w), int(size), bool(rng.uniform() < flip_prob))


def image_to_view(boxes: np.ndarray, crop: Crop) -> np.ndarray:
    """yxyx boxes ``[..., 4]`` in image pixels -> the view's pixels (offset, scale, flip)."""
    boxes = np.asarray(boxes, np.float64)
    sy, sx = crop.size / crop.height, crop.size / crop.width
    y1, x1 = (boxes[..., 0] - crop.top) * sy, (boxes[..., 1] - crop.left) * sx
    y2, x2 = (boxes[..., 2] - crop.top) * sy, (boxes[..., 3] - crop.left) * sx
    if crop.flip:
        x1, x2 = crop.size - x2, crop.size - x1
    return np.stack([y1, x1, y2, x2], axis=-1)


def view_to_image(boxes: np.ndarray, crop: Crop) -> np.ndarray:
    """Inverse of :func:`image_to_view`: yxyx boxes in the view's pixels -> image pixels."""
    boxes = np.asarray(boxes, np.float64)
    y1, x1, y2, x2 = (boxes[..., k] for k in range(4))
    if crop.flip:
        x1, x2 = crop.size - x2, crop.size - x1
    sy, sx = crop.height / crop.size, crop.width / crop.size
    return np.stack([y1 * sy + crop.top, x1 * sx + crop.left, y2 * sy + crop.top, x2 * sx + crop.left], axis=-1)


def render_view(image: np.ndarray, crop: Crop) -> np.ndarray:
    """The view's pixels: ``image`` uint8 ``[H, W, 3]`` cropped, resized (bilinear) and flipped ->
    uint8 ``[size, size, 3]``."""
    rect = (crop.left, crop.top, crop.left + crop.width, crop.top + crop.height)
    view = np.asarray(Image.fromarray(image).resize((crop.size, crop.size), Image.BILINEAR, box=rect))
    return np.ascontiguousarray(view[:, ::-1]) if crop.flip else view


def intersection(crop1: Crop, crop2: Crop) -> np.ndarray:
    """The overlap of two crops' rectangles, a yxyx box in image pixels (possibly empty: y2 <= y1)."""
    a, b = crop1.box, crop2.box
    return np.concatenate([np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])])


def _min_image_side(crops) -> Tuple[float, float]:
    """Smallest image-pixel height and width that are ``>= 1`` view pixel in every crop (per view pixel)."""
    return max(c.height / c.size for c in crops), max(c.width / c.size for c in crops)


def eligible_candidates(candidates: np.ndarray, crop1: Crop, crop2: Crop, min_view_size: float) -> np.ndarray:
    """``[N]`` bool: candidates fully inside both crops and at least ``min_view_size`` pixels high
    and wide in both views (so zero padding rows of a fixed-size proposal array are never eligible)."""
    candidates = np.asarray(candidates, np.float64).reshape(-1, 4)
    region = intersection(crop1, crop2)
    inside = np.all(candidates[:, :2] >= region[:2], axis=1) & np.all(candidates[:, 2:] <= region[2:], axis=1)
    py, px = _min_image_side((crop1, crop2))
    big = (candidates[:, 2] - candidates[:, 0] >= min_view_size * py) & (
        candidates[:, 3] - candidates[:, 1] >= min_view_size * px
    )
    return inside & big


def random_boxes(rng: np.random.Generator, region: np.ndarray, n: int, min_hw: Tuple[float, float]) -> np.ndarray:
    """``n`` random yxyx boxes inside ``region``: height and width uniform between ``min_hw`` and
    the region's sides, position uniform. ``[0, 4]`` if the region is smaller than ``min_hw``."""
    rh, rw = region[2] - region[0], region[3] - region[1]
    if rh < min_hw[0] or rw < min_hw[1] or n <= 0:
        return np.zeros((0, 4), np.float64)
    h = rng.uniform(min_hw[0], rh, n)
    w = rng.uniform(min_hw[1], rw, n)
    y = region[0] + rng.uniform(0.0, 1.0, n) * (rh - h)
    x = region[1] + rng.uniform(0.0, 1.0, n) * (rw - w)
    return np.stack([y, x, y + h, x + w], axis=-1)


# ----------------------------------------------------------------------------------------------
# Photometric augmentation (MoCo v2)
# ----------------------------------------------------------------------------------------------


def _grey(x: np.ndarray) -> np.ndarray:
    return x @ _LUMA


def color_jitter(image: np.ndarray, rng: np.random.Generator, brightness, contrast, saturation, hue) -> np.ndarray:
    """torchvision's ``ColorJitter`` semantics on a float ``[H, W, 3]`` image in [0, 1]: factors
    uniform in ``[1 - s, 1 + s]`` (hue shift in ``[-hue, hue]`` of a turn), applied in random order;
    brightness scales, contrast blends with the mean grey level, saturation with the grey image."""
    x = image
    for op in rng.permutation(4):
        if op == 0:
            x = np.clip(x * rng.uniform(1 - brightness, 1 + brightness), 0.0, 1.0)
        elif op == 1:
            f = rng.uniform(1 - contrast, 1 + contrast)
            x = np.clip(x * f + _grey(x).mean() * (1 - f), 0.0, 1.0)
        elif op == 2:
            f = rng.uniform(1 - saturation, 1 + saturation)
            x = np.clip(x * f + _grey(x)[..., None] * (1 - f), 0.0, 1.0)
        else:
            hsv = rgb_to_hsv(x)
            hsv[..., 0] = (hsv[..., 0] + rng.uniform(-hue, hue)) % 1.0
            x = hsv_to_rgb(hsv)
    return x.astype(np.float32)


def photometric(image: np.ndarray, rng: np.random.Generator, config: TwoViewConfig) -> np.ndarray:
    """MoCo v2's photometric chain on a uint8 view: jitter (p 0.8), greyscale (p 0.2), Gaussian
    blur (p 0.5, sigma uniform in 0.1-2, Pillow's ``GaussianBlur`` as MoCo's code)."""
    x = image.astype(np.float32) / 255.0
    if rng.uniform() < config.jitter_prob:
        x = color_jitter(x, rng, config.brightness, config.contrast, config.saturation, config.hue)
    if rng.uniform() < config.grayscale_prob:
        x = np.repeat(_grey(x)[..., None], 3, axis=-1)
    out = np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
    if rng.uniform() < config.blur_prob:
        sigma = rng.uniform(*config.blur_sigma)
        out = np.asarray(Image.fromarray(out).filter(ImageFilter.GaussianBlur(radius=sigma)))
    return out


# ----------------------------------------------------------------------------------------------
# The two views
# ----------------------------------------------------------------------------------------------


def make_two_views(
    image: np.ndarray,
    rng: np.random.Generator,
    config: TwoViewConfig = TwoViewConfig(),
    candidates: Optional[np.ndarray] = None,
) -> dict:
    """Two augmented views of ``image`` (uint8 ``[H, W, 3]``) and ``config.num_queries`` query boxes.

    Args:
      image: uint8 ``[H, W, 3]``.
      rng: the example's seeded generator (same seed -> same views and queries).
      config: augmentation and query parameters.
      candidates: ``[N, 4]`` yxyx image-pixel boxes to draw queries from (cached region
        proposals); ``None`` draws random boxes inside the crops' overlap instead.

    Returns:
      dict with ``view1``, ``view2`` (uint8 ``[size, size, 3]``), ``boxes1``, ``boxes2`` (float32
      ``[Q, 4]``, each view's pixels), ``query_boxes`` (float32 ``[Q, 4]``, image pixels),
      ``query_valid`` (bool ``[Q]``), ``candidate_index`` (int32 ``[Q]``, row of ``candidates``,
      -1 for random boxes and padding) and ``crop1``, ``crop2`` (:class:`Crop`). Padding rows are
      zero.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"make_two_views: expected a uint8 [H, W, 3] image, got {image.dtype} {image.shape}.")
    hw = image.shape[:2]
    q = config.num_queries
    draw = lambda: tuple(sample_crop(rng, hw, config.size, config.scale, config.ratio, config.flip_prob) for _ in "12")

    best = None
    for _ in range(max(config.max_attempts, 1)):
        crops = draw()
        if candidates is None:
            py, px = _min_image_side(crops)
            region = intersection(*crops)
            ok = (
                region[2] - region[0] >= config.min_view_size * py
                and region[3] - region[1] >= config.min_view_size * px
            )
            count = q if ok else 0
        else:
            eligible = np.flatnonzero(eligible_candidates(candidates, *crops, config.min_view_size))
            count = len(eligible)
        if best is None or count > best[0]:
            best = (count, crops, None if candidates is None else eligible)
        if count >= config.min_queries:
            break
    count, (crop1, crop2), eligible = best

    query_boxes = np.zeros((q, 4), np.float64)
    candidate_index = np.full(q, -1, np.int32)
    if candidates is None:
        py, px = _min_image_side((crop1, crop2))
        chosen = random_boxes(
            rng, intersection(crop1, crop2), q, (config.min_view_size * py, config.min_view_size * px)
        )
    else:
        picked = rng.permutation(eligible)[:q]
        candidate_index[: len(picked)] = picked
        chosen = np.asarray(candidates, np.float64).reshape(-1, 4)[picked]
    n = len(chosen)
    query_boxes[:n] = chosen
    valid = np.arange(q) < n

    boxes1 = np.where(valid[:, None], image_to_view(query_boxes, crop1), 0.0)
    boxes2 = np.where(valid[:, None], image_to_view(query_boxes, crop2), 0.0)
    view1, view2 = render_view(image, crop1), render_view(image, crop2)
    if config.photometric:
        view1, view2 = photometric(view1, rng, config), photometric(view2, rng, config)
    return dict(
        view1=view1,
        view2=view2,
        boxes1=boxes1.astype(np.float32),
        boxes2=boxes2.astype(np.float32),
        query_boxes=query_boxes.astype(np.float32),
        query_valid=valid,
        candidate_index=candidate_index,
        crop1=crop1,
        crop2=crop2,
    )
