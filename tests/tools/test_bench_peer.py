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
    assert list(keys) == [
        ("torch-2t", "frozen"),
        ("torch-1t", "frozen"),
        ("torch-2t", "fine-tune"),
        ("torch-1t", "fine-tune"),
        ("ours-xla", "frozen"),
        ("ours-xla", "fine-tune"),
        ("ours-fast", "fine-tune"),
    ]
    assert keys[("torch-1t", "frozen")] == 1 and keys[("ours-fast", "fine-tune")] == "fast"
    with pytest.raises(SystemExit, match="unknown mode"):
        bench_peer.plan(["frozen", "finetune"], ["xla"], [1])


def test_table_has_a_row_per_mode_impl_and_torch_setting():
    keys = bench_peer.plan(list(bench_peer.MODES), ["xla", "fast"], [2, 1])
    times = {k: [1.0 + i, 2.0 + i] for i, k in enumerate(keys)}
    ours = [k for k in keys if k[0].startswith("ours")]
    result = {
        "modes": list(bench_peer.MODES),
        "torch": ["torch-2t", "torch-1t"],
        "ours": ["ours-xla", "ours-fast"],
        "median_s": {k: sum(v) / 2 for k, v in times.items()},
        "best_s": {k: min(v) for k, v in times.items()},
        "cpu_median_s": {k: 1.0 for k in keys},
        "xla": {k: {"gflops": 10.0, "temp_mb": 5.0} for k in ours},
        "torch_gflops": {k: 9.0 for k in keys if k not in ours},
        "first_loss": {k: 1.0 for k in keys},
    }
    args = bench_peer.argparse.Namespace(size=64, batch=1, pre_nms=50, post_nms=20, rois=16, repeats=2)
    rows = [line for line in bench_peer.markdown(result, args).splitlines() if line.startswith("| ")]
    assert [tuple(r.split(" | ")[:3]) for r in rows[1:]] == [
        ("| frozen", "ours-xla", "torch-2t"),
        ("| frozen", "ours-xla", "torch-1t"),
        ("| fine-tune", "ours-xla", "torch-2t"),
        ("| fine-tune", "ours-xla", "torch-1t"),
        ("| fine-tune", "ours-fast", "torch-2t"),
        ("| fine-tune", "ours-fast", "torch-1t"),
    ]
    # ours-xla frozen: median 5.5 s (index 4) vs torch-2t frozen 1.5 s.
    assert rows[1].split(" | ")[3:6] == ["5.500", "1.500", "3.67"]


@pytest.mark.slow
def test_tiny_run_measures_both_sides(tmp_path):
    out_path = tmp_path / "bench.json"
    out = bench_peer.main(
        [
            "--size",
            "64",
            "--batch",
            "1",
            "--pre-nms",
            "50",
            "--post-nms",
            "20",
            "--rois",
            "16",
            "--max-instances",
            "8",
            "--repeats",
            "1",
            "--modes",
            "frozen",
            "--conv-impl",
            "xla",
            "--torch-threads",
            "1",
            "--json",
            str(out_path),
        ]
    )
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


def test_our_config_matches_torchvision_settings():
    """The shared values, read from both sides: our model config (config_defaults) and the kwargs
    given to torchvision."""
    args = bench_peer.argparse.Namespace(size=512, pre_nms=1000, post_nms=300, rois=128)
    t, m = bench_peer.torch_settings(args), bench_peer.our_config(args, "frozen", "xla")
    assert m.num_classes == t["num_classes"] and m.backbone.freeze == "all"
    assert (m.rpn.pre_nms_top_k_train, m.rpn.post_nms_top_k_train, m.rpn.num_proposals_train) == (
        t["rpn_pre_nms_top_n_train"],
        t["rpn_post_nms_top_n_train"],
        t["rpn_post_nms_top_n_train"],
    )
    assert (m.rpn.nms_iou, m.rpn.positive_from, m.rpn.negative_below) == (
        t["rpn_nms_thresh"],
        t["rpn_fg_iou_thresh"],
        t["rpn_bg_iou_thresh"],
    )
    assert (m.rpn.batch_size_per_image, m.rpn.positive_fraction) == (
        t["rpn_batch_size_per_image"],
        t["rpn_positive_fraction"],
    )
    assert (m.roi.num_samples, m.roi.fg_fraction, m.roi.fg_iou, m.roi.bg_iou_high) == (
        t["box_batch_size_per_image"],
        t["box_positive_fraction"],
        t["box_fg_iou_thresh"],
        t["box_bg_iou_thresh"],
    )
    assert m.detections.max_detections == t["box_detections_per_img"]
    assert bench_peer.our_config(args, "fine-tune", "fast").backbone.to_dict()["freeze"] == "none"


def test_parameter_counts_equal_torchvision_module_by_module():
    """Backbone, RPN head and box head (+ predictor) have exactly torchvision's parameter counts;
    the neck differs by exactly the two documented differences: our P6 is a 3x3 conv (torchvision
    max-pools) and our FPN levels have BatchNorm (5 levels x 256 x scale and offset)."""
    import ml_collections

    from frozen_det.resources import parameter_counts
    from frozen_det.tree_paths import count_elements

    args = bench_peer.argparse.Namespace(size=512, pre_nms=1000, post_nms=1000, rois=512)
    torch_model = bench_peer.torch_model(args, "fine-tune")
    torch_counts = {}
    for name, p in torch_model.named_parameters():
        part = ".".join(name.split(".")[:2])
        torch_counts[part] = torch_counts.get(part, 0) + p.numel()
    config = ml_collections.ConfigDict(
        {
            "model": bench_peer.our_config(args, "fine-tune", "xla"),
            "data": {"canvas": 64, "max_instances": 8},
            "train": {"batch_size": 1},
        }
    )
    _, _, variables, _ = parameter_counts(config)
    ours = {k: count_elements(v) for k, v in variables["params"].items()}
    assert ours["backbone"] == torch_counts["backbone.body"] == 23_508_032
    assert ours["rpn_head"] == torch_counts["rpn.head"]
    assert ours["box_heads_0"] == torch_counts["roi_heads.box_head"] + torch_counts["roi_heads.box_predictor"]
    p6_conv, fpn_bn = 3 * 3 * 256 * 256 + 256, 5 * 2 * 256
    assert ours["neck"] == torch_counts["backbone.fpn"] + p6_conv + fpn_bn
