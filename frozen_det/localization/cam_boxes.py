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

Box scores, `PseudoBoxOptions.score` (they order the merging NMS and say which box is an
image's best guess; the variant's own score by default):

* "mean_cam" ("paper"'s default): the mean normalised CAM on the box's component. A threshold's
  components shrink around the peak as tau rises, so the tightest box around the CAM's peak
  (tau 0.5) ranks first, which on an object larger than its most discriminative part is the
  worst localisation of the set;
* "area" ("released"'s default): the box's area over the first box's;
* "excess_mass": the share of the CAM's mass inside the box minus the share of the map's area
  inside it. A uniform map scores 0 everywhere; the box that maximises it covers the cells
  above the map's mean value, so it grows past the peak to the object's extent and stops where
  the CAM falls to the background's level.

`wsol_box` is the box by which the weakly supervised localisation literature scores a CAM
(Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR 2016, sec. 2.1
and 3: the bounding box of the largest connected component of the map above 20% of its
maximum): each image's `PseudoBoxes.wsol_box`, so that CorLoc can be reported as the
literature reports it beside the pseudo-boxes' own (frozen_det.evaluation.localization).

Boxes are [y1, x1, y2, x2] in the original image's pixels, like every box in frozen_det.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from frozen_det.localization import cam as cam_lib
from frozen_det.ops.nms import nms_indices

VARIANTS = ("paper", "released")
SCORES = ("mean_cam", "area", "excess_mass")
VARIANT_SCORE = {"paper": "mean_cam", "released": "area"}
WSOL_FRACTION = 0.2  # Zhou et al. 2016, sec. 3: 20% of the CAM's maximum


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
    score: str = ""  # one of SCORES; "" for the variant's own (VARIANT_SCORE)

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"pseudo-box variant {self.variant!r}: choose one of {VARIANTS}")
        if self.score and self.score not in SCORES:
            raise ValueError(f"pseudo-box score {self.score!r}: choose one of {SCORES}")
        if self.score == "mean_cam" and self.variant != "paper":
            raise ValueError("the mean_cam score is the mean over a component, which only the paper variant keeps")
        if not self.scales or not self.thresholds:
            raise ValueError("pseudo-boxes need at least one scale and one threshold")


@dataclasses.dataclass
class PseudoBoxes:
    """One image's pseudo-boxes: `boxes` [N, 4] and `scores` [N] after merging, the boxes each
    threshold found before merging (`per_threshold[t]` [N_t, 4]), for the statistics of Tables
    A1 / A2, and the literature's one localisation of the same CAM (`wsol_box` [4])."""

    boxes: np.ndarray
    scores: np.ndarray
    per_threshold: list
    wsol_box: np.ndarray


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


def excess_mass(cam: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """[N] share of the map's mass inside each [y1, x1, y2, x2] box (in the map's cells; a cell
    counts when the box holds its centre) minus the share of the map's cells inside it."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    h, w = cam.shape
    integral = np.zeros((h + 1, w + 1))
    integral[1:, 1:] = np.cumsum(np.cumsum(np.asarray(cam, np.float64), axis=0), axis=1)
    total = integral[-1, -1]
    y1, x1 = (np.clip(np.ceil(boxes[:, k] - 0.5), 0, n).astype(int) for k, n in ((0, h), (1, w)))
    y2, x2 = (np.clip(np.floor(boxes[:, k] - 0.5) + 1, 0, n).astype(int) for k, n in ((2, h), (3, w)))
    y2, x2 = np.maximum(y2, y1), np.maximum(x2, x1)
    mass = integral[y2, x2] - integral[y1, x2] - integral[y2, x1] + integral[y1, x1]
    cells = (y2 - y1) * (x2 - x1)
    return (mass / total if total > 0 else 0.0) - cells / (h * w)


def wsol_box(cam: np.ndarray, fraction: float = WSOL_FRACTION) -> np.ndarray:
    """Zhou et al. 2016's localisation of a CAM [H, W]: the [y1, x1, y2, x2] bounding box (cell
    edges) of the largest 8-connected component of the cells at or above `fraction` of the
    maximum (their code traces the thresholded map's outer contours with OpenCV, which joins
    diagonal neighbours; ties: the first component in scan order)."""
    labels, n = ndimage.label(cam >= fraction * cam.max(), structure=np.ones((3, 3)))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    ys, xs = np.nonzero(labels == int(np.argmax(sizes)) + 1)
    return np.asarray([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1], np.float64)


def pseudo_boxes_from_cam(cam: np.ndarray, options: PseudoBoxOptions, image_hw=None, cell_pixels=None) -> PseudoBoxes:
    """Pseudo-boxes of a normalised CAM: an image-pixel CAM [H, W] ("paper"), or a grid CAM
    with the image's (height, width) and the pixels per grid cell ("released"). Boxes are found
    and scored in the map's cells, then brought to the image's pixels and merged."""
    per_threshold, component_means = [], []
    for tau in options.thresholds:
        if options.variant == "paper":
            boxes, means = paper_threshold_boxes(cam, tau, options.min_component_fraction)
            component_means.append(means)
        else:
            boxes = released_threshold_boxes(
                cam, tau, options.bias, options.max_components, options.min_component_fraction
            )
        per_threshold.append(boxes)
    boxes = np.concatenate(per_threshold).reshape(-1, 4)
    score = options.score or VARIANT_SCORE[options.variant]
    if score == "mean_cam":
        scores = np.concatenate(component_means)
    elif score == "excess_mass":
        scores = excess_mass(cam, boxes)
    wsol = wsol_box(cam)
    if options.variant == "released":
        h, w = image_hw
        to_image = lambda b: np.clip(b * cell_pixels, 0.0, [h - 1, w - 1, h - 1, w - 1])
        per_threshold = [to_image(b) for b in per_threshold]
        boxes, wsol = to_image(boxes), to_image(wsol)
    if score == "area":  # of the boxes in the image's pixels, as the release
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        scores = areas / areas[0] if len(areas) and areas[0] > 0 else areas
    keep = nms_indices(boxes, scores, options.nms_iou)  # merging: greedy NMS, descending score
    return PseudoBoxes(
        boxes[keep].astype(np.float32), scores[keep].astype(np.float32), per_threshold, wsol.astype(np.float32)
    )


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
