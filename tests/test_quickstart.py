"""The main job (`python -m frozen_det.quickstart`, what ./quickstart.sh runs) on a short
schedule: it trains, prints the evaluation summary and ETA progress lines, and draws its
predictions as PNGs on eval images; the config reads its classes from a VOC folder."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BCCD = os.path.normpath(os.path.join(ROOT, "..", "shared", "datasets", "bccd"))


def test_main_job_trains_evaluates_and_draws(tmp_path):
    out = subprocess.run([sys.executable, "-m", "frozen_det.quickstart", "--workdir", str(tmp_path),
                          "--config.train.total_steps=20", "--config.train.log_every=10",
                          "--config.train.schedule.boundaries=(15,)", "--num_examples=2", "--min_score=0.0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert any(line.startswith("[####") and "ETA" in line for line in lines)
    summary = json.loads(next(line for line in lines if line.startswith("{")))
    assert summary["step"] == 20 and 0.0 <= summary["AP50"] <= 1.0 and summary["metric"] == "coco"
    pngs = sorted(p for p in os.listdir(tmp_path / "predictions") if p.endswith(".png"))
    assert len(pngs) == 2
    image = Image.open(tmp_path / "predictions" / pngs[0])
    assert min(image.size) >= 384
    record = json.loads((tmp_path / "predictions" / pngs[0].replace(".png", ".json")).read_text())
    for det in record["detections"]:  # boxes inside the drawn image
        x0, y0, x1, y1 = det["box_xyxy"]
        assert -1 <= x0 < x1 <= image.width + 1 and -1 <= y0 < y1 <= image.height + 1


@pytest.mark.skipif(not os.path.isdir(BCCD), reason=f"BCCD not found at {BCCD}")
def test_quickstart_config_reads_classes_from_the_data():
    spec = importlib.util.spec_from_file_location("quickstart_config", os.path.join(ROOT, "configs", "quickstart.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.get_config().model.num_classes == 4  # synthetic: 3 shapes + background
    config = module.get_config(f"voc={BCCD},canvas=256")
    assert config.model.num_classes == 4 and config.data.source == "voc_folder" and config.data.canvas == 256
    assert module.get_config("tfds=lvis").model.detections.max_detections == 300
    with pytest.raises(ValueError, match="voc=DIR"):
        module.get_config("bogus")
