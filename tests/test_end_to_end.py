"""End to end on this CPU: `frozen_det.train` then `frozen_det.evaluate` on the synthetic
default, a small Faster R-CNN on the packaged ImageNet EfficientNet-Lite0 (frozen). 100 steps
reach AP50 ~0.8 (0.93 after 300; configs/tiny/lite0_frozen.py)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "tiny", "lite0_frozen.py")


def test_train_then_evaluate_reaches_ap50_half(tmp_path):
    common = ["--config", CONFIG, "--workdir", str(tmp_path)]
    subprocess.run([sys.executable, "-m", "frozen_det.train", *common, "--config.train.total_steps=100",
                    "--config.train.eval_every=0", "--config.train.eval_at_end=False",
                    "--config.train.schedule.boundaries=(80,)"],
                   cwd=ROOT, check=True, capture_output=True, timeout=900)
    out = subprocess.run([sys.executable, "-m", "frozen_det.evaluate", *common], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["step"] == 100
    assert summary["AP50"] >= 0.5, summary
