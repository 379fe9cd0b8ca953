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


def config_packages_on_path(argv: list[str]) -> None:
    """Config files import each other as modules of the repository's `configs` package
    (`from configs.data import bccd`): the folder holding the `configs/` of every `--config FILE`
    in `argv` goes on `sys.path`, so an entry point finds them from any working directory."""
    values = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    values += [b for a, b in zip(argv, argv[1:]) if a == "--config"]
    for value in values:
        folder = os.path.dirname(os.path.abspath(value.split(":", 1)[0]))
        while os.path.isfile(os.path.join(folder, "__init__.py")):
            if os.path.basename(folder) == "configs":
                root = os.path.dirname(folder)
                if root not in sys.path:
                    sys.path.insert(0, root)
                break
            folder = os.path.dirname(folder)


def prepare_entry_point(argv: list[str]) -> None:
    """What every `python -m frozen_det.X` does first, before its config file is read: TensorFlow
    quiet (its import notices) and the config files' `configs` package importable."""
    quiet_tensorflow()
    config_packages_on_path(argv)
