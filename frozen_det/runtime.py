"""Process set-up shared by the entry points: TensorFlow kept off accelerators and quiet, one-line
errors, log levels, progress bars.

TensorFlow only feeds the input pipeline (docs/architecture.md): it must never take a GPU or TPU
from JAX, and its C++ start-up notices (oneDNN, CPU feature guards, absl's pre-init warning)
are noise on a user's console. `quiet_tensorflow()` must run before TensorFlow is imported.

Every `python -m frozen_det.X` runs the same way (`prepare_entry_point`, then `run_main(main)`):

* a mistake of the user (a config file that is not there, an unknown or bad config field, a bad
  flag, a workdir that holds no run, bad data) prints one line, `error: <what, the value, the
  fix>`, and exits with status 2, before the slow imports where it can; `--verbosity=1` shows
  the traceback instead; `--help` exits 0;
* the console shows frozen_det's own INFO lines and other libraries' warnings (orbax's INFO
  chatter, ~80 lines per run, stays off): `--verbosity=0` brings every library's INFO back;
* Ctrl-C prints one line and exits 130 (the train loop first saves the step it is on).
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import pickle
import re
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


def flag_values(argv: list[str], name: str) -> list[str]:
    """The values of `--name=VALUE` and `--name VALUE` in `argv` (read before absl parses it)."""
    values = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
    return values + [b for a, b in zip(argv, argv[1:]) if a == f"--{name}"]


def asks_for_help(argv: list[str]) -> bool:
    """Whether `argv` holds one of absl's help flags."""
    return any(a.split("=", 1)[0] in ("--help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml") for a in argv)


def config_packages_on_path(argv: list[str]) -> None:
    """Config files import each other as modules of the repository's `configs` package
    (`from configs.data import bccd`): the folder holding the `configs/` of every `--config FILE`
    in `argv` goes on `sys.path`, so an entry point finds them from any working directory."""
    for value in flag_values(argv, "config"):
        folder = os.path.dirname(os.path.abspath(value.split(":", 1)[0]))
        while os.path.isfile(os.path.join(folder, "__init__.py")):
            if os.path.basename(folder) == "configs":
                root = os.path.dirname(folder)
                if root not in sys.path:
                    sys.path.insert(0, root)
                break
            folder = os.path.dirname(folder)


def run_workdir(directory: str) -> str:
    """A run's workdir from its workdir or its `checkpoints/` folder."""
    directory = os.path.abspath(directory.rstrip("/"))
    return os.path.dirname(directory) if os.path.basename(directory) == "checkpoints" else directory


def check_run_dir(directory: str) -> str:
    """The workdir of the run at `directory` (its workdir or `checkpoints/` folder); a
    FileNotFoundError naming it, and the similarly named runs beside it, when it holds no run.
    Creates nothing: a mistyped path must not leave an empty run behind."""
    workdir = run_workdir(directory)
    if os.path.isdir(os.path.join(workdir, "checkpoints")):
        return workdir
    parent = os.path.dirname(workdir)
    runs = [d for d in _listing(parent) if os.path.isdir(os.path.join(parent, d, "checkpoints"))]
    close = difflib.get_close_matches(os.path.basename(workdir), runs, n=3)
    hint = f"did you mean {' or '.join(os.path.join(parent, c) for c in close)}? " if close else ""
    raise FileNotFoundError(
        f"--workdir {directory}: no run there (no {os.path.join(workdir, 'checkpoints')}); {hint}"
        f"train one first with `python -m frozen_det.train --workdir {directory} ...`"
    )


def _listing(folder: str) -> list[str]:
    return os.listdir(folder) if os.path.isdir(folder) else []


def prepare_entry_point(argv: list[str], runs: tuple[str, ...] = ()) -> None:
    """What every `python -m frozen_det.X` does first, before its config file is read: the
    `--config` files exist and the flags named in `runs` (e.g. "workdir") name runs (else one
    line and exit 2, in a second rather than after the imports), TensorFlow quiet (its import
    notices) and the config files' `configs` package importable."""
    with one_line_errors(traceback=wants_traceback(argv)):
        for value in flag_values(argv, "config"):
            path = value.split(":", 1)[0]
            if not os.path.isfile(path):
                raise FileNotFoundError(f"--config {value}: no such file ({os.path.abspath(path)})")
        for name in runs:
            for value in flag_values(argv, name):
                check_run_dir(value)
    if not asks_for_help(argv):  # help alone needs no TensorFlow
        quiet_tensorflow()
    config_packages_on_path(argv)


# ---------------------------------------------------------------------------- one-line errors

# What a user's mistake raises: bad values and data (ValueError, frozen_det.data.source.DataError),
# files and folders (OSError), a file that is not the weights it should be (UnpicklingError), a
# diverged run (FloatingPointError). Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError, pickle.UnpicklingError, ArithmeticError)
USAGE_EXIT = 2  # as argparse and absl's flag errors
INTERRUPT_EXIT = 130  # 128 + SIGINT, the shell's convention


def error_line(error: BaseException) -> str:
    """The message of `error` on one line. A message that carries a traceback as text (ml_collections
    passes errors raised in a config file on that way) gives its last line, the error itself;
    a KeyError's message is its text, not the text's repr."""
    while error.args and isinstance(error.args[0], BaseException):
        error = error.args[0]
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    text = str(text) or type(error).__name__
    if "Traceback (most recent call last)" in text:
        text = re.sub(r"^[\w.]*(Error|Exception): ", "", text.strip().splitlines()[-1])
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def wants_traceback(argv: list[str]) -> bool:
    """Whether `argv` asks for tracebacks (`--verbosity=1` or more, `-v 1`), read before or
    without absl's parsing."""
    values = flag_values(argv, "verbosity") + flag_values(argv, "v") + [a[3:] for a in argv if a.startswith("-v=")]
    return any(v.lstrip("-").isdigit() and int(v) >= 1 for v in values)


def fail(message: str, status: int = USAGE_EXIT) -> None:
    """Exits with `status` after one line on stderr: `error: <message>`."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


@contextlib.contextmanager
def one_line_errors(traceback: bool = False):
    """Inside, a user's error (`USER_ERRORS`) exits with one line on stderr (status 2; 1 for a
    diverged run) and Ctrl-C with one line and status 130, unless `traceback`."""
    try:
        yield
    except KeyboardInterrupt as e:
        if traceback:
            raise
        print(error_line(e) if e.args else "interrupted", file=sys.stderr, flush=True)
        sys.exit(INTERRUPT_EXIT)
    except USER_ERRORS as e:
        if traceback:
            raise
        fail(error_line(e), 1 if isinstance(e, ArithmeticError) else USAGE_EXIT)


def parse_flags(argv: list[str], flag_values=None) -> list[str]:
    """absl's flag parsing (of `flag_values`, default absl's FLAGS) with one-line errors: a bad flag
    value, a config file that fails, an override of a field that does not exist (named with its
    flag and ml_collections' suggestion); `--help` and its variants exit 0."""
    from absl import flags

    try:
        return (flag_values or flags.FLAGS)(argv)
    except SystemExit as e:
        sys.exit(0 if asks_for_help(argv) else e.code)
    except (KeyError, AttributeError) as e:  # ml_collections: `--config.a.b=v` of an unknown field
        if wants_traceback(argv):
            raise
        message = error_line(e)
        key = message.split(" ", 1)[0].strip("'\"")
        flag = next((a.split("=", 1)[0] for a in argv if key in a.split("=", 1)[0].split(".")[1:]), "--config")
        fail(f"{flag}: unknown field {key!r}. {message.split(' ', 1)[1] if ' ' in message else ''}".strip())
    except (flags.Error, *USER_ERRORS) as e:
        if wants_traceback(argv):
            raise
        fail(error_line(e))


def configure_logging(package_level: int = logging.INFO) -> None:
    """Log levels of an entry point (module docstring) unless `--verbosity` was given: Python's
    root logger (every library, orbax's INFO lines included) at WARNING, frozen_det's at
    `package_level`."""
    from absl import flags

    if not flags.FLAGS["verbosity"].present:
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger("frozen_det").setLevel(package_level)


def run_main(main, package_level: int = logging.INFO) -> None:
    """absl's `app.run(main)` the way every entry point runs (module docstring)."""
    from absl import app, flags

    def guarded(argv):
        configure_logging(package_level)
        with one_line_errors(traceback=flags.FLAGS.verbosity >= 1):
            try:
                return main(argv)
            except app.UsageError as e:
                raise ValueError(str(e)) from e

    app.run(guarded, flags_parser=parse_flags)


PROGRESS_DELAY_SECS = 2.0


def progress(iterable=None, desc: str = "", total: int | None = None, unit: str = "it", disable: bool = False):
    """A progress bar with a rate and an ETA on stderr (tqdm) for work that may take more than a
    few seconds; it appears only after `PROGRESS_DELAY_SECS`, so quick passes print nothing."""
    from tqdm import tqdm

    return tqdm(
        iterable,
        desc=desc,
        total=total,
        unit=unit,
        delay=PROGRESS_DELAY_SECS,
        mininterval=PROGRESS_DELAY_SECS,
        disable=disable,
        file=sys.stderr,
    )


@contextlib.contextmanager
def compile_progress(desc: str, total: int | None = None, min_secs: float = 0.5):
    """A progress bar (`progress`) over the XLA compilations inside that take `min_secs` or more
    (the programs measured, not the small helpers jax compiles on the way), for work that is mostly
    compiling; `total`: how many such programs to expect, for the ETA."""
    import jax

    bar = progress(desc=desc, total=total, unit="program")

    def compiled(event: str, seconds: float, **kwargs) -> None:
        if event == "/jax/core/compile/backend_compile_duration" and seconds >= min_secs:
            bar.update()

    jax.monitoring.register_event_duration_secs_listener(compiled)
    try:
        yield bar
    finally:
        jax.monitoring.unregister_event_duration_listener(compiled)
        bar.close()
