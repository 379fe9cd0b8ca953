"""Process set-up shared by the entry points: TensorFlow kept off accelerators and quiet.

TensorFlow only feeds the input pipeline (docs/architecture.md): it must never take a GPU or TPU
from JAX, and its C++ start-up notices (oneDNN, CPU feature guards, absl's pre-init warning)
are noise on a user's console. `quiet_tensorflow()` must run before TensorFlow is imported.
"""

from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def _stderr_silenced():
    """File descriptor 2 to /dev/null (C++ code writes there directly, past sys.stderr)."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_tensorflow() -> None:
    """TensorFlow's C++ logging down to errors (unless the user chose a level), and its import
    notices (oneDNN, printed before any log level applies) dropped. An import error still
    raises, with its message, once stderr is back."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules:
        with _stderr_silenced():
            import tensorflow  # noqa: F401


def hide_accelerators_from_tensorflow() -> None:
    quiet_tensorflow()
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
