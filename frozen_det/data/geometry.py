"""Mapping detections back to original image pixels (numpy, host side)."""

from __future__ import annotations

import numpy as np


def to_original_coordinates(boxes, image_info, clip: bool = True) -> np.ndarray:
    """Canvas boxes [..., N, 4] (ymin, xmin, ymax, xmax) -> original-image pixels.

    With ``image_info`` [..., 4, 2] = [[orig h, w], [canvas h, w], [scale y, x],
    [offset y, x]] the inverse of the pipeline's ``canvas = original * scale - offset`` is

        original = (canvas + [oy, ox, oy, ox]) / [sy, sx, sy, sx]

    then (``clip``) clipped to [0, orig h] x [0, orig w]. Batched or single image.
    """
    boxes = np.asarray(boxes, np.float64)
    info = np.asarray(image_info, np.float64)
    offset = np.concatenate([info[..., 3, :], info[..., 3, :]], -1)[..., None, :]
    scale = np.concatenate([info[..., 2, :], info[..., 2, :]], -1)[..., None, :]
    out = (boxes + offset) / scale
    if clip:
        hw = np.concatenate([info[..., 0, :], info[..., 0, :]], -1)[..., None, :]
        out = np.clip(out, 0.0, hw)
    return out


def to_coco_xywh(boxes_yxyx) -> np.ndarray:
    b = np.asarray(boxes_yxyx, np.float64)
    return np.stack([b[..., 1], b[..., 0], b[..., 3] - b[..., 1], b[..., 2] - b[..., 0]], -1)
