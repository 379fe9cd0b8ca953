"""Drawing scenes of objects with numpy and PIL (no TensorFlow): textured backgrounds, filled
shapes, occlusion-checked placement, visible boxes. The synthetic shapes dataset
(frozen_det.data.offline.synthetic), the long-tailed LVIS-format dataset (frozen_det.data.offline.long_tail)
and the objects-on-canvases folders (frozen_det.data.offline.canvases) are drawn with them."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond", "star", "hexagon")


def _shape_polygon(kind, cy, cx, r, rot):
    def ngon(k, radius, phase):
        a = phase + np.arange(k) * 2 * np.pi / k
        return list(zip(cx + radius * np.cos(a), cy + radius * np.sin(a)))

    if kind == "square":
        return ngon(4, r * 1.3, np.pi / 4 + rot * 0.3)
    if kind == "triangle":
        return ngon(3, r * 1.2, -np.pi / 2 + rot * 0.3)
    if kind == "diamond":
        return ngon(4, r * 1.2, 0.0)
    if kind == "hexagon":
        return ngon(6, r, rot)
    if kind == "star":
        outer = np.array(ngon(5, r * 1.2, -np.pi / 2))
        inner = np.array(ngon(5, r * 0.5, -np.pi / 2 + np.pi / 5))
        return [tuple(p) for pair in zip(outer, inner) for p in pair]
    if kind == "cross":
        t = r * 0.4
        pts = [
            (-t, -r),
            (t, -r),
            (t, -t),
            (r, -t),
            (r, t),
            (t, t),
            (t, r),
            (-t, r),
            (-t, t),
            (-r, t),
            (-r, -t),
            (-t, -t),
        ]
        return [(cx + x, cy + y) for y, x in pts]
    raise ValueError(kind)


def draw_shape(kind, size, cy, cx, r, rot) -> np.ndarray:
    """Binary mask of one shape on a size x size grid."""
    im = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(im)
    if kind == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
    elif kind == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
        d.ellipse([cx - r * 0.5, cy - r * 0.5, cx + r * 0.5, cy + r * 0.5], fill=0)
    else:
        d.polygon(_shape_polygon(kind, cy, cx, r, rot), fill=1)
    return np.asarray(im, np.uint8)


def background(rng, size) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c0, c1 = rng.uniform(40, 200, 3), rng.uniform(40, 200, 3)
    t = yy * rng.uniform(-1, 1) + xx * rng.uniform(-1, 1)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    bg = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    period = rng.uniform(6, 20)
    angle = rng.uniform(0, np.pi)
    stripes = np.sin((yy * np.cos(angle) + xx * np.sin(angle)) * size * 2 * np.pi / period)
    bg += 12 * stripes[..., None] + rng.normal(0, 6, (size, size, 3))
    return bg


def random_shape_mask(rng, kind, size, radius=(0.07, 0.2)) -> np.ndarray:
    """Bool mask of one shape at a random position, rotation and radius (``radius``: a range
    of fractions of ``size``), fully inside the image."""
    r = rng.uniform(*radius) * size
    cy, cx = rng.uniform(r, size - r, 2)
    return draw_shape(kind, size, cy, cx, r, rng.uniform(0, 2 * np.pi)).astype(bool)


def place(instance_map, full_areas, mask):
    """``instance_map`` with ``mask`` drawn on top as object ``len(full_areas) + 1`` (a new
    array), or None when the mask is smaller than 30 pixels or would hide more than half of an
    earlier object (``full_areas``: their unoccluded pixel counts)."""
    if mask.sum() < 30:
        return None
    trial = instance_map.copy()
    trial[mask] = len(full_areas) + 1
    visible = [(trial == j + 1).sum() for j in range(len(full_areas))]
    if any(v < 0.5 * a for v, a in zip(visible, full_areas)):
        return None
    return trial


def paint(rng, image, mask, colour) -> None:
    """Fills ``mask`` of the float image with ``colour`` plus a little per-pixel noise."""
    image[mask] = colour + rng.normal(0, 4, (int(mask.sum()), 3))


def visible_boxes(instance_map, num_objects) -> tuple:
    """Tight boxes (ymin, xmin, ymax, xmax; float32 [n, 4]) and pixel areas (int64 [n]) of the
    visible parts of objects 1..num_objects of an instance map."""
    boxes, areas = [], []
    for j in range(num_objects):
        ys, xs = np.nonzero(instance_map == j + 1)
        boxes.append([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1])
        areas.append(len(ys))
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(areas, np.int64)
