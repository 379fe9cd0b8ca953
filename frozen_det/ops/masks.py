"""Instance-mask targets for the mask head, and pasting predicted masks into the image.

Two ways to build the ``[R, 28, 28]`` targets of R sampled ROIs from ground truth:

* :func:`mask_targets_from_canvas_masks` -- ground-truth masks at canvas resolution
  ``[M, H, W]``; each ROI reads its matched mask with RoIAlign (Detectron2's
  ``BitMasks.crop_and_resize``: ``aligned=True``, torchvision boundaries; we use a fixed
  ``sampling_ratio=2`` where Detectron2 adapts it to the box size). The most general path.
* :func:`mask_targets_from_box_crops` -- the reference's path (docs/reference.md §2.10): ground truth
  pre-cropped to ``112 x 112`` inside each GT box (:func:`crop_masks_to_boxes`, done in the
  input pipeline), then re-sampled into each ROI's frame like ``crop_mask_in_target_box``
  (2-pixel zero padding, one sample per bin at offset 0.5). Memory is ``M x 112^2`` instead of
  ``M x H x W``.

Targets are soft (bilinear values in [0, 1], not binarised), as in the reference.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from frozen_det.ops.roi_align import bilinear_crops, crop_and_resize, packed_roi_align

REFERENCE_CROP_SIZE = 112  # GT mask crop in the reference's parser (docs/reference.md §2.10)
_EPS = 1e-8


def _per_image(fn, batched, *args):
    return jax.vmap(fn)(*args) if batched else fn(*args)


def mask_targets_from_canvas_masks(
    gt_masks: jnp.ndarray,
    matched_gt: jnp.ndarray,
    rois: jnp.ndarray,
    output_size: int = 28,
    sampling_ratio: int = 2,
    aligned: bool = True,
) -> jnp.ndarray:
    """RoIAlign each ROI's matched ground-truth mask.

    Args:
      gt_masks: ``[M, H, W]`` (or ``[B, M, H, W]``) masks on the canvas, values in [0, 1].
      matched_gt: ``[R]`` (or ``[B, R]``) int ground-truth index per ROI; negative values
        (unmatched ROIs) read mask 0 -- give them zero loss weight.
      rois: ``[R, 4]`` (or ``[B, R, 4]``) yxyx canvas pixels.
      output_size, sampling_ratio, aligned: RoIAlign settings (torchvision boundaries).

    Returns:
      ``[R, S, S]`` (or ``[B, R, S, S]``) float32 soft targets.
    """

    def one_image(masks, index, boxes):
        m, h, w = masks.shape
        ones = jnp.ones(boxes.shape[:1], jnp.int32)
        base = jnp.clip(index, 0, m - 1).astype(jnp.int32) * (h * w)
        crops = packed_roi_align(
            masks.reshape(m * h * w, 1).astype(jnp.float32),
            base,
            ones * h,
            ones * w,
            boxes,
            ones * 1.0,
            output_size,
            sampling_ratio,
            aligned,
            "torchvision",
        )
        return crops[..., 0]

    return _per_image(one_image, gt_masks.ndim == 4, gt_masks, matched_gt, rois)


def crop_masks_to_boxes(masks: jnp.ndarray, boxes: jnp.ndarray, crop_size: int = REFERENCE_CROP_SIZE) -> jnp.ndarray:
    """The reference parser's GT mask crops (docs/reference.md §2.10): ``tf.image.crop_and_resize`` of each
    ``[M, H, W]`` mask inside its own yxyx box (pixels, normalised by ``H`` and ``W``), bilinear,
    not binarised. Returns ``[M, crop_size, crop_size]`` (batched: ``[B, M, ...]``)."""

    def one_image(mk, bx):
        m, h, w = mk.shape
        normalized = bx.astype(jnp.float32) / jnp.array([h, w, h, w], jnp.float32)
        crops = crop_and_resize(mk[..., None].astype(jnp.float32), normalized, jnp.arange(m), (crop_size, crop_size))
        return crops[..., 0]

    return _per_image(one_image, masks.ndim == 4, masks, boxes)


def mask_targets_from_box_crops(
    gt_crops: jnp.ndarray,
    gt_boxes: jnp.ndarray,
    matched_gt: jnp.ndarray,
    rois: jnp.ndarray,
    output_size: int = 28,
) -> jnp.ndarray:
    """Re-sample box-aligned GT crops into ROI frames (reference ``crop_mask_in_target_box``,
    sample offset 0.5, docs/reference.md §2.10).

    Each ``[S, S]`` crop is zero-padded by 2 pixels; the ROI is mapped into crop pixels by
    ``u = (roi_ymin - gt_ymin) * S / gt_h + 2`` (likewise x) and sampled at one point per bin,
    ``u + (i + 0.5) * roi_h * S / gt_h / output_size``, with the reference's clamped-index
    bilinear kernel. (The reference scales x by the crop height and h by the crop width; the
    two are equal for its square crops, so this uses the matching axis.)

    Args:
      gt_crops: ``[M, S, S]`` (or ``[B, M, S, S]``) crops from :func:`crop_masks_to_boxes`.
      gt_boxes: ``[M, 4]`` yxyx boxes the crops were taken in.
      matched_gt: ``[R]`` int GT index per ROI (negative -> GT 0; weight those 0).
      rois: ``[R, 4]`` yxyx canvas pixels.

    Returns:
      ``[R, output_size, output_size]`` float32 soft targets.
    """

    def one_image(crops, gt, index, boxes):
        m, s_h, s_w = crops.shape
        padded = jnp.pad(crops.astype(jnp.float32), ((0, 0), (2, 2), (2, 2)))
        ph, pw = s_h + 4, s_w + 4
        index = jnp.clip(index, 0, m - 1).astype(jnp.int32)
        gt = gt.astype(jnp.float32)[index]
        boxes = boxes.astype(jnp.float32)
        gt_h = gt[:, 2] - gt[:, 0] + _EPS
        gt_w = gt[:, 3] - gt[:, 1] + _EPS
        y0 = (boxes[:, 0] - gt[:, 0]) * s_h / gt_h + 2.0
        x0 = (boxes[:, 1] - gt[:, 1]) * s_w / gt_w + 2.0
        h = (boxes[:, 2] - boxes[:, 0]) * s_h / gt_h
        w = (boxes[:, 3] - boxes[:, 1]) * s_w / gt_w
        steps = jnp.arange(output_size, dtype=jnp.float32) + 0.5
        ys = y0[:, None] + steps[None, :] * (h / output_size)[:, None]
        xs = x0[:, None] + steps[None, :] * (w / output_size)[:, None]
        ones = jnp.ones_like(index)
        out = bilinear_crops(padded.reshape(-1, 1), index * (ph * pw), ones * ph, ones * pw, ys, xs, "tfmg")
        return out[..., 0]

    return _per_image(one_image, gt_crops.ndim == 4, gt_crops, gt_boxes, matched_gt, rois)


def _paste_weights(lo, hi, mask_size: int, canvas_size: int):
    """``[canvas_size, mask_size + 2]`` bilinear weights from canvas pixels (centres at
    ``j + 0.5``) to the cells of a 1-pixel zero-padded mask laid over the box expanded by
    ``(m + 2) / m``. Coordinates are clamped into the padding, whose cells are 0, so pixels
    outside the box read 0."""
    scale = (mask_size + 2.0) / mask_size
    centre, half = 0.5 * (lo + hi), 0.5 * (hi - lo) * scale
    start = centre - half
    cell = jnp.maximum(2.0 * half / (mask_size + 2), _EPS)
    u = (jnp.arange(canvas_size, dtype=jnp.float32) + 0.5 - start) / cell - 0.5
    u = jnp.clip(u, 0.0, mask_size + 1.0)
    return jnp.maximum(0.0, 1.0 - jnp.abs(u[:, None] - jnp.arange(mask_size + 2)[None, :]))


def paste_masks(
    masks: jnp.ndarray,
    boxes: jnp.ndarray,
    canvas_size: Sequence[int],
    threshold: Optional[float] = 0.5,
) -> jnp.ndarray:
    """Paste per-ROI mask probabilities into full-canvas masks (Detectron-style).

    Each ``[m, m]`` mask is padded by one zero pixel and stretched over its box expanded by
    ``(m + 2) / m`` (so the mask's outer edge lands on the box edge), sampled bilinearly at every
    canvas pixel centre and thresholded (``> threshold``). This is the continuous form of
    Detectron's integer-box ``cv2.resize`` paste (Detectron2's ``paste_masks_in_image``), in
    separable matrix form: ``Wy @ padded_mask @ Wx^T``, no gathers, static shapes.

    Args:
      masks: ``[R, m, m]`` (or ``[B, R, m, m]``) probabilities.
      boxes: ``[R, 4]`` (or ``[B, R, 4]``) yxyx canvas pixels.
      canvas_size: static ``(H, W)`` of the output.
      threshold: binarisation threshold; ``None`` returns the float probabilities.

    Returns:
      ``[R, H, W]`` (or ``[B, R, H, W]``) bool, or float32 if ``threshold`` is None.
    """
    height, width = canvas_size

    def one_mask(mask, box):
        m = mask.shape[-1]
        padded = jnp.pad(mask.astype(jnp.float32), 1)
        wy = _paste_weights(box[0], box[2], m, height)
        wx = _paste_weights(box[1], box[3], m, width)
        return wy @ padded @ wx.T

    flat_masks = masks.reshape((-1,) + masks.shape[-2:])
    flat_boxes = boxes.reshape(-1, 4).astype(jnp.float32)
    pasted = jax.vmap(one_mask)(flat_masks, flat_boxes)
    pasted = pasted.reshape(masks.shape[:-2] + (height, width))
    return pasted if threshold is None else pasted > threshold
