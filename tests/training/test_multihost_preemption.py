"""Preemption on a pod: SIGTERM reaches one host only, yet every host saves and stops at the
same step (PreemptionFlag over JAX's preemption sync service), shown with two real JAX
processes (jax.distributed on localhost CPUs). A host acting on its own flag would enter the
collective checkpoint save alone and hang the job."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_sigterm_on_one_host_stops_every_host_at_the_same_step():
    port = str(_free_port())
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    hosts = [
        subprocess.Popen(
            [sys.executable, os.path.join(HERE, "preemption_worker.py"), str(i), port],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        ready = hosts[1].stdout.readline()
        assert ready and json.loads(ready)["ready"] == 2, hosts[1].stderr.read()[-2000:]
        time.sleep(1.0)
        hosts[1].send_signal(signal.SIGTERM)
        outputs = [h.communicate(timeout=120) for h in hosts]
    finally:
        for h in hosts:
            if h.poll() is None:
                h.kill()
    assert all(h.returncode == 0 for h in hosts), [err[-2000:] for _, err in outputs]
    stops = [_json_lines(out)[-1] for out, _ in outputs]
    assert stops[0]["stopped_at"] is not None and stops[0]["stopped_at"] == stops[1]["stopped_at"], stops
    assert stops[0]["stopped_at"] < 2000
