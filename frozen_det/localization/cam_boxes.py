"""Pseudo-boxes from class activation maps: DAP's step 2 (Zhong et al., "DAP: Detection-Aware
Pre-training with Weak Supervision", CVPR 2021, sec. 3.1, Eqs. 1-6, and sec. 4.1).

Two variants, `PseudoBoxOptions.variant`:

* "paper", the text: the CAM in the original image's pixels, min-max normalised (Eq. 1); for
  each threshold tau, M = CAM * 1{CAM > tau} (Eq. 2); connected components of M (4-connected)
  with fewer pixels than half the largest dropped; per component the box whose first and second
  moments match those of M on it (Eqs. 3-6: centre = weighted mean, w = sqrt(12 var_x),
  h = sqrt(12 var_y)); the boxes of all thresholds merged by NMS (IoU 0.8). The sums of Eqs. 3-6
  are read as integrals over pixel cells (M constant on each unit cell), which adds the cell's
  own variance 1/12 to the discrete one: a uniform n-pixel run then gives exactly w = n (the
  discrete sums alone give sqrt(n^2 - 1)). The paper gives the boxes no score; ours is the mean
  normalised CAM on the component, which orders the NMS.
* "released", the authors' code (github.com/mikuhatsune/dap, code/compute_box_imagenet1k.py,
  `compute_cam_twoscale` / `compute_cam_box`): CAMs normalised per scale and averaged on the
  largest scale's stride-32 grid (frozen_det.localization.cam.cam_on_grid); before the moments
  the map is (CAM + 0.22) on the thresholded cells; a component's "area" is that of its bounding
  slice (scipy.ndimage.find_objects), at most 4 components per threshold (largest slices first,
  stopping at the first under half the largest), and the moments are taken over the whole slice
  (other components' cells inside it included), centred at cell + 0.5 with w, h at least one
  cell; boxes are scaled by 32 x (shorter side / largest scale) and clipped to
  [0, width - 1] x [0, height - 1]; the score is the box's area over the first box's, so NMS
  keeps larger boxes first. (The release's NMS is maskrcnn_benchmark's, which adds 1 to widths
  and heights; ours is the usual continuous IoU. Its "area > 0.01" test is always true since
  w, h >= 1, and is left out.)

Boxes are [y1, x1, y2, x2] in the original image's pixels, like every box in frozen_det.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from frozen_det.localization import cam as cam_lib
from frozen_det.ops.nms import nms_indices

VARIANTS = ("paper", "released")


@dataclasses.dataclass(frozen=True)
class PseudoBoxOptions:
    variant: str = "paper"  # one of VARIANTS
    scales: tuple = (288, 576)  # shorter sides of the CAM's inputs (sec. 4.1)
    flip: bool = True  # average with the left-right flipped image's CAM
    thresholds: tuple = (0.2, 0.3, 0.4, 0.5)  # tau (sec. 4.1)
    nms_iou: float = 0.8  # merging IoU (sec. 4.1; Table A2 varies it)
    min_component_fraction: float = 0.5  # components under this fraction of the largest dropped
    bias: float = 0.22  # "released": added to the thresholded CAM before the moments
    max_components: int = 4  # "released": components per threshold

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"pseudo-box variant {self.variant!r}: choose one of {VARIANTS}")
        if not self.scales or not self.thresholds:
            raise ValueError("pseudo-boxes need at least one scale and one threshold")


@dataclasses.dataclass
class PseudoBoxes:
    """One image's pseudo-boxes: `boxes` [N, 4] and `scores` [N] after merging, and the boxes
    each threshold found before merging (`per_threshold[t]` [N_t, 4]), for the statistics of
    Tables A1 / A2."""

    boxes: np.ndarray
    scores: np.ndarray
    per_threshold: list


def moment_box(weights: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Eqs. 3-6 on pixel cells: the [y1, x1, y2, x2] box whose centre and variances match the
    distribution `weights` over the unit cells with top-left corners (`ys`, `xs`)."""
    total = weights.sum()
    yc = (weights * (ys + 0.5)).sum() / total
    xc = (weights * (xs + 0.5)).sum() / total
    var_y = (weights * (ys + 0.5 - yc) ** 2).sum() / total + 1.0 / 12.0
    var_x = (weights * (xs + 0.5 - xc) ** 2).sum() / total + 1.0 / 12.0
    h, w = np.sqrt(12.0 * var_y), np.sqrt(12.0 * var_x)
    return np.asarray([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2])


def paper_threshold_boxes(cam: np.ndarray, tau: float, min_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """The boxes of one threshold on a normalised CAM [H, W] in image pixels (Eqs. 2-6) ->
    (boxes [N, 4] clipped to the image, scores [N] = mean CAM on each component)."""
    m = np.where(cam > tau, cam, 0.0)
    labels, n = ndimage.label(m > 0)
    if n == 0:
        return np.zeros((0, 4)), np.zeros((0,))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    boxes, scores = [], []
    for component in np.flatnonzero(sizes >= min_fraction * sizes.max()) + 1:
        ys, xs = np.nonzero(labels == component)
        weights = m[ys, xs]
        boxes.append(moment_box(weights, ys, xs))
        scores.append(weights.mean())
    h, w = cam.shape
    boxes = np.clip(np.asarray(boxes), 0.0, [h, w, h, w])
    return boxes, np.asarray(scores)


def released_threshold_boxes(
    grid: np.ndarray, tau: float, bias: float = 0.22, max_components: int = 4, min_fraction: float = 0.5
) -> np.ndarray:
    """The release's boxes of one threshold on a normalised grid CAM [h, w], in grid cells
    ([y1, x1, y2, x2], not yet scaled or clipped)."""
    above = grid > tau
    weighted = (grid + bias) * above
    labels, n = ndimage.label(above)
    slices = ndimage.find_objects(labels, n)
    if not slices:
        return np.zeros((0, 4))
    areas = [(sy.stop - sy.start) * (sx.stop - sx.start) for sy, sx in slices]
    order = np.argsort(areas)[::-1]
    smallest = areas[order[0]] * min_fraction
    gy, gx = np.meshgrid(
        np.arange(grid.shape[0], dtype=np.float64), np.arange(grid.shape[1], dtype=np.float64), indexing="ij"
    )
    boxes = []
    for o in order[:max_components]:
        if areas[o] < smallest:
            break
        inside = np.zeros_like(weighted)
        inside[slices[o]] = 1.0
        m = weighted * inside
        total = m.sum()
        cy, cx = (m * gy).sum() / total, (m * gx).sum() / total
        h = max(1.0, np.sqrt(12.0 * (m * (gy - cy) ** 2).sum() / total))
        w = max(1.0, np.sqrt(12.0 * (m * (gx - cx) ** 2).sum() / total))
        y1, x1 = cy + 0.5 - h / 2, cx + 0.5 - w / 2
        boxes.append([y1, x1, y1 + h, x1 + w])
    return np.asarray(boxes, np.float64).reshape(-1, 4)


def pseudo_boxes_from_cam(cam: np.ndarray, options: PseudoBoxOptions, image_hw=None, cell_pixels=None) -> PseudoBoxes:
    """Pseudo-boxes of a normalised CAM: an image-pixel CAM [H, W] ("paper"), or a grid CAM
    with the image's (height, width) and the pixels per grid cell ("released")."""
    per_threshold, all_boxes, all_scores = [], [], []
    for tau in options.thresholds:
        if options.variant == "paper":
            boxes, scores = paper_threshold_boxes(cam, tau, options.min_component_fraction)
        else:
            h, w = image_hw
            boxes = released_threshold_boxes(
                cam, tau, options.bias, options.max_components, options.min_component_fraction
            )
            boxes = np.clip(boxes * cell_pixels, 0.0, [h - 1, w - 1, h - 1, w - 1])
            scores = np.zeros((len(boxes),))  # set below, relative to the first box
        per_threshold.append(boxes)
        all_boxes.append(boxes)
        all_scores.append(scores)
    boxes = np.concatenate(all_boxes).reshape(-1, 4)
    scores = np.concatenate(all_scores)
    if options.variant == "released" and len(boxes):
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        scores = areas / areas[0] if areas[0] > 0 else areas
    keep = nms_indices(boxes, scores, options.nms_iou)  # merging: greedy NMS, descending score
    return PseudoBoxes(boxes[keep].astype(np.float32), scores[keep].astype(np.float32), per_threshold)


def image_pseudo_boxes(
    clf, image_u8: np.ndarray, options: PseudoBoxOptions, class_id: int | None = None
) -> tuple[PseudoBoxes, np.ndarray, int]:
    """(pseudo-boxes of `class_id` in an RGB uint8 image, the normalised CAM they came from,
    the class): the classifier's top-1 class when `class_id` is None."""
    maps = cam_lib.feature_maps(clf, image_u8, options.scales, options.flip)
    return pseudo_boxes_from_maps(clf, maps, image_u8.shape[:2], options, class_id)


def pseudo_boxes_from_maps(
    clf, maps: list, image_hw, options: PseudoBoxOptions, class_id: int | None = None
) -> tuple[PseudoBoxes, np.ndarray, int]:
    """`image_pseudo_boxes` from an image's pooled maps at `options.scales`
    (cam.feature_maps, or one image's entry of cam.batched_feature_maps) and its (height, width)."""
    if class_id is None:
        class_id = cam_lib.top1_class(clf, maps)
    if options.variant == "paper":
        cam = cam_lib.cam_in_image_pixels(clf, maps, image_hw, options.scales, class_id)
        return pseudo_boxes_from_cam(cam, options), cam, class_id
    grid, cell = cam_lib.cam_on_grid(clf, maps, image_hw, options.scales, class_id)
    return pseudo_boxes_from_cam(grid, options, image_hw, cell), grid, class_id
