"""The inspect entry point writes its PNGs and its summary."""

import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import synthetic_config
from PIL import Image

from frozen_det.data import show as inspect_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_inspect_run(synthetic_dir, tmp_path):
    import ml_collections

    config = ml_collections.ConfigDict(dict(data=synthetic_config(synthetic_dir, augment=dict(copy_paste=True))))
    summary = inspect_lib.run(config, 3, str(tmp_path))
    assert len(summary["written"]) == 3 and summary["examples"] == 24
    assert set(summary["images_per_class"]) == {"circle", "square", "triangle"}
    assert "examples_skipped" in summary["skipped"]
    im = np.asarray(Image.open(summary["written"][0]))
    assert im.shape == (128, 128, 3) and im.std() > 10


@pytest.mark.slow
def test_inspect_command(tmp_path):
    out = tmp_path / "png"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    cmd = [
        sys.executable,
        "-m",
        "frozen_det.data.show",
        "--config",
        os.path.join(ROOT, "configs", "data", "synthetic.py"),
        "--num",
        "2",
        "--output",
        str(out),
        f"--config.data.synthetic.data_dir={tmp_path / 'tfds'}",
        "--config.data.synthetic.num_train=8",
        "--config.data.synthetic.num_validation=2",
    ]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert '"examples": 8' in res.stdout and len(os.listdir(out)) == 2


def test_draw_example_with_a_sub_pixel_box():
    """A box under one pixel wide (an object cut to a sliver by the LSJ crop) is still drawn."""
    batch = dict(
        image=np.zeros((1, 32, 32, 3), np.float32),
        valid=np.array([[True]]),
        classes=np.array([[1]]),
        boxes=np.array([[[10.0, 10.0, 10.4, 20.0]]], np.float32),
        is_crowd=np.array([[False]]),
    )
    im = np.asarray(inspect_lib.draw_example(batch, 0, ["background", "thing"], [0, 0, 0], [1, 1, 1]))
    assert im[10:20, 10].any()
