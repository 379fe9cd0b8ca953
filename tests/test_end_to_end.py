"""End to end on this CPU, as a new user runs it: `python -m frozen_det.quickstart` (what
./quickstart.sh runs) with the main job's config (configs/quickstart.py: Faster R-CNN on the
packaged ImageNet EfficientNet-Lite0, frozen, synthetic shapes), shortened to 100 steps at
128 x 128, trains with a progress bar and an ETA, reaches AP50 >= 0.5 on the validation split,
prints its summary and draws its predictions as PNGs, with no TensorFlow start-up notices on the
console. (The train, evaluate and predict commands alone: tests/training/test_train_resume.py,
tests/test_toy_task.py.)"""

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "quickstart.py")


@pytest.mark.slow
def test_the_main_job(tmp_path):
    command = [
        sys.executable,
        "-m",
        "frozen_det.quickstart",
        "--config",
        CONFIG,
        "--workdir",
        str(tmp_path),
        "--config.data.canvas=128",
        "--config.data.synthetic.image_size=128",
        "--config.train.total_steps=100",
        "--config.train.schedule.boundaries=(80,)",
        "--num_examples=2",
        "--min_score=0.3",
    ]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    console = out.stdout + out.stderr
    assert "oneDNN" not in console and "absl::InitializeLog" not in console
    lines = out.stdout.splitlines()
    assert any(line.startswith("[####") and "ETA" in line for line in lines)  # progress bar + ETA
    summary = json.loads(next(line for line in lines if line.startswith("{")))
    assert summary["step"] == 100 and summary["metric"] == "coco"
    assert summary["AP50"] >= 0.5, summary
    pngs = sorted(p for p in os.listdir(tmp_path / "predictions") if p.endswith(".png"))
    assert len(pngs) == 2
    image = Image.open(tmp_path / "predictions" / pngs[0])
    assert min(image.size) >= 384
    record = json.loads((tmp_path / "predictions" / pngs[0].replace(".png", ".json")).read_text())
    assert record["detections"]
    for det in record["detections"]:  # boxes inside the drawn image
        x0, y0, x1, y1 = det["box_xyxy"]
        assert -1 <= x0 < x1 <= image.width + 1 and -1 <= y0 < y1 <= image.height + 1
