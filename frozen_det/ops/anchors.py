"""Multilevel anchor boxes, computed once in numpy from static configuration.

Reproduces TF Model Garden ``official/vision/ops/anchor.py`` (docs/reference.md §2.4):

* level ``l`` has a ``ceil(H / 2^l) x ceil(W / 2^l)`` grid, stride ``H / ceil(H / 2^l)``
  (exactly ``2^l`` when the canvas is a multiple of ``2^max_level``);
* centres at ``(i + 0.5) * stride``;
* per location, scale-major then aspect ratio: size ``anchor_size * 2^l * 2^(s / num_scales)``,
  height ``size / sqrt(ar)``, width ``size * sqrt(ar)`` (``ar`` = width / height);
* per level, row-major ``[H_l, W_l, A]``; levels concatenated from ``min_level`` up;
* no clipping, no filtering of anchors that cross the border.

Anchors are plain numpy arrays: they depend only on the config, so they become jit constants
and never cause retracing.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, Sequence, Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class MultilevelAnchors:
    """Anchors of every level; all sizes are static Python ints.

    Attributes:
      per_level: ``{level: float32 [H_l, W_l, A, 4]}`` yxyx anchors in canvas pixels.
      feature_sizes: ``{level: (H_l, W_l)}``.
      num_anchors_per_location: ``A = num_scales * len(aspect_ratios)``.
    """

    per_level: Dict[int, np.ndarray]
    feature_sizes: Dict[int, Tuple[int, int]]
    num_anchors_per_location: int

    @property
    def levels(self) -> Tuple[int, ...]:
        return tuple(sorted(self.per_level))

    @property
    def counts(self) -> Dict[int, int]:
        """``{level: H_l * W_l * A}``."""
        return {l: int(np.prod(self.per_level[l].shape[:3])) for l in self.levels}

    @property
    def num_anchors(self) -> int:
        return sum(self.counts.values())

    @property
    def boxes(self) -> np.ndarray:
        """All anchors concatenated in level order: float32 ``[sum_l H_l W_l A, 4]``."""
        return np.concatenate([self.per_level[l].reshape(-1, 4) for l in self.levels], axis=0)

    def split_levels(self, values, axis: int = 0) -> Dict[int, "np.ndarray"]:
        """Split a concatenated per-anchor array (numpy or jax) back into ``{level: [H, W, A, ...]}``
        along ``axis`` (``values.shape[axis] == num_anchors``); the inverse of concatenation."""
        out, start = {}, 0
        axis = axis % values.ndim
        for l in self.levels:
            h, w = self.feature_sizes[l]
            n = self.counts[l]
            index = (slice(None),) * axis + (slice(start, start + n),)
            piece = values[index]
            out[l] = piece.reshape(piece.shape[:axis] + (h, w, self.num_anchors_per_location) + piece.shape[axis + 1 :])
            start += n
        return out


def _level_anchors(
    level: int, image_size: Tuple[int, int], num_scales: int, aspect_ratios: Sequence[float], anchor_size: float
):
    grid_h = math.ceil(image_size[0] / 2**level)
    grid_w = math.ceil(image_size[1] / 2**level)
    stride_y = image_size[0] / grid_h
    stride_x = image_size[1] / grid_w
    yc = (np.arange(grid_h, dtype=np.float64) + 0.5) * stride_y
    xc = (np.arange(grid_w, dtype=np.float64) + 0.5) * stride_x
    half_sizes = []  # [A, 2] (half height, half width), scale-major then aspect ratio
    for scale in range(num_scales):
        for ar in aspect_ratios:
            size = anchor_size * 2**level * 2 ** (scale / num_scales)
            half_sizes.append((size / math.sqrt(ar) / 2.0, size * math.sqrt(ar) / 2.0))
    half_sizes = np.asarray(half_sizes)
    centres = np.stack(np.meshgrid(yc, xc, indexing="ij"), axis=-1)[:, :, None, :]  # [H, W, 1, 2]
    boxes = np.concatenate([centres - half_sizes, centres + half_sizes], axis=-1)  # [H, W, A, 4]
    return boxes.astype(np.float32), (grid_h, grid_w)


def multilevel_anchors(
    image_size: Tuple[int, int],
    min_level: int,
    max_level: int,
    num_scales: int = 1,
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    anchor_size: float = 8.0,
) -> MultilevelAnchors:
    """Anchors for a ``(height, width)`` canvas and levels ``min_level..max_level`` inclusive.

    Defaults are the reference's Mask R-CNN anchors (docs/reference.md §2.4): 3 per location, side
    ``8 * 2^l`` (32..512 for L2-6). The Eff-B7 track uses ``num_scales=3, anchor_size=4,
    aspect_ratios=(1.0, 2.0, 0.5)`` (docs/reference.md §5.2).
    """
    if min_level > max_level:
        raise ValueError(f"min_level ({min_level}) must be <= max_level ({max_level}).")
    per_level, sizes = {}, {}
    for level in range(min_level, max_level + 1):
        per_level[level], sizes[level] = _level_anchors(
            level, tuple(image_size), num_scales, aspect_ratios, anchor_size
        )
    return MultilevelAnchors(per_level, sizes, num_scales * len(aspect_ratios))
