"""Parameter counts of configs/paper against the paper's Table 3 and docs/reference.md §4.

Counts include BN moving statistics in the total (as Keras' count_params); "trainable" is what
is left with the backbone frozen. The models are built abstractly (jax.eval_shape): no compute.
"""

import importlib.util
import os

import pytest

from frozen_det.resources import parameter_counts
from frozen_det.tree_paths import leaf_paths

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_config(name, arg=None):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", "paper", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def counts(name, arg="72ep,frozen"):
    """The parameter counts of TF Model Garden's model: its classifier is 91 wide (one output per
    COCO category id) where our runnable configs have 81 (frozen_det.config_defaults.COCO_CLASSES)."""
    config = load_config(name, arg)
    config.model.num_classes = 91
    return parameter_counts(config)[0]


def test_nasfpn_cascade_matches_table3_within_0p3_percent():
    c = counts("resnetrs101_nasfpn_cascade")
    # Exact layer arithmetic of the shipped YAML (docs/reference.md §4.2).
    assert (c["params_total"], c["params_trainable"]) == (132_981_324, 71_265_580)
    assert c["params_total"] == pytest.approx(132.9e6, rel=0.003)
    assert c["params_trainable"] == pytest.approx(71.3e6, rel=0.003)


def test_fpn_within_3_percent_of_table3():
    """Shipped YAML: 82.95M / 21.26M, paper 83.5M / 21.9M. The 0.6M gap is exactly one
    256->256 3x3 conv (+BN): the paper's number fits a 2-conv RPN (83.54M / 21.85M), so the
    paper was probably measured on a slightly different internal config (docs/reference.md §4.2)."""
    c = counts("resnetrs101_fpn")
    assert (c["params_total"], c["params_trainable"]) == (82_948_598, 21_262_038)
    assert c["params_total"] == pytest.approx(83.5e6, rel=0.03)
    assert c["params_trainable"] == pytest.approx(21.9e6, rel=0.03)
    variant = load_config("resnetrs101_fpn", "72ep,frozen")
    variant.model.update(num_classes=91)
    variant.model.rpn.num_convs = 2
    v = parameter_counts(variant)[0]
    assert (round(v["params_total"] / 1e5), round(v["params_trainable"] / 1e5)) == (835, 219)


def test_nasfpn_total_within_3_percent_and_the_trainable_gap_explained():
    """Shipped YAML: 100.62M / 38.92M vs the paper's 102.6M / 40.9M: the total is 1.9% low but
    the trainable count is 4.8% low, both by the same ~2.0M. No single knob of the shipped
    config explains it (docs/reference.md §4.2); the nearest variants bracket it: with a mask head
    (include_mask defaults to True in TF-Vision's Mask R-CNN base) the model has 103.27M /
    41.56M, within 0.7% / 1.6% of the paper. We reproduce the shipped YAML and report the gap."""
    c = counts("resnetrs101_nasfpn")
    assert (c["params_total"], c["params_trainable"]) == (100_618_998, 38_915_542)
    assert c["params_total"] == pytest.approx(102.6e6, rel=0.03)
    assert c["params_trainable"] == pytest.approx(40.9e6, rel=0.05)
    with_mask = load_config("resnetrs101_nasfpn", "72ep,frozen")
    with_mask.model.update(num_classes=91)
    with_mask.model.mask.enabled = True
    with_mask.data.with_masks = True
    m = parameter_counts(with_mask)[0]
    assert (m["params_total"], m["params_trainable"]) == (103_270_225, 41_564_209)
    assert m["params_total"] == pytest.approx(102.6e6, rel=0.03)
    assert m["params_trainable"] == pytest.approx(40.9e6, rel=0.03)


def test_frozen_backbone_is_resnet_rs101_with_bn_statistics():
    c = counts("resnetrs101_fpn", "72ep,finetune")
    assert c["params_total"] == 82_948_598
    # Fine-tuning trains the backbone's weights and BN affine parameters, not its statistics.
    bn_statistics = {"backbone": 105_600, "fpn": 2_560, "rpn": 2_560, "box_head": 6_144}
    assert c["params_trainable"] == 82_948_598 - sum(bn_statistics.values())


def test_efficientnet_b7_cascade_mask_rcnn_is_about_185m():
    c = counts("effb7_nasfpn_cascade_mask", "frozen")
    assert c["params_total"] == pytest.approx(185e6, rel=0.01)


def test_lvis_second_stage_trains_only_the_three_classifier_layers():
    from frozen_det.training import partition

    first = load_config("effb7_nasfpn_cascade_mask_lvis", "stage1,frozen")
    config = load_config("effb7_nasfpn_cascade_mask_lvis", "stage2,frozen")
    assert first.model.num_classes == 1204 and first.model.detections.max_detections == 300
    assert config.train.total_steps == first.train.total_steps // 10 and config.train.freeze_batch_stats
    assert config.model.box_head.class_weighting == "effective_number"
    c, _, variables, mask = parameter_counts(config)  # class-weighted loss: stand-in class counts
    trainable, _ = partition.split(variables["params"], mask)
    assert sorted(leaf_paths(trainable)) == sorted(
        f"box_heads_{i}/class_logits/{p}" for i in range(3) for p in ("bias", "kernel")
    )
    assert c["params_trainable"] == 3 * (1024 + 1) * 1204
