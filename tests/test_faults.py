"""Nothing silent at the entry points (issue 31): config and CLI mistakes print one line naming the
field, the value and the fix, with exit status 2 (`--verbosity=1`: the traceback), `--help`
exits 0, a mistyped workdir fails at once without creating it, `predict` never overwrites the
user's files, eval JSON is strict JSON, 16-bit images keep their range, long work shows
progress. Subprocesses only where the process boundary is what is tested."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from frozen_det import runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "tiny", "two_stage.py")


def entry_point(module, *args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", f"frozen_det.{module}", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def one_line_error(out, *fragments):
    """The process failed with status 2 and one stderr line that names every fragment."""
    assert out.returncode == 2, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_a_misspelled_config_field_is_one_line_naming_the_flag_and_the_suggestion(capsys):
    from absl import flags
    from ml_collections import config_flags

    argv = ["train", "--config", CONFIG, "--config.train.totl_steps=3"]
    flag_values = flags.FlagValues()  # the entry points' flags, parsed in this process
    config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values, lock_config=True, sys_argv=argv)
    with pytest.raises(SystemExit) as exit_:
        runtime.parse_flags(argv, flag_values)
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        "error: --config.train.totl_steps: unknown field 'totl_steps'. Did you mean \"total_steps\" "
        'instead of "totl_steps"?'
    ]


def test_a_missing_config_file_fails_at_once_and_help_exits_zero(tmp_path):
    missing = str(tmp_path / "nope.py")
    one_line_error(entry_point("train", "--config", missing, "--workdir", str(tmp_path / "run")), missing)
    traced = entry_point("train", "--config", missing, "--workdir", str(tmp_path / "run"), "--verbosity=1")
    assert traced.returncode != 0 and "Traceback (most recent call last)" in traced.stderr
    helped = entry_point("evaluate", "--help")
    assert helped.returncode == 0 and "--workdir" in helped.stdout + helped.stderr


def test_a_mistyped_workdir_fails_at_once_naming_close_runs_and_creates_nothing(tmp_path):
    (tmp_path / "bccd_frozen" / "checkpoints").mkdir(parents=True)
    typo = str(tmp_path / "bccd_frozn")
    for module, extra in (("evaluate", ()), ("predict", ("--output", str(tmp_path / "out"), "a.png"))):
        start = time.time()
        out = entry_point(module, "--config", CONFIG, "--workdir", typo, *extra, timeout=60)
        one_line_error(out, f"--workdir {typo}: no run there", str(tmp_path / "bccd_frozen"))
        assert time.time() - start < 20, "checked before the config file and TensorFlow are imported"
    assert sorted(os.listdir(tmp_path)) == ["bccd_frozen"]


def test_error_lines_unwrap_config_file_tracebacks_and_key_errors():
    in_config_file = ValueError(
        "Error whilst parsing config file:\n\nTraceback (most recent call last):\n  File 'x.py', line 3\n"
        "ValueError: config.train.foo: unknown field; known fields of config.train: ['batch_size']\n"
    )
    assert (
        runtime.error_line(in_config_file)
        == "config.train.foo: unknown field; known fields of config.train: ['batch_size']"
    )
    escaped = AttributeError(KeyError('\'totl_steps\'\nDid you mean "total_steps" instead of "totl_steps"?'))
    assert runtime.error_line(escaped) == '\'totl_steps\' Did you mean "total_steps" instead of "totl_steps"?'
    assert runtime.wants_traceback(["x", "--verbosity=1"]) and not runtime.wants_traceback(["x", "--verbosity", "0"])


@pytest.mark.parametrize("field,value", [("data.eval_batch_size", 0), ("data.eval_batch_size", -8)])
def test_batch_sizes_must_be_positive_before_anything_compiles(field, value):
    from configs.tiny import two_stage
    from frozen_det import config as config_lib

    config = two_stage.get_config()
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(ValueError, match=rf"config\.{field}={value}: must be positive"):
        config_lib.resolve(config)


def test_predict_outputs_are_keyed_per_input_and_never_replace_the_inputs(tmp_path):
    from frozen_det.predict import output_names, predict

    names = ["in/good.png", "in/good.jpg", "other/good.jpg", "in/cat.jpg", "in/cat"]
    keys = output_names(names)
    assert keys == ["good.png", "good.jpg", "good.jpg_2", "cat.jpg", "cat"]
    assert len(set(keys)) == len(keys)
    assert output_names(["a/x.jpg", "b/y.png"]) == ["x", "y"]  # the usual case keeps the stem

    image = tmp_path / "good.png"
    Image.new("RGB", (8, 8)).save(image)
    with pytest.raises(ValueError, match=r"--output .* is the folder of the input .*good.png"):
        predict(None, str(tmp_path / "no_run_needed"), [str(image)], str(tmp_path))  # refused before any model
    assert os.listdir(tmp_path) == ["good.png"]


def test_sixteen_bit_images_keep_their_range(tmp_path):
    from frozen_det.data.files import read_rgb

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    pixels = np.asarray(read_rgb(str(tmp_path / "ramp16.png")))
    assert pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8
    assert abs(pixels.mean() - 127.5) < 1.0 and pixels.min() == 0 and pixels.max() == 255  # not white


def test_eval_json_is_strict_json(tmp_path):
    from frozen_det.evaluation.runner import write_eval_json

    result = {"AP": float("nan"), "per_class_AP": {"cat": np.float32(0.5), "dog": float("nan")}, "n": np.int64(3)}
    path = write_eval_json(str(tmp_path), "validation", 7, result)

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    with open(path) as f:
        saved = json.loads(f.read(), parse_constant=refuse)
    assert saved["AP"] is None and saved["per_class_AP"] == {"cat": 0.5, "dog": None} and saved["n"] == 3


def test_long_passes_show_progress_with_an_eta(monkeypatch, capsys, tmp_path):
    from frozen_det.data.offline import canvases, fashion_mnist
    from frozen_det.evaluation.gather import gathered_outputs

    monkeypatch.setattr(runtime, "PROGRESS_DELAY_SECS", 0.0)

    class Pipeline:
        split, num_batches = "validation", 3

        def __iter__(self):
            return iter([{"x": np.ones((2, 1)), "example_valid": np.ones(2, bool)}] * 3)

    outputs = list(gathered_outputs(lambda v, b: {"y": b["x"]}, None, Pipeline(), ("x",)))
    assert len(outputs) == 3
    err = capsys.readouterr().err
    assert "evaluating validation" in err and "3/3" in err and "<" in err  # tqdm's "elapsed<remaining"

    if not fashion_mnist.available():
        pytest.skip("Fashion-MNIST (Debian package dataset-fashion-mnist) not installed")
    canvases.write_canvases(str(tmp_path / "c"), "voc", num_train=2, num_val=1, image_size=32)
    err = capsys.readouterr().err
    assert "canvases train" in err and "2/2" in err and "canvases val" in err


def test_canvases_refuse_an_empty_split(tmp_path, capsys):
    from frozen_det.data.offline import canvases

    with pytest.raises(SystemExit) as exit_:
        canvases.main(["--output", str(tmp_path / "c"), "--num_train", "0"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == "error: --num_train 0: a dataset needs at least one image per split"
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    "content,found",
    [
        ('[{"file_name": "a.jpg"}]', "found list"),
        ('{"annotations": []}', "found ['annotations']"),
        ("{oops", "not JSON"),
    ],
)
def test_pseudo_boxes_labels_that_are_not_coco_say_what_a_labels_file_holds(tmp_path, content, found):
    from frozen_det.localization.image_sources import list_images

    labels = tmp_path / "labels.json"
    labels.write_text(content)
    with pytest.raises(ValueError, match=r"--labels .*labels.json: .*'images' \(each with 'id', 'file_name'") as e:
        list_images(str(tmp_path), str(labels), ["cat"])
    assert found in str(e.value)


def test_ctrl_c_exits_130_with_one_line_and_user_errors_with_2(capsys):
    for error, status in ((KeyboardInterrupt("interrupted: saved step 12 in /r/checkpoints"), 130), (OSError("x"), 2)):
        with pytest.raises(SystemExit) as exit_, runtime.one_line_errors():
            raise error
        assert exit_.value.code == status
    assert capsys.readouterr().err.splitlines() == ["interrupted: saved step 12 in /r/checkpoints", "error: x"]
    with pytest.raises(KeyError), runtime.one_line_errors():  # a bug keeps its traceback
        raise KeyError("bug")


def test_the_console_shows_frozen_dets_info_and_only_warnings_of_other_libraries():
    import logging

    root, ours = logging.getLogger(), logging.getLogger("frozen_det")
    levels = root.level, ours.level
    try:
        runtime.configure_logging()
        assert logging.getLogger("frozen_det.training.loop").isEnabledFor(logging.INFO)
        assert not logging.getLogger("absl").isEnabledFor(logging.INFO)  # orbax logs through absl
        assert logging.getLogger("absl").isEnabledFor(logging.WARNING)
    finally:
        root.setLevel(levels[0])
        ours.setLevel(levels[1])


def test_compilations_show_progress(monkeypatch, capsys):
    import jax

    monkeypatch.setattr(runtime, "PROGRESS_DELAY_SECS", 0.0)
    with runtime.compile_progress("resources: compiling", total=2, min_secs=0.0) as bar:
        jax.jit(lambda x: x * 3 + 1).lower(np.ones(5)).compile()
        assert bar.n >= 1
    assert "resources: compiling" in capsys.readouterr().err
