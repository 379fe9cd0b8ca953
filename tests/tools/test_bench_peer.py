"""tools/bench_peer.py (our Faster R-CNN vs torchvision's): the contender plan, the table, and
one tiny real run (64x64, batch 1, few proposals, frozen mode only: one compile)."""

import json
import math

import pytest

pytest.importorskip("torch")
pytest.importorskip("torchvision")

import bench_peer  # noqa: E402  (tools/ is on sys.path: tests/tools/conftest.py)


def test_plan_runs_extra_conv_impls_in_fine_tune_only():
    keys = bench_peer.plan(["frozen", "fine-tune"], ["xla", "fast"], [2, 1])
    assert list(keys) == [("torch-2t", "frozen"), ("torch-1t", "frozen"), ("torch-2t", "fine-tune"),
                          ("torch-1t", "fine-tune"), ("ours-xla", "frozen"), ("ours-xla", "fine-tune"),
                          ("ours-fast", "fine-tune")]
    assert keys[("torch-1t", "frozen")] == 1 and keys[("ours-fast", "fine-tune")] == "fast"
    with pytest.raises(SystemExit, match="unknown mode"):
        bench_peer.plan(["frozen", "finetune"], ["xla"], [1])


def test_table_has_a_row_per_mode_impl_and_torch_setting():
    keys = bench_peer.plan(list(bench_peer.MODES), ["xla", "fast"], [2, 1])
    times = {k: [1.0 + i, 2.0 + i] for i, k in enumerate(keys)}
    ours = [k for k in keys if k[0].startswith("ours")]
    result = {"modes": list(bench_peer.MODES), "torch": ["torch-2t", "torch-1t"], "ours": ["ours-xla", "ours-fast"],
              "median_s": {k: sum(v) / 2 for k, v in times.items()}, "best_s": {k: min(v) for k, v in times.items()},
              "cpu_median_s": {k: 1.0 for k in keys}, "xla": {k: {"gflops": 10.0, "temp_mb": 5.0} for k in ours},
              "torch_gflops": {k: 9.0 for k in keys if k not in ours}, "first_loss": {k: 1.0 for k in keys}}
    args = bench_peer.argparse.Namespace(size=64, batch=1, pre_nms=50, post_nms=20, rois=16, repeats=2)
    rows = [line for line in bench_peer.markdown(result, args).splitlines() if line.startswith("| ")]
    assert [tuple(r.split(" | ")[:3]) for r in rows[1:]] == [
        ("| frozen", "ours-xla", "torch-2t"), ("| frozen", "ours-xla", "torch-1t"),
        ("| fine-tune", "ours-xla", "torch-2t"), ("| fine-tune", "ours-xla", "torch-1t"),
        ("| fine-tune", "ours-fast", "torch-2t"), ("| fine-tune", "ours-fast", "torch-1t")]
    # ours-xla frozen: median 5.5 s (index 4) vs torch-2t frozen 1.5 s.
    assert rows[1].split(" | ")[3:6] == ["5.500", "1.500", "3.67"]


@pytest.mark.slow
def test_tiny_run_measures_both_sides(tmp_path):
    out_path = tmp_path / "bench.json"
    out = bench_peer.main(["--size", "64", "--batch", "1", "--pre-nms", "50", "--post-nms", "20", "--rois", "16",
                           "--max-instances", "8", "--repeats", "1", "--modes", "frozen", "--conv-impl", "xla",
                           "--torch-threads", "1", "--json", str(out_path)])
    saved = json.loads(out_path.read_text())
    assert saved["median_s"] == out["median_s"]
    assert set(saved["median_s"]) == {"torch-1t/frozen", "ours-xla/frozen"}
    assert all(t > 0 for t in saved["median_s"].values()) and all(t > 0 for t in saved["best_s"].values())
    assert saved["xla"]["ours-xla/frozen"]["gflops"] > 0 and saved["xla"]["ours-xla/frozen"]["temp_mb"] > 0
    assert saved["torch_gflops"]["torch-1t/frozen"] > 0
    assert all(math.isfinite(v) for v in saved["first_loss"].values())
    assert len(saved["load_average_at_start"]) == len(saved["load_average_at_end"]) == 3
    assert saved["torch_settings"]["box_batch_size_per_image"] == 16 == saved["our_settings"]["roi"]["num_samples"]
    rows = [line for line in saved["table"].splitlines() if line.startswith("| frozen")]
    assert len(rows) == 1 and rows[0].startswith("| frozen | ours-xla | torch-1t |")
