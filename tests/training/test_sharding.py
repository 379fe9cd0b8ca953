"""The same code on 1 device and on 8 simulated CPU devices: one train step gives the same loss,
parameters and BatchNorm statistics (<= 1e-5 relative) for a partly frozen detector (frozen and
trained parts in one program);
evaluation runs sharded on 8 devices and scores like one device; an eval batch that does not
split over the devices stops before anything compiles, naming the field."""

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.slow
def test_one_and_eight_devices_agree():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "sharded_step_check.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    r = result["freeze2"]
    assert r["num_devices"] == 8
    assert r["loss"] <= 1e-5, r
    assert r["params"] <= 1e-5, r
    assert r["batch_stats"] <= 1e-5, r
    one, eight = r["eval"]
    assert one["num_images"] == eight["num_images"] == 12
    assert abs(one["AP"] - eight["AP"]) <= 1e-3 and abs(one["AP50"] - eight["AP50"]) <= 1e-3, (one, eight)
    message, seconds = result["bad_eval_batch"]
    assert "config.data.eval_batch_size=3" in message and "8 devices" in message, message
    assert seconds < 5, seconds  # nothing compiled
