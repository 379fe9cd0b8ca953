"""End to end on this CPU, the main job's config (configs/quickstart.py: Faster R-CNN on the
packaged ImageNet EfficientNet-Lite0, frozen, synthetic shapes), shortened to 100 steps at
128 x 128: `frozen_det.train`, `frozen_det.evaluate` reaches AP50 >= 0.5, and
`frozen_det.quickstart` (what ./quickstart.sh runs) on the finished run re-evaluates, prints
its summary and draws its predictions as PNGs, with no TensorFlow start-up notices on the
console."""

import json
import os
import subprocess
import sys

from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "quickstart.py")
STEPS = ["--config.train.total_steps=100", "--config.train.schedule.boundaries=(80,)"]
SMALL = ["--config.data.canvas=128", "--config.data.synthetic.image_size=128"]
CONSOLE = {}


def _run(module, *args):
    out = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    CONSOLE[module] = out.stdout + out.stderr
    return out.stdout.splitlines()


def test_train_evaluate_and_the_main_job(tmp_path):
    common = ["--config", CONFIG, "--workdir", str(tmp_path), *SMALL]
    lines = _run("frozen_det.train", *common, *STEPS, "--config.train.eval_at_end=False")
    assert any(line.startswith("[####") and "ETA" in line for line in lines)  # progress bar + ETA
    summary = json.loads(_run("frozen_det.evaluate", *common)[-1])
    assert summary["step"] == 100 and summary["metric"] == "coco"
    assert summary["AP50"] >= 0.5, summary

    lines = _run("frozen_det.quickstart", *common, *STEPS, "--num_examples=2", "--min_score=0.3")
    assert (
        "oneDNN" not in CONSOLE["frozen_det.quickstart"]
        and "absl::InitializeLog" not in CONSOLE["frozen_det.quickstart"]
    )
    again = json.loads(next(line for line in lines if line.startswith("{")))
    assert again["step"] == 100 and abs(again["AP50"] - summary["AP50"]) < 1e-3  # only re-evaluated
    pngs = sorted(p for p in os.listdir(tmp_path / "predictions") if p.endswith(".png"))
    assert len(pngs) == 2
    image = Image.open(tmp_path / "predictions" / pngs[0])
    assert min(image.size) >= 384
    record = json.loads((tmp_path / "predictions" / pngs[0].replace(".png", ".json")).read_text())
    assert record["detections"]
    for det in record["detections"]:  # boxes inside the drawn image
        x0, y0, x1, y1 = det["box_xyxy"]
        assert -1 <= x0 < x1 <= image.width + 1 and -1 <= y0 < y1 <= image.height + 1
