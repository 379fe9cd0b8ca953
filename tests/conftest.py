"""Test-wide setup: TensorFlow must never take an accelerator (docs/architecture.md), and tests run on CPU.

Import order matters: importing torchvision *after* TensorFlow segfaults in this stack
(tensorflow-cpu 2.21 + torch 2.14.1 / torchvision 0.29.1), while the reverse order works. The
reference libraries are therefore imported here first, when installed.
"""

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# XLA compilation dominates test time on CPU. A persistent compilation cache (inherited by the
# subprocesses that run the entry points) lets tests that build the same program share it.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "frozen_det_test_jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# JAX's partitionable threefry (its default) unrolls every random draw of a model's initialisation
# into code that XLA:CPU compiles slowly: a ResNet-18's init compiles ~2.5x faster without it. The
# tests assert properties, not particular random numbers; subprocesses inherit the setting.
os.environ.setdefault("JAX_THREEFRY_PARTITIONABLE", "0")

try:
    import torch  # noqa: F401
    import torchvision  # noqa: F401
except ImportError:
    pass

import tensorflow as tf  # noqa: E402

tf.config.set_visible_devices([], "GPU")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# BCCD (https://github.com/Shenggan/BCCD_Dataset) for the BCCD accuracy tests: BCCD_DIR, else a
# copy next to this repository's checkout on the project's machines; those tests skip without it.
_NEIGHBOUR_BCCD = os.path.normpath(os.path.join(ROOT, "..", "shared", "datasets", "bccd"))
if not os.environ.get("BCCD_DIR") and os.path.isdir(_NEIGHBOUR_BCCD):
    os.environ["BCCD_DIR"] = _NEIGHBOUR_BCCD
BCCD_DIR = os.environ.get("BCCD_DIR", "")

VOC_CLASSES = ("bird", "cat", "dog")


def write_voc_folder(root, num_trainval: int = 24, num_test: int = 8, seed: int = 0) -> str:
    """A small Pascal-VOC folder (Annotations/, JPEGImages/, ImageSets/Main/{trainval,test}.txt):
    128x96 JPEGs with 1-4 filled rectangles of the classes bird / cat / dog (class frequencies
    uneven: bird rare), plus the oddities real folders have: a `difficult` object, an object of
    an unknown class ("person", image 3) and a degenerate box (image 5)."""
    rng = np.random.default_rng(seed)
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    stems = [f"image_{i:04d}" for i in range(1, num_trainval + num_test + 1)]
    colours = {"bird": (220, 40, 40), "cat": (40, 200, 40), "dog": (40, 60, 220), "person": (200, 200, 0)}
    for i, stem in enumerate(stems, start=1):
        pixels = np.full((96, 128, 3), 110, np.uint8) + rng.integers(0, 20, (96, 128, 3), dtype=np.uint8)
        objects = []
        for k in range(int(rng.integers(1, 5))):
            name = rng.choice(VOC_CLASSES, p=(0.1, 0.45, 0.45))
            name = "person" if (i == 3 and k == 0) else str(name)
            w, h = rng.integers(16, 48, 2)
            x0, y0 = int(rng.integers(0, 128 - w)), int(rng.integers(0, 96 - h))
            pixels[y0 : y0 + h, x0 : x0 + w] = colours[name]
            box = (x0, y0, x0 + int(w), y0 + int(h)) if not (i == 5 and k == 0) else (x0, y0, x0, y0 + 10)
            objects.append((name, box, int(i == 2 and k == 0)))
        Image.fromarray(pixels).save(os.path.join(root, "JPEGImages", f"{stem}.jpg"), quality=95)
        xml = "".join(
            f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
            f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
            for n, b, d in objects
        )
        with open(os.path.join(root, "Annotations", f"{stem}.xml"), "w") as f:
            f.write(
                f"<annotation><filename>{stem}.jpg</filename><size><width>128</width><height>96</height>"
                f"<depth>3</depth></size>{xml}</annotation>"
            )
    for split, names in (("trainval", stems[:num_trainval]), ("test", stems[num_trainval:])):
        with open(os.path.join(root, "ImageSets", "Main", f"{split}.txt"), "w") as f:
            f.write("\n".join(names) + "\n")
    return str(root)


@pytest.fixture(scope="session")
def voc_folder(tmp_path_factory) -> str:
    """One small generated Pascal-VOC folder shared by the tests (see write_voc_folder)."""
    return write_voc_folder(tmp_path_factory.mktemp("voc"))
