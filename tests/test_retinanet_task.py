"""RetinaNet as a task (`model.type="retinanet"`, frozen_det.tasks.retinanet): the tiny config
trains a few steps through `python -m frozen_det.train` at a 64x64 canvas (P3-P6: the canvas
is a multiple of 2^max_level) with the backbone frozen, and the evaluation at the end writes
COCO metrics through the same `task.evaluate` as `python -m frozen_det.evaluate`."""

import json
import math
import os
import subprocess
import sys

import pytest

from frozen_det.tasks import TASKS, task_class

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 4


def test_retinanet_is_a_registered_detection_task():
    cls = task_class("retinanet")
    assert TASKS["retinanet"] == "frozen_det.tasks.retinanet:RetinaNetTask"
    assert cls.name == "retinanet" and cls.data.__name__ == "frozen_det.data.detection"
    assert cls.evaluate_options == task_class("two_stage").evaluate_options


@pytest.mark.slow
def test_tiny_retinanet_trains_through_the_train_command_and_writes_coco_metrics(tmp_path):
    command = [
        sys.executable,
        "-m",
        "frozen_det.train",
        "--config=configs/tiny/retinanet.py:frozen",
        f"--workdir={tmp_path}",
        "--config.data.canvas=64",
        "--config.model.neck.max_level=6",
        "--config.model.backbone.width=0.25",
        f"--config.train.total_steps={STEPS}",
        "--config.train.schedule.boundaries=(3,)",
        "--config.train.log_every=2",
    ]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]

    lines = (tmp_path / "train_metrics.jsonl").read_text().splitlines()
    metrics = [json.loads(line) for line in lines]
    assert [m["step"] for m in metrics] == [2, 4]
    assert all(math.isfinite(m[k]) for m in metrics for k in ("focal", "box", "total", "positive_anchors"))

    result = json.loads((tmp_path / "eval" / f"validation_step{STEPS}.json").read_text())
    assert result["metric"] == "coco"
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert 0.0 <= result[key] <= 1.0 or result[key] == -1.0, (key, result[key])
    assert result["num_images"] == 64  # the synthetic validation split, every image scored
