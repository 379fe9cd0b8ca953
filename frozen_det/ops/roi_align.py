"""Bilinear box crops of feature maps: multilevel RoIAlign and TF's ``crop_and_resize``.

All variants share one gather-based kernel: every box reads the 2x2 neighbours of each of its
sample points from a flat ``[P, C]`` buffer in one gather (docs/reference.md §2.9; more than
``BOXES_PER_CHUNK`` boxes are gathered chunk by chunk in a loop, see ``bilinear_crops``), then
combines them with separable bilinear weights. Cost is ``N x S^2 x 4 x C`` for N boxes and S^2
sample points, independent of the feature-map size; gradients flow to the features
(scatter-add, the transpose of the gather) and to the box coordinates through the weights.

Pixel convention: feature pixel ``i`` has its centre at coordinate ``i``. A box in canvas
pixels is divided by the level's stride ``2^level``.

Boundary conventions (``convention=``):

* ``"tfmg"`` -- the reference's ``multilevel_crop_and_resize`` (docs/reference.md §2.9): the neighbour
  indices ``floor(y)`` and ``floor(y)+1`` are clamped to ``[0, size-1]`` while the weights
  use the unclamped ``y``. Inside the map this is plain bilinear interpolation; past the far
  edge it repeats the edge value; before the near edge (only for boxes with negative
  coordinates) it extrapolates linearly, exactly as the reference does.
* ``"torchvision"`` -- ``torchvision.ops.roi_align``: samples with ``y < -1`` or ``y > size``
  are 0, others are clamped into ``[0, size-1]``.
* ``"zero_outside"`` -- ``tf.image.crop_and_resize``: samples outside ``[0, size-1]`` take
  ``extrapolation_value``.
"""

from __future__ import annotations

from typing import Dict, Mapping, Sequence, Union

import jax
import jax.numpy as jnp

Features = Union[Mapping[int, jnp.ndarray], Sequence[jnp.ndarray]]


# ------------------------------------------------------------------------------------------
# Core kernel
# ------------------------------------------------------------------------------------------


def _neighbours(coords, size, convention):
    """Neighbour indices ``[..., 2]`` and weights ``[..., 2]`` along one axis.

    ``coords`` ``[N, S]`` are sample positions; ``size`` ``[N]`` the extent of each box's map.
    """
    size = size.astype(coords.dtype)[:, None]
    last = size - 1.0
    if convention == "tfmg":
        low = jnp.clip(jnp.floor(coords), 0.0, last)
        high = jnp.minimum(low + 1.0, last)
        frac = coords - low
        weights = jnp.stack([1.0 - frac, frac], axis=-1)
    elif convention == "torchvision":
        inside = (coords >= -1.0) & (coords <= size)
        c = jnp.maximum(coords, 0.0)
        low = jnp.minimum(jnp.floor(c), last)
        high = jnp.minimum(low + 1.0, last)
        frac = jnp.where(low >= last, 0.0, c - low)
        weights = jnp.stack([1.0 - frac, frac], axis=-1) * inside[..., None]
    elif convention == "zero_outside":
        inside = (coords >= 0.0) & (coords <= last)
        low = jnp.clip(jnp.floor(coords), 0.0, last)
        high = jnp.minimum(low + 1.0, last)
        frac = coords - low
        weights = jnp.stack([1.0 - frac, frac], axis=-1) * inside[..., None]
    else:
        raise ValueError(f"Unknown RoIAlign convention {convention!r}; use 'tfmg', 'torchvision' or 'zero_outside'.")
    return jnp.stack([low, high], axis=-1).astype(jnp.int32), weights


BOXES_PER_CHUNK = 128  # see bilinear_crops


def bilinear_crops(flat, base, height, width, ys, xs, convention="tfmg", outside_value=0.0):
    """Sample boxes from maps packed in one flat buffer.

    Args:
      flat: ``[P, C]`` all maps flattened row-major and concatenated.
      base: ``[N]`` int, offset of each box's map in ``flat``.
      height, width: ``[N]`` int, size of each box's map.
      ys: ``[N, Sy]`` sample rows, ``xs``: ``[N, Sx]`` sample columns (map pixel units).
      convention: see the module docstring.
      outside_value: value for samples outside the map with ``"zero_outside"``.

    Returns:
      ``[N, Sy, Sx, C]`` in the dtype of ``flat``.
    """
    iy, wy = _neighbours(ys, height, convention)  # [N, Sy, 2]
    ix, wx = _neighbours(xs, width, convention)  # [N, Sx, 2]
    index = (
        base[:, None, None, None, None]
        + iy[:, :, :, None, None] * width[:, None, None, None, None]
        + ix[:, None, None, :, :]
    )  # [N, Sy, 2, Sx, 2]
    weights = wy[:, :, :, None, None] * wx[:, None, None, :, :]  # [N, Sy, 2, Sx, 2]

    def interpolate(index_and_weights):
        index, weights = index_and_weights
        values = flat[index]  # [n, Sy, 2, Sx, 2, C], one gather
        return jnp.sum(values.astype(jnp.float32) * weights[..., None], axis=(2, 4))

    n = index.shape[0]
    if n > BOXES_PER_CHUNK:
        # Chunks of boxes in a loop: the loop's input `flat` is materialised once, where XLA would
        # otherwise fuse its producers (the level concatenation, the neck's last BatchNorm) into
        # the gather and recompute them for every gathered element, several times slower on
        # XLA:CPU (tools/profile_step.py on the R50-FPN step); and the gathered corners
        # [boxes, S, 2, S, 2, C] exist for one chunk at a time.
        chunks = -(-n // BOXES_PER_CHUNK)
        pad = chunks * BOXES_PER_CHUNK - n
        padded = [
            jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)).reshape((chunks, BOXES_PER_CHUNK) + a.shape[1:])
            for a in (index, weights)
        ]
        out = jax.lax.map(interpolate, tuple(padded))
        out = out.reshape((chunks * BOXES_PER_CHUNK,) + out.shape[2:])[:n]
    else:
        out = interpolate((index, weights))
    if convention == "zero_outside" and outside_value != 0.0:
        inside_y = (ys >= 0) & (ys <= (height[:, None] - 1))
        inside_x = (xs >= 0) & (xs <= (width[:, None] - 1))
        inside = inside_y[:, :, None] & inside_x[:, None, :]
        out = jnp.where(inside[..., None], out, outside_value)
    return out.astype(flat.dtype)


def _roi_sample_points(start, length, output_size, sampling_ratio, convention):
    """``[N, output_size * sampling_ratio]`` points at the centres of a regular sub-grid of each
    bin. The float operations follow each reference's order, so positions agree bit for bit:
    TF ``start + (i + 0.5) * length / S``; torchvision
    ``start + bin * b + (j + 0.5) * b / ratio`` with ``b = length / S``."""
    if convention == "torchvision":
        bin_size = (length / output_size)[:, None]
        bins = jnp.repeat(jnp.arange(output_size, dtype=start.dtype), sampling_ratio)
        within = jnp.tile(jnp.arange(sampling_ratio, dtype=start.dtype) + 0.5, output_size)
        return start[:, None] + bins * bin_size + within * bin_size / sampling_ratio
    steps = output_size * sampling_ratio
    k = jnp.arange(steps, dtype=start.dtype) + 0.5
    return start[:, None] + k[None, :] * length[:, None] / steps


def _average_samples(crops, output_size, sampling_ratio):
    if sampling_ratio == 1:
        return crops
    n, c = crops.shape[0], crops.shape[-1]
    r = sampling_ratio
    return crops.reshape(n, output_size, r, output_size, r, c).mean(axis=(2, 4)).astype(crops.dtype)


def _box_frame(boxes, scale, aligned, convention):
    """Per-box start and extent (in map pixels) along y and x."""
    offset = 0.5 if aligned else 0.0
    scaled = boxes * scale[:, None] - offset
    y0, x0 = scaled[:, 0], scaled[:, 1]
    h, w = scaled[:, 2] - y0, scaled[:, 3] - x0
    if convention == "torchvision" and not aligned:
        h, w = jnp.maximum(h, 1.0), jnp.maximum(w, 1.0)  # torchvision's legacy minimum size
    return y0, x0, h, w


def packed_roi_align(
    flat,
    base,
    height,
    width,
    boxes,
    scale,
    output_size: int,
    sampling_ratio: int = 1,
    aligned: bool = False,
    convention: str = "tfmg",
):
    """RoIAlign of ``[N, 4]`` yxyx boxes from maps packed in a flat ``[P, C]`` buffer.

    ``base``, ``height``, ``width`` (int) and ``scale`` (float, 1/stride) are ``[N]`` per-box
    descriptions of the map each box reads (see :func:`bilinear_crops`). Bins are
    ``output_size`` per side with ``sampling_ratio`` x ``sampling_ratio`` samples each at the
    centres of a regular sub-grid, averaged. Returns ``[N, S, S, C]``.
    """
    y0, x0, bh, bw = _box_frame(boxes.astype(jnp.float32), scale, aligned, convention)
    ys = _roi_sample_points(y0, bh, output_size, sampling_ratio, convention)
    xs = _roi_sample_points(x0, bw, output_size, sampling_ratio, convention)
    crops = bilinear_crops(flat, base, height, width, ys, xs, convention)
    return _average_samples(crops, output_size, sampling_ratio)


def _check_convention(convention):
    if convention not in ("tfmg", "torchvision"):
        raise ValueError(f"RoIAlign convention must be 'tfmg' or 'torchvision', got {convention!r}.")


def _maybe_batched(fn, features_batched: bool, *args):
    return jax.vmap(fn)(*args) if features_batched else fn(*args)


# ------------------------------------------------------------------------------------------
# Single-level RoIAlign
# ------------------------------------------------------------------------------------------


def roi_align(
    feature: jnp.ndarray,
    boxes: jnp.ndarray,
    output_size: int = 7,
    spatial_scale: float = 1.0,
    sampling_ratio: int = 1,
    aligned: bool = False,
    convention: str = "tfmg",
) -> jnp.ndarray:
    """RoIAlign on one feature map.

    Args:
      feature: ``[H, W, C]`` or batched ``[B, H, W, C]``.
      boxes: yxyx, ``[N, 4]`` or ``[B, N, 4]`` (matching ``feature``), in input pixels.
      output_size: static bins per side.
      spatial_scale: multiplies box coordinates (1/stride).
      sampling_ratio: static samples per bin per axis (averaged); must be >= 1 (torchvision's
        adaptive ``-1``/``0`` would make shapes data-dependent).
      aligned: shift by -0.5 pixel (torchvision ``aligned=True``; Detectron2 ROIAlignV2).
      convention: ``"tfmg"`` or ``"torchvision"`` boundary handling (module docstring).

    Returns:
      ``[N, S, S, C]`` or ``[B, N, S, S, C]``.
    """
    _check_convention(convention)
    if sampling_ratio < 1:
        raise ValueError(f"sampling_ratio must be a static int >= 1, got {sampling_ratio}.")

    def one_image(feat, bxs):
        h, w, c = feat.shape
        zeros = jnp.zeros(bxs.shape[:1], jnp.int32)
        return packed_roi_align(
            feat.reshape(h * w, c),
            zeros,
            zeros + h,
            zeros + w,
            bxs,
            zeros + spatial_scale,
            output_size,
            sampling_ratio,
            aligned,
            convention,
        )

    return _maybe_batched(one_image, feature.ndim == 4, feature, boxes)


# ------------------------------------------------------------------------------------------
# Multilevel RoIAlign
# ------------------------------------------------------------------------------------------


def assign_fpn_levels(
    boxes: jnp.ndarray, min_level: int, max_level: int, canonical_size: float = 224.0, canonical_level: int = 4
) -> jnp.ndarray:
    """FPN level of each yxyx box: ``floor(log2(sqrt(h*w) / 224)) + 4`` clamped to
    ``[min_level, max_level]`` (docs/reference.md §2.9). Zero-area boxes go to ``min_level``.
    ``log2`` is computed as ``log(x) / log(2)`` as the reference does, so boxes of exactly
    ``224 * 2^k`` pixels land on the same level as in TF."""
    h = boxes[..., 2] - boxes[..., 0]
    w = boxes[..., 3] - boxes[..., 1]
    sqrt_area = jnp.sqrt(jnp.maximum(h * w, 0.0))
    level = jnp.floor(jnp.log(sqrt_area / canonical_size) / jnp.log(2.0)) + canonical_level
    return jnp.clip(level, min_level, max_level).astype(jnp.int32)


def _as_level_dict(features: Features, min_level) -> Dict[int, jnp.ndarray]:
    if isinstance(features, Mapping):
        levels = sorted(int(k) for k in features)
        if levels != list(range(levels[0], levels[-1] + 1)):
            raise ValueError(f"Feature levels must be consecutive, got {levels}.")
        return {l: features[l] if l in features else features[str(l)] for l in levels}
    if min_level is None:
        raise ValueError("Pass min_level when features are given as a list.")
    return {min_level + i: f for i, f in enumerate(features)}


def multilevel_roi_align(
    features: Features,
    boxes: jnp.ndarray,
    output_size: int = 7,
    *,
    min_level: int | None = None,
    sampling_ratio: int = 1,
    aligned: bool = False,
    convention: str = "tfmg",
    canonical_size: float = 224.0,
    canonical_level: int = 4,
) -> jnp.ndarray:
    """RoIAlign from an FPN pyramid, each box read from its assigned level.

    The defaults reproduce the reference (docs/reference.md §2.9): crop 7 (14 for masks), one sample per
    bin at offset 0.5, no half-pixel shift, clamped neighbour indices.

    Args:
      features: ``{level: [B, H_l, W_l, C]}`` (or unbatched ``[H_l, W_l, C]``), or a list of
        such maps starting at ``min_level``. Level ``l`` has stride ``2^l``.
      boxes: yxyx canvas pixels, ``[B, N, 4]`` (or ``[N, 4]`` for unbatched features).
      output_size, sampling_ratio, aligned, convention: as :func:`roi_align`.
      min_level: first level when ``features`` is a list.
      canonical_size, canonical_level: level rule constants (224, 4).

    Returns:
      ``[B, N, S, S, C]`` (or ``[N, S, S, C]``).
    """
    _check_convention(convention)
    if sampling_ratio < 1:
        raise ValueError(f"sampling_ratio must be a static int >= 1, got {sampling_ratio}.")
    by_level = _as_level_dict(features, min_level)
    levels = sorted(by_level)
    batched = by_level[levels[0]].ndim == 4
    sizes = [f.shape[-3:-1] for f in by_level.values()]
    # Static per-level tables: offset of each level in the flat buffer, its size and stride.
    offsets, total = [], 0
    for h, w in sizes:
        offsets.append(total)
        total += h * w
    offsets = jnp.array(offsets, jnp.int32)
    heights = jnp.array([h for h, _ in sizes], jnp.int32)
    widths = jnp.array([w for _, w in sizes], jnp.int32)
    scales = jnp.array([2.0**-l for l in levels], jnp.float32)

    def one_image(feats, bxs):
        flat = jnp.concatenate([f.reshape(-1, f.shape[-1]) for f in feats], axis=0)
        bxs = bxs.astype(jnp.float32)
        li = assign_fpn_levels(bxs, levels[0], levels[-1], canonical_size, canonical_level)
        li = li - levels[0]
        return packed_roi_align(
            flat,
            offsets[li],
            heights[li],
            widths[li],
            bxs,
            scales[li],
            output_size,
            sampling_ratio,
            aligned,
            convention,
        )

    feats = [by_level[l] for l in levels]
    return _maybe_batched(one_image, batched, feats, boxes)


# ------------------------------------------------------------------------------------------
# TF crop_and_resize
# ------------------------------------------------------------------------------------------


def crop_and_resize(
    image: jnp.ndarray,
    boxes: jnp.ndarray,
    box_indices: jnp.ndarray,
    crop_size: Sequence[int],
    extrapolation_value: float = 0.0,
) -> jnp.ndarray:
    """``tf.image.crop_and_resize`` (bilinear) with static shapes.

    ``image`` ``[B, H, W, C]``; ``boxes`` ``[N, 4]`` normalised yxyx where 0 and 1 are the
    centres of the first and last pixel (TF's convention: ``y = y1 * (H-1) + i * (y2 - y1) *
    (H-1) / (crop_h-1)``, centre of the box for a 1-pixel crop); ``box_indices`` ``[N]`` the
    image of each box. Samples outside the image take ``extrapolation_value``.
    Returns ``[N, crop_h, crop_w, C]``.
    """
    b, h, w, c = image.shape
    crop_h, crop_w = crop_size
    boxes = boxes.astype(jnp.float32)

    def points(lo, hi, size, steps):
        if steps == 1:
            return (0.5 * (lo + hi) * (size - 1))[:, None]
        i = jnp.arange(steps, dtype=jnp.float32)
        return lo[:, None] * (size - 1) + i[None, :] * ((hi - lo) * (size - 1) / (steps - 1))[:, None]

    ys = points(boxes[:, 0], boxes[:, 2], h, crop_h)
    xs = points(boxes[:, 1], boxes[:, 3], w, crop_w)
    n = boxes.shape[0]
    ones = jnp.ones([n], jnp.int32)
    return bilinear_crops(
        image.reshape(b * h * w, c),
        box_indices.astype(jnp.int32) * (h * w),
        ones * h,
        ones * w,
        ys,
        xs,
        "zero_outside",
        extrapolation_value,
    )
