"""One train step on 1 device and on 8 simulated CPU devices gives the same loss, parameters and
BatchNorm statistics (<= 1e-5 relative), for a fine-tuned and a frozen detector."""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def test_one_and_eight_devices_agree():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    out = subprocess.run([sys.executable, os.path.join(HERE, "sharded_step_check.py")], env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for strategy in ("finetune", "frozen"):
        r = result[strategy]
        assert r["num_devices"] == 8
        assert r["loss"] <= 1e-5, r
        assert r["params"] <= 1e-5, r
        assert r["batch_stats"] <= 1e-5, r
