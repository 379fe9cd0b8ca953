"""Where a result came from: the commit (and whether the tree differed from it), the library
versions and the devices, recorded beside every study row so that a number on a study page can
be traced to the code and machine that made it."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from importlib import metadata

# The repository this package was imported from (a clone: the projects read its configs/).
REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _git(*args: str, cwd: str = REPOSITORY) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def commit(cwd: str = REPOSITORY) -> dict:
    """{"commit": HEAD's hash or None outside a clone, "dirty": whether tracked files differ from it}."""
    head = _git("rev-parse", "HEAD", cwd=cwd)
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=cwd) if head else None
    return {"commit": head, "dirty": bool(status)}


def is_ancestor(ancestor: str, of: str = "HEAD", cwd: str = REPOSITORY) -> bool:
    """Whether commit ``ancestor`` is in the history of ``of``."""
    try:
        done = subprocess.run(["git", "merge-base", "--is-ancestor", ancestor, of], cwd=cwd, capture_output=True)
    except OSError:
        return False
    return done.returncode == 0


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def provenance() -> dict:
    """The commit, library versions, devices and host of this process (JSON-ready)."""
    import jax

    devices = jax.devices()
    return {
        **commit(),
        "versions": {p: _version(p) for p in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow")},
        "python": platform.python_version(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "process_count": jax.process_count(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),  # other work on the machine slows a timed row
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
