"""`python -m frozen_det.train` survives preemption: SIGTERM after a checkpoint saves and stops;
the same command resumes (model, optimizer, step, input position) and its loss curve matches
an uninterrupted run step for step. Also: bad config values fail at start, naming the field."""

import importlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "tiny", "two_stage.py")
STEPS = 24


def command(workdir, *overrides):
    return [
        sys.executable,
        "-m",
        "frozen_det.train",
        "--config",
        CONFIG,
        "--workdir",
        str(workdir),
        f"--config.train.total_steps={STEPS}",
        "--config.train.log_every=1",
        "--config.train.checkpoint_every=4",
        "--config.train.eval_at_end=False",
        "--config.data.canvas=64",
        *overrides,
    ]


def tiny_config():
    """The config of `command` (configs/tiny/two_stage.py with its overrides), in-process."""
    config = importlib.import_module("configs.tiny.two_stage").get_config()
    config.train.update(total_steps=STEPS, log_every=1, checkpoint_every=4, eval_at_end=False)
    config.data.canvas = 64
    return config


def losses(workdir):
    curve = {}
    with open(os.path.join(workdir, "train_metrics.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            curve.setdefault(record["step"], record["total"])
    return curve


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    subprocess.run(command(workdir), cwd=ROOT, check=True, capture_output=True, timeout=900)
    return workdir


@pytest.mark.slow
def test_sigterm_then_resume_matches_an_uninterrupted_run(tmp_path, reference_run):
    reference = reference_run

    run = tmp_path / "preempted"
    process = subprocess.Popen(command(run), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 600
    while not (run / "checkpoints" / "4").is_dir():
        assert process.poll() is None, process.stdout.read().decode()[-3000:]
        assert time.time() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=300) == 0
    stopped_at = max(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    assert stopped_at < STEPS, "the run finished before the signal; the test needs a longer run"

    subprocess.run(command(run), cwd=ROOT, check=True, capture_output=True, timeout=900)
    expected, got = losses(reference), losses(run)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        assert got[step] == pytest.approx(expected[step], rel=1e-6), step


@pytest.mark.parametrize(
    "field,value",
    [("model.backbone.type", "vgg"), ("model.backbone.freeze", "7"), ("data.canvas", 120)],
)
def test_bad_config_values_fail_at_start_naming_the_field(tmp_path, field, value):
    """In-process (the command line's one-line errors are tests/test_faults.py's): the loop
    refuses the value before anything compiles, naming the field."""
    from frozen_det.training.loop import train_and_evaluate

    config = tiny_config()
    section, key = field.rsplit(".", 1)
    node = config
    for part in section.split("."):
        node = node[part]
    with node.ignore_type():
        node[key] = value
    with pytest.raises(ValueError, match=re.escape(field)):
        train_and_evaluate(config, str(tmp_path / "bad"))


@pytest.mark.slow
def test_evaluate_and_predict_read_the_run(reference_run, tmp_path):
    """The evaluate and predict APIs (what their commands run) on the preempted-and-resumed test's
    reference run; AP at IoU 0.1..0.9 written beside the COCO JSON."""
    from PIL import Image

    from frozen_det.evaluate import evaluate
    from frozen_det.predict import predict

    summary = evaluate(tiny_config(), str(reference_run), iou_thresholds=[0.1 * i for i in range(1, 10)])
    assert summary["step"] == STEPS and 0.0 <= summary["AP50"] <= 1.0
    with open(os.path.join(reference_run, "eval", f"validation_step{STEPS}.json")) as f:
        assert set(json.load(f)) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "per_class_AP"}
    with open(os.path.join(reference_run, "eval", f"validation_step{STEPS}_ap_vs_iou.json")) as f:
        curve = json.load(f)
    assert curve["iou_thresholds"] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    assert abs(curve["coco_AP"][4] - summary["AP50"]) < 1e-9 and len(curve["voc_AP_11_point"]) == 9

    image = tmp_path / "shapes.png"
    Image.new("RGB", (96, 80), (40, 60, 200)).save(image)
    predict(tiny_config(), str(reference_run), [str(image)], str(tmp_path / "pred"), min_score=0.0)
    with open(tmp_path / "pred" / "shapes.json") as f:
        detections = json.load(f)["detections"]
    for d in detections:  # boxes are in the original 96x80 image
        x0, y0, x1, y1 = d["box_xyxy"]
        assert 0 <= x0 <= x1 <= 96 and 0 <= y0 <= y1 <= 80
    assert Image.open(tmp_path / "pred" / "shapes.png").size == (96, 80)
