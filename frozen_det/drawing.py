"""Drawing detections and training examples on images (host side, PIL)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
]


def colour(class_id: int) -> tuple[int, int, int]:
    return PALETTE[int(class_id) % len(PALETTE)]


def denormalize(image, mean, std) -> np.ndarray:
    """A pipeline image (normalised by data.mean / data.std) back to uint8 RGB."""
    x = np.asarray(image, np.float32) * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def draw_detections(image: Image.Image, detections: list[dict], masks: list | None = None) -> Image.Image:
    """Boxes (`box_xyxy` in the image's pixels), '<class_name> <score>' labels on filled tabs and
    optional masks (full-image probabilities) of `detections` drawn on a copy of `image`."""
    out = np.asarray(image.convert("RGB"), np.float32)
    for det, mask in zip(detections, masks or [None] * len(detections)):
        if mask is not None:
            alpha = 0.45 * mask[..., None]
            out = out * (1 - alpha) + np.array(colour(det["class_id"]), np.float32) * alpha
    drawn = Image.fromarray(out.astype(np.uint8))
    pen = ImageDraw.Draw(drawn)
    width = max(1, round(min(drawn.size) / 300))
    for det in detections:
        c = colour(det["class_id"])
        x0, y0, x1, y1 = det["box_xyxy"]
        pen.rectangle([x0, y0, x1, y1], outline=c, width=width)
        label = f"{det['class_name']} {det['score']:.2f}"
        # The label on a filled tab in the box colour, above the box (inside it at the top edge).
        left, top, right, bottom = pen.textbbox((0, 0), label)
        tw, th = right - left + 4, bottom - top + 4
        tx = min(max(x0, 0), max(drawn.width - tw, 0))
        ty = y0 - th if y0 - th >= 0 else max(y0, 0)
        pen.rectangle([tx, ty, tx + tw, ty + th], fill=c)
        text_colour = (0, 0, 0) if sum(c) > 380 else (255, 255, 255)
        pen.text((tx + 2 - left, ty + 2 - top), label, fill=text_colour)
    return drawn
