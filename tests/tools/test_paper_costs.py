"""tools/paper_costs.py: docs/scaling.md's cost table is the committed results file's, and every
paper config is in that file (a new config without its row fails here); one config's FLOPs from
shapes against the total the committed row gives."""

import json
import os

import paper_costs  # (tools/ is on sys.path: tests/tools/conftest.py)
import pytest

from frozen_det.projects.paper_configs import PAPER_CONFIGS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = os.path.join(ROOT, "docs", "results", "paper_costs.json")


def test_the_scaling_page_quotes_the_committed_table():
    with open(RESULTS) as f:
        rows = json.load(f)["rows"]
    with open(os.path.join(ROOT, "docs", "scaling.md")) as f:
        assert paper_costs.table(rows) in f.read()
    assert [r["config"] for r in rows] == [spec for specs in PAPER_CONFIGS.values() for spec in specs]
    for r in rows:  # the columns follow from each other (to their rounding: 3 significant digits)
        total = r["train_gflops_per_example"] * 1e9 * r["batch"] * r["iterations"]
        assert total / 1e18 == pytest.approx(r["total_exaflops"], rel=5e-3)
        assert total / (paper_costs.TPU_V4_PEAK * 0.3) / 3600 == pytest.approx(r["tpu_v4_chip_hours"], rel=5e-3)


@pytest.mark.slow
def test_a_config_costs_what_its_committed_row_says():
    spec = "frozen_det/projects/dap/paper.py:classifier"
    gflops, _ = paper_costs.example_gflops(spec)
    with open(RESULTS) as f:
        (row,) = [r for r in json.load(f)["rows"] if r["config"] == spec]
    assert gflops == pytest.approx(row["train_gflops_per_example"], abs=0.05)
