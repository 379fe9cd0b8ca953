"""The Colab quick start (notebooks/quickstart.ipynb) runs headless on CPU in its smoke setting
(FROZEN_DET_NOTEBOOK_SMOKE=1: a few train steps at 64x64) and prints COCO metrics, prediction
figures and the freeze resource table."""

import json
import os
import sys

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "quickstart.ipynb")


def _text(cell) -> str:
    return "".join(out.get("text", "") for out in cell.get("outputs", []) if out["output_type"] == "stream")


@pytest.mark.slow
def test_quickstart_notebook_runs_in_smoke_setting(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
        "commit the notebook with outputs cleared"
    )
    # A kernel spec of this interpreter, not whatever "python3" resolves to on the machine. The
    # kernel inherits this process's environment (conftest: CPU only, the persistent XLA compile
    # cache) plus the smoke switch; TMPDIR puts the notebook's workdir under tmp_path.
    spec_dir = tmp_path / "kernels" / "frozen_det_test"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "frozen_det test",
                "language": "python",
                "env": {"FROZEN_DET_NOTEBOOK_SMOKE": "1", "TMPDIR": str(tmp_path)},
            }
        )
    )
    km = KernelManager(
        kernel_name="frozen_det_test", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    )
    NotebookClient(nb, km=km, timeout=900, resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}}).execute()

    code = [c for c in nb.cells if c.cell_type == "code"]
    printed = "\n".join(_text(c) for c in code)
    assert "already importable" in printed  # the install cell skipped pip
    assert "CPU device" in printed
    assert "step 4/4" in printed
    assert "AP50" in printed and "at step 4" in printed
    assert any("image/png" in out.get("data", {}) for c in code for out in c.outputs), "no prediction figure"
    table = _text(code[-1]).splitlines()
    assert [row.split()[0] for row in table] == ["strategy", "frozen", "fine-tune", "adapters"], table
    trainable = {row.split()[0]: float(row.split()[2].rstrip("M")) for row in table[1:]}
    assert trainable["frozen"] < trainable["adapters"] < trainable["fine-tune"], table
