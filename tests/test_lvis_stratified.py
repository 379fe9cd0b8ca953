"""tools/lvis_stratified.py on FAKE evaluation JSONs with known per-class APs (written here,
labelled as fake; no model was run): the CSV values, the Gaussian smoothing, the PNG and the
r/c/f table; then once end to end on a generated long-tailed dataset."""

import csv
import json
import math
import os
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.join(os.path.dirname(__file__), "..")
sys.path.insert(0, os.path.join(ROOT, "tools"))
try:
    import lvis_stratified as ls
finally:
    sys.path.pop(0)

FAKE = "FAKE evaluation written by tests/test_lvis_stratified.py: made-up numbers, no model was run"
COUNTS = {
    "a": dict(instances=1, images=1),
    "b": dict(instances=5, images=4),
    "c": dict(instances=50, images=30),
    "d": dict(instances=400, images=150),
    "e": dict(instances=1000, images=500),
    "not_evaluated": dict(instances=3, images=3),
}


def _fake_eval(path, per_class, summary, mask_per_class=None, step=100):
    result = dict(summary, note=FAKE, step=step, split="val", per_class_AP=per_class)
    if mask_per_class is not None:
        result.update({f"mask_{k}": v for k, v in summary.items()}, mask_per_class_AP=mask_per_class)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f)
    return str(path)


def _read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_smoothing_keeps_constants_and_ramps_steps_monotonically():
    rng = np.random.default_rng(0)
    x = np.sort(rng.uniform(1, 500, 40))
    grid = np.linspace(-100, 700, 400)
    np.testing.assert_allclose(ls.gaussian_smooth(x, np.full(40, 3.7), grid, 25.0), 3.7)
    steps = np.arange(1.0, 201.0)
    ramp = ls.gaussian_smooth(steps, (steps >= 100).astype(float), np.linspace(1, 200, 500), 10.0)
    assert np.all(np.diff(ramp) >= -1e-12)
    assert ramp[0] < 1e-3 and ramp[-1] > 1 - 1e-3
    assert ls.gaussian_smooth(steps, (steps >= 100).astype(float), [99.5], 10.0)[0] == pytest.approx(0.5)
    # far from every point the nearest one dominates (no 0 / 0)
    assert ls.gaussian_smooth([1.0, 2.0], [5.0, 7.0], [1e6], 1.0)[0] == 7.0
    with pytest.raises(ValueError, match="sigma"):
        ls.gaussian_smooth(x, x, x, 0.0)


def test_csv_table_and_png_from_fake_runs(tmp_path):
    counts_path = tmp_path / "counts.json"
    counts_path.write_text(json.dumps(COUNTS))
    base = dict(a=0.1, b=0.2, c=0.4, d=0.6, e=float("nan"))
    other = dict(a=0.3, b=0.3, c=0.4, d=0.55, e=float("nan"))
    _fake_eval(tmp_path / "base" / "eval" / "val_step50.json", dict(base, a=0.9), dict(AP=0.9))  # older
    _fake_eval(
        tmp_path / "base" / "eval" / "val_step100.json",
        base,
        dict(AP=0.4, APr=0.15, APc=0.4, APf=0.6),
        mask_per_class={k: v / 2 for k, v in base.items()},
    )
    other_json = _fake_eval(
        tmp_path / "other.json",
        other,
        dict(AP=0.42, APr=0.3, APc=-1.0, APf=0.6),
        mask_per_class={k: v / 2 for k, v in other.items()},
    )
    out = tmp_path / "out"
    assert (
        ls.main(
            [
                "--runs",
                f"base={tmp_path / 'base'},other={other_json}",
                "--counts",
                str(counts_path),
                "--sigma",
                "10",
                "--output",
                str(out),
            ]
        )
        == 0
    )

    rows = _read_csv(out / "per_class.csv")
    assert [r["class"] for r in rows] == ["a", "b", "c", "d", "e"]  # by training annotations
    assert [int(r["instances"]) for r in rows] == [1, 5, 50, 400, 1000]
    assert [r["frequency"] for r in rows] == ["r", "r", "c", "f", "f"]
    assert [r["AP_base"] for r in rows] == ["10.0000", "20.0000", "40.0000", "60.0000", ""]
    assert [r["delta_other"] for r in rows] == ["20.0000", "10.0000", "0.0000", "-5.0000", ""]
    assert [r["mask_delta_other"] for r in rows] == ["10.0000", "5.0000", "0.0000", "-2.5000", ""]
    xs, ds = np.array([1.0, 5.0, 50.0, 400.0]), np.array([20.0, 10.0, 0.0, -5.0])
    for r in rows[:4]:
        w = np.exp(-0.5 * ((float(r["instances"]) - xs) / 10) ** 2)
        assert float(r["smoothed_delta_other"]) == pytest.approx(w @ ds / w.sum(), abs=1e-4)
    assert float(rows[4]["smoothed_delta_other"]) == -5.0  # class e (no AP) still gets the curve's value

    table = (out / "groups.md").read_text()
    assert "| base | 40.0 | 15.0 | 40.0 | 60.0 |" in table
    assert "| other | 42.0 (+2.0) | 30.0 (+15.0) | n/a | 60.0 (+0.0) |" in table
    assert table.count("| other |") == 2 and "**mask**" in table
    with Image.open(out / "stratified.png") as im:
        im.verify()
        assert im.format == "PNG" and im.size[0] > 1000  # two panels: box and mask

    runs = {"base": ls.load_run(str(tmp_path / "base")), "other": ls.load_run(other_json)}
    rows, sigma = ls.per_class_rows(runs, ls.load_counts(str(counts_path)), log_x=True)
    assert sigma == pytest.approx(0.05 * 3)  # 5% of log10(1000 / 1) decades
    assert all(math.isfinite(r["smoothed_delta_other"]) for r in rows)
    ls.plot(rows, runs, str(tmp_path / "log.png"), sigma, log_x=True)
    with Image.open(tmp_path / "log.png") as im:
        im.verify()


def test_input_errors(tmp_path):
    with pytest.raises(ValueError, match="at least two runs"):
        ls.parse_runs("only=/x")
    with pytest.raises(ValueError, match="not name=PATH"):
        ls.parse_runs("a=/x,b")
    _fake_eval(tmp_path / "eval" / "val_step7.json", {}, {})
    _fake_eval(tmp_path / "eval" / "minival_step7.json", {}, {})
    with pytest.raises(ValueError, match="several splits at step 7"):
        ls.find_eval_json(str(tmp_path))
    runs = {"a": {"per_class_AP": {"a": 0.1, "zzz": 0.2}}, "b": {"per_class_AP": {"a": 0.1}}}
    with pytest.raises(ValueError, match=r"1 evaluated classes have no training counts \(e.g. \['zzz'\]\)"):
        ls.per_class_rows(runs, {"a": dict(instances=1, images=1, frequency="r")})


def test_end_to_end_on_a_generated_long_tail(tmp_path, capsys):
    from frozen_det.data.offline.long_tail import write_long_tailed_lvis

    data_dir = tmp_path / "long_tail"
    summary = write_long_tailed_lvis(
        str(data_dir), image_size=64, num_train=140, num_val=24, num_frequent=2, num_common=3, num_rare=5, seed=1
    )
    cats = summary["categories"]
    # FAKE per-class APs: the "frozen" run is 10 points better on rare classes, equal elsewhere.
    base = {c["name"]: 0.2 + 0.05 * (c["frequency"] == "f") for c in cats}
    frozen = {c["name"]: base[c["name"]] + 0.1 * (c["frequency"] == "r") for c in cats}
    base_json = _fake_eval(
        tmp_path / "finetune" / "eval" / "val_step10.json", base, dict(AP=0.22, APr=0.2, APc=0.2, APf=0.25)
    )
    frozen_json = _fake_eval(
        tmp_path / "frozen" / "eval" / "val_step10.json", frozen, dict(AP=0.27, APr=0.3, APc=0.2, APf=0.25)
    )
    out = tmp_path / "out"
    config = os.path.join(ROOT, "configs", "data", "long_tail.py")
    assert (
        ls.main(
            [
                "--runs",
                f"finetune={tmp_path / 'finetune'},frozen={tmp_path / 'frozen'}",
                "--data-config",
                config,
                "--data-path",
                str(data_dir),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert base_json in printed and frozen_json in printed
    assert "| frozen | 27.0 (+5.0) | 30.0 (+10.0) | 20.0 (+0.0) | 25.0 (+0.0) |" in printed

    counts = json.loads((out / "counts.json").read_text())
    assert counts == {
        c["name"]: dict(instances=c["train_instances"], images=c["train_images"], frequency=c["frequency"])
        for c in cats
    }
    rows = _read_csv(out / "per_class.csv")
    assert len(rows) == 10 and "mask_AP_finetune" not in rows[0]
    for r in rows:
        assert float(r["delta_frozen"]) == pytest.approx(10.0 if r["frequency"] == "r" else 0.0)
    smoothed = [float(r["smoothed_delta_frozen"]) for r in rows]
    assert smoothed[0] > 9 and smoothed[-1] < 1  # the gain sits at the rare end
    with Image.open(out / "stratified.png") as im:
        im.verify()
