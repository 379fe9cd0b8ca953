"""Image files on disk: which names are images, and the images of a folder (no TensorFlow, so
entry points and tools can list files before anything heavy is imported)."""

from __future__ import annotations

import os

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
