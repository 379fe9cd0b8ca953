"""Image files on disk: which names are images, the images of a folder, and an image file as 8-bit
RGB (no TensorFlow, so entry points and tools can list and read files before anything heavy is
imported)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

# What every folder reader accepts: the formats tf.io.decode_image and Pillow both decode.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def is_image_file(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def image_files(folder: str, recursive: bool = False) -> list[str]:
    """The image files of `folder` (and its sub-folders when `recursive`), as sorted paths
    relative to `folder`."""
    if not recursive:
        return sorted(f for f in os.listdir(folder) if is_image_file(f))
    return sorted(
        os.path.relpath(os.path.join(root, name), folder)
        for root, _, names in os.walk(folder)
        for name in names
        if is_image_file(name)
    )


# Pillow's modes of 16-bit and 32-bit greyscale (16-bit PNGs, TIFFs) and the value of their white.
_WIDE_GREY_WHITE = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I": 65535}


def read_rgb(path: str) -> Image.Image:
    """The image file at `path` as an 8-bit RGB PIL image. 16-bit greyscale is scaled from its
    full range, as tf.io.decode_png does for training (Pillow's `convert("RGB")` clips it at
    255: a 16-bit image turns white); float images from their maximum."""
    with Image.open(path) as image:
        image.load()
        if image.mode in _WIDE_GREY_WHITE or image.mode == "F":
            pixels = np.asarray(image, np.float64)
            white = _WIDE_GREY_WHITE.get(image.mode) or max(float(pixels.max()), 1e-12)
            return Image.fromarray(np.clip(pixels * (255.0 / white) + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
        return image.convert("RGB")
