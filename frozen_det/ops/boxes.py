"""Box arithmetic: areas, IoU, clipping, box coding, the canvas -> original-image map.

All boxes are ``[..., 4]`` arrays in ``[ymin, xmin, ymax, xmax]`` order, absolute pixels of the
padded canvas. Every function broadcasts over leading dimensions, so it works unchanged on
``[N, 4]`` and ``[B, N, 4]`` inputs and under ``jax.vmap``.

Numerics follow TF Model Garden ``official/vision/ops/box_ops.py`` (docs/reference.md §7.2 "Box coding"):
no ``+1`` on sizes, ``dh``/``dw`` clipped at ``log(1000/16)`` before ``exp`` on decode.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

# Largest allowed log-scale change on decode (docs/reference.md §7.2): log(1000 / 16) ~= 4.135.
BBOX_XFORM_CLIP = math.log(1000.0 / 16.0)

# Box-coder weights used by the reference (docs/reference.md §2.5, §2.8, §7.2). RPN uses no weights.
RPN_WEIGHTS = None
FRCNN_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
CASCADE_WEIGHTS = ((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0))

Weights = Optional[Sequence[float]]
Shape = Union[Sequence[float], jnp.ndarray]


def _split(boxes):
    return boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]


def area(boxes: jnp.ndarray) -> jnp.ndarray:
    """Area of ``[..., 4]`` yxyx boxes -> ``[...]``. Inverted boxes get area 0, not negative."""
    ymin, xmin, ymax, xmax = _split(boxes)
    return jnp.maximum(ymax - ymin, 0.0) * jnp.maximum(xmax - xmin, 0.0)


def pairwise_intersection(boxes1: jnp.ndarray, boxes2: jnp.ndarray) -> jnp.ndarray:
    """Intersection areas ``[..., N, 4] x [..., M, 4] -> [..., N, M]``."""
    y1a, x1a, y2a, x2a = [c[..., :, None] for c in _split(boxes1)]
    y1b, x1b, y2b, x2b = [c[..., None, :] for c in _split(boxes2)]
    h = jnp.maximum(jnp.minimum(y2a, y2b) - jnp.maximum(y1a, y1b), 0.0)
    w = jnp.maximum(jnp.minimum(x2a, x2b) - jnp.maximum(x1a, x1b), 0.0)
    return h * w


def pairwise_iou(
    boxes1: jnp.ndarray,
    boxes2: jnp.ndarray,
    valid1: Optional[jnp.ndarray] = None,
    valid2: Optional[jnp.ndarray] = None,
    invalid_value: float = -1.0,
) -> jnp.ndarray:
    """Pairwise IoU ``[..., N, 4] x [..., M, 4] -> [..., N, M]``.

    Pairs whose union is empty (two zero-area boxes) get IoU 0, so degenerate boxes never
    match or suppress anything (same as TF's NMS kernel; torchvision returns NaN there).

    ``valid1`` ``[..., N]`` / ``valid2`` ``[..., M]`` are optional bool masks; every pair
    involving an invalid (padded) box gets ``invalid_value``. The default -1 is the reference's
    convention for ROI matching (docs/reference.md §2.8: padded boxes/GT get IoU -1), which puts padding
    below every matcher threshold, including the 0 lower bound of the background band.
    """
    inter = pairwise_intersection(boxes1, boxes2)
    union = area(boxes1)[..., :, None] + area(boxes2)[..., None, :] - inter
    iou = jnp.where(union > 0.0, inter / jnp.where(union > 0.0, union, 1.0), 0.0)
    if valid1 is not None:
        iou = jnp.where(valid1[..., :, None], iou, invalid_value)
    if valid2 is not None:
        iou = jnp.where(valid2[..., None, :], iou, invalid_value)
    return iou


def _image_hw(image_shape: Shape, boxes: jnp.ndarray):
    """``(h, w)`` broadcastable against ``boxes[..., 0]``.

    ``image_shape`` is a static ``(h, w)`` pair or an array ``[..., 2]`` whose leading dims are
    a prefix of the boxes' leading dims (e.g. ``[B, 2]`` for ``[B, N, 4]`` or ``[B, N, C, 4]``).
    """
    image_shape = jnp.asarray(image_shape, dtype=boxes.dtype)
    h, w = image_shape[..., 0], image_shape[..., 1]
    extra = (1,) * (boxes.ndim - image_shape.ndim)  # one size per image: add the box axes
    return h.reshape(h.shape + extra), w.reshape(w.shape + extra)


def clip_boxes(boxes: jnp.ndarray, image_shape: Shape) -> jnp.ndarray:
    """Clip yxyx boxes to ``[0, h] x [0, w]`` (docs/reference.md §2.6: clip to the desired canvas size)."""
    h, w = _image_hw(image_shape, boxes)
    ymin, xmin, ymax, xmax = _split(boxes)
    return jnp.stack(
        [jnp.clip(ymin, 0.0, h), jnp.clip(xmin, 0.0, w), jnp.clip(ymax, 0.0, h), jnp.clip(xmax, 0.0, w)], axis=-1
    )


def _centre_size(boxes):
    ymin, xmin, ymax, xmax = _split(boxes)
    h, w = ymax - ymin, xmax - xmin
    return ymin + 0.5 * h, xmin + 0.5 * w, h, w


def encode_boxes(boxes: jnp.ndarray, anchors: jnp.ndarray, weights: Weights = None, eps: float = 1e-8) -> jnp.ndarray:
    """Regression targets ``[ty, tx, th, tw]`` of ``boxes`` relative to ``anchors`` (both yxyx).

    ``ty = wy * (yc - yc_a) / h_a`` and ``th = wh * log(h / h_a)``, likewise for x/w.
    ``weights`` are the per-stage scale factors (``None`` = (1, 1, 1, 1), the RPN, docs/reference.md §2.5).
    ``eps`` is added to every size as the reference's RPN coder does; at pixel scale it changes
    nothing in float32 except keeping ``log`` finite for zero-size (padded / degenerate) boxes.
    """
    boxes, anchors = jnp.asarray(boxes), jnp.asarray(anchors)
    yc, xc, h, w = _centre_size(boxes)
    yca, xca, ha, wa = _centre_size(anchors)
    h, w, ha, wa = h + eps, w + eps, ha + eps, wa + eps
    deltas = jnp.stack([(yc - yca) / ha, (xc - xca) / wa, jnp.log(h / ha), jnp.log(w / wa)], axis=-1)
    if weights is not None:
        deltas = deltas * jnp.asarray(weights, dtype=deltas.dtype)
    return deltas


def decode_boxes(
    deltas: jnp.ndarray,
    anchors: jnp.ndarray,
    weights: Weights = None,
    scale_clip: float = BBOX_XFORM_CLIP,
) -> jnp.ndarray:
    """Inverse of :func:`encode_boxes`: apply ``[..., 4]`` deltas to yxyx ``anchors``.

    ``dh``/``dw`` (after dividing by the weights) are clipped at ``scale_clip`` = log(1000/16)
    before ``exp`` (docs/reference.md §7.2). ``ymax`` is computed as ``ymin + h`` as the reference does.
    """
    deltas, anchors = jnp.asarray(deltas), jnp.asarray(anchors)
    if weights is not None:
        deltas = deltas / jnp.asarray(weights, dtype=deltas.dtype)
    dy, dx, dh, dw = _split(deltas)
    dh = jnp.minimum(dh, scale_clip)
    dw = jnp.minimum(dw, scale_clip)
    yca, xca, ha, wa = _centre_size(anchors)
    yc, xc = dy * ha + yca, dx * wa + xca
    h, w = jnp.exp(dh) * ha, jnp.exp(dw) * wa
    ymin, xmin = yc - 0.5 * h, xc - 0.5 * w
    return jnp.stack([ymin, xmin, ymin + h, xmin + w], axis=-1)


def to_original_boxes(boxes, image_info, clip: bool = True):
    """Canvas boxes ``[..., N, 4]`` -> original-image pixels, the inverse of the input pipeline's
    letterbox ``canvas = original * scale - offset`` (docs/reference.md §2.11):

        original = (canvas + [oy, ox, oy, ox]) / [sy, sx, sy, sx]

    then (``clip``) clipped to ``[0, orig h] x [0, orig w]``. ``image_info [..., 4, 2]`` =
    ``[[orig h, w], [canvas h, w], [scale y, x], [offset y, x]]``, batched or for one image.
    Inside jit (jax arrays) it is jnp; on the host (numpy inputs) numpy in float64."""
    xp = np if not any(isinstance(a, jax.Array) for a in (boxes, image_info)) else jnp
    if xp is np:
        boxes, image_info = np.asarray(boxes, np.float64), np.asarray(image_info, np.float64)
    twice = lambda row: xp.concatenate([image_info[..., row, :]] * 2, axis=-1)[..., None, :]
    out = (boxes + twice(3)) / twice(2)
    return xp.clip(out, 0.0, twice(0)) if clip else out
