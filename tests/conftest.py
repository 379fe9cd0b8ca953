"""Test-wide setup: TensorFlow must never take an accelerator (DESIGN.md), and tests run on CPU.

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
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "frozen_det_test_jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

try:
    import torch  # noqa: F401
    import torchvision  # noqa: F401
except ImportError:
    pass

import tensorflow as tf  # noqa: E402

tf.config.set_visible_devices([], "GPU")
