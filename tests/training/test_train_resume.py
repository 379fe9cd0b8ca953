"""`python -m frozen_det.train` survives preemption: SIGTERM after a checkpoint saves and stops;
the same command resumes (model, optimizer, step, input position) and its loss curve matches
an uninterrupted run step for step. Also: bad config values fail at start, naming the field."""

import json
import os
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
    "override,field",
    [
        ("--config.model.backbone.type=vgg", "model.backbone.type"),
        ("--config.model.backbone.freeze=7", "model.backbone.freeze"),
        ("--config.data.canvas=120", "data.canvas"),
    ],
)
def test_bad_config_values_fail_at_start_naming_the_field(tmp_path, override, field):
    out = subprocess.run(command(tmp_path / "bad", override), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert field in out.stderr, out.stderr[-2000:]


def test_evaluate_and_predict_read_the_run(reference_run, tmp_path):
    overrides = ["--config.data.canvas=64"]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "frozen_det.evaluate",
            "--config",
            CONFIG,
            "--workdir",
            str(reference_run),
            *overrides,
            "--iou_thresholds=default",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["step"] == STEPS and 0.0 <= summary["AP50"] <= 1.0
    with open(os.path.join(reference_run, "eval", f"validation_step{STEPS}.json")) as f:
        assert set(json.load(f)) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "per_class_AP"}
    with open(os.path.join(reference_run, "eval", f"validation_step{STEPS}_ap_vs_iou.json")) as f:
        curve = json.load(f)
    assert curve["iou_thresholds"] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert abs(curve["coco_AP"][4] - summary["AP50"]) < 1e-9 and len(curve["voc_AP_11_point"]) == 9

    from PIL import Image

    image = tmp_path / "shapes.png"
    Image.new("RGB", (96, 80), (40, 60, 200)).save(image)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "frozen_det.predict",
            "--config",
            CONFIG,
            "--workdir",
            str(reference_run),
            "--output",
            str(tmp_path / "pred"),
            "--min_score=0.0",
            *overrides,
            str(image),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    with open(tmp_path / "pred" / "shapes.json") as f:
        detections = json.load(f)["detections"]
    for d in detections:  # boxes are in the original 96x80 image
        x0, y0, x1, y1 = d["box_xyxy"]
        assert 0 <= x0 <= x1 <= 96 and 0 <= y0 <= y1 <= 80
    assert Image.open(tmp_path / "pred" / "shapes.png").size == (96, 80)
