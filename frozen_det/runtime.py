"""Process set-up shared by the entry points: TensorFlow kept off accelerators and quiet.

TensorFlow only feeds the input pipeline (docs/architecture.md): it must never take a GPU or TPU
from JAX, and its C++ start-up notices (oneDNN, CPU feature guards, absl's pre-init warning)
are noise on a user's console. `quiet_tensorflow()` must run before TensorFlow is imported.
"""

from __future__ import annotations

import os


def quiet_tensorflow() -> None:
    """TensorFlow's C++ logging down to errors (unless the user chose a level)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def hide_accelerators_from_tensorflow() -> None:
    quiet_tensorflow()
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
