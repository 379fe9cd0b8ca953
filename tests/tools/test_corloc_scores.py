"""tools/corloc_scores.py: the DAP page's CorLoc table is the committed results file's, made at a
commit of main from a clean tree, with every rule of the tool and every column present."""

import json
import os

import corloc_scores  # (tools/ is on sys.path: tests/tools/conftest.py)

from frozen_det.projects.provenance import is_ancestor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = os.path.join(ROOT, "docs", "results", "corloc_scores.json")


def test_the_dap_page_quotes_the_committed_table():
    with open(RESULTS) as f:
        results = json.load(f)
    with open(os.path.join(ROOT, "frozen_det", "projects", "dap", "README.md")) as f:
        assert corloc_scores.table(results) in f.read()
    assert not results["dirty"] and is_ancestor(results["commit"])
    for entry in results["sets"].values():
        assert list(entry["rules"]) == [f"{variant}/{score}" for variant, score in corloc_scores.RULES]
        for quality in entry["rules"].values():  # the top box hits only where some box does
            assert 0.0 <= quality["corloc"] <= quality["corloc_any_box"] <= 1.0
            assert quality["corloc_largest_box"] <= quality["corloc_any_box"]
