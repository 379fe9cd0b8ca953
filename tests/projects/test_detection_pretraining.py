"""frozen_det.projects.detection_pretraining: the BCCD detector is the quick start's, a DET start
transfers only the backbone to it, every classifier reads the DET detector's own layers (so the
DET run restores into it) and starts from det_pretrain at its seed, probes train only the new
layer, and the tables render pending rows and FAKE records (configs and made-up numbers only);
second tier: the smallest chain (DET pre-training -> a linear probe) end to end at smoke size."""

import functools
import os
import re

import pytest
from test_pretraining_data import fake_record  # pytest's prepend import mode: tests/projects/ is on sys.path

from frozen_det import config as config_lib
from frozen_det import config_defaults as d
from frozen_det.data.offline import fashion_mnist
from frozen_det.projects import runner
from frozen_det.projects.detection_pretraining import DETECTION, PRETRAIN, PROBES, STUDY, TARGETS, THRESHOLDS, tables

FAKE = "FAKE record written by tests/projects/test_detection_pretraining.py: made-up numbers, no model was run"


def _config(name, seed, root, smoke=False):
    return config_lib.complete(runner.row_config(STUDY, STUDY.row(name), seed, root, smoke))


def test_rows_that_start_from_det_start_from_det_pretrain_at_their_seed(tmp_path):
    root = str(tmp_path)
    det = runner.workdir(root, STUDY.row(PRETRAIN), 2)
    assert len(STUDY.rows) == 1 + len(DETECTION) + len(TARGETS) * (len(PROBES) + 2)
    for row in STUDY.rows:
        config = _config(row.name, 2, root)
        from_det = row.name != PRETRAIN and row.name.split("/")[-1].startswith("det")
        assert config.train.init_from == (det if from_det else ""), row.name
        assert config.train.seed == config.data.seed == 2
    pretrain = _config(PRETRAIN, 0, root)
    assert pretrain.data.path == f"{root}/canvases_voc" and pretrain.train.total_steps == 3000
    assert pretrain.model.backbone.init_checkpoint == "package:efficientnet_lite0"  # DET starts from CLS


def test_bccd_detection_transfers_only_the_backbone_and_measures_every_iou(tmp_path):
    root = str(tmp_path)
    configs = {start: _config(f"bccd/{start}", 0, root) for start in DETECTION}
    for start, config in configs.items():
        assert STUDY.row(f"bccd/{start}").iou_thresholds == THRESHOLDS == tuple(round(0.1 * i, 1) for i in range(1, 10))
        assert (config.data.canvas, config.train.total_steps, config.model.num_classes) == (256, 700, 4)
        assert (config.train.checkpoint_every, config.train.keep_checkpoints) == (100, 8)  # the drift's course
        b = config.model.backbone
        assert (b.variant, b.init_checkpoint, b.bn_momentum) == ("lite0", "package:efficientnet_lite0", 0.9)
        assert (b.freeze, b.adapters) == (("all", "residual") if start == "adapters" else ("none", "none"))
    excluded = lambda path: any(re.search(p, path) for p in configs["det"].train.init_exclude)  # noqa: E731
    assert not excluded("params/backbone/stem/conv/kernel") and not excluded("batch_stats/backbone/stage4/bn/mean")
    assert excluded("params/neck/lateral_2/kernel") and excluded("params/rpn_head/conv/kernel")
    assert excluded("params/box_heads_0/fc_0/kernel")
    assert configs["cls"].train.init_exclude == ()


def test_bccd_detection_is_the_quick_starts_bccd_detector(tmp_path, monkeypatch):
    """The same config as configs/quickstart.py:voc=BCCD,classes=Platelets/RBC/WBC,canvas=256
    (which reads the folder for the class count) at 700 steps, on a fake three-image VOC folder."""
    from PIL import Image

    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (tmp_path / sub).mkdir(parents=True)
    for i, name in enumerate(("Platelets", "RBC", "WBC")):
        Image.new("RGB", (64, 48)).save(tmp_path / "JPEGImages" / f"{i}.jpg")
        (tmp_path / "Annotations" / f"{i}.xml").write_text(
            f"<annotation><filename>{i}.jpg</filename><size><width>64</width><height>48</height><depth>3</depth>"
            f"</size><object><name>{name}</name><difficult>0</difficult><bndbox><xmin>1</xmin><ymin>1</ymin>"
            "<xmax>20</xmax><ymax>20</ymax></bndbox></object></annotation>"
        )
    for split in ("trainval", "test"):
        (tmp_path / "ImageSets" / "Main" / f"{split}.txt").write_text("0\n1\n2\n")
    monkeypatch.setenv("BCCD_DIR", str(tmp_path))
    quickstart = runner.repo_config(f"configs/quickstart.py:voc={tmp_path},classes=Platelets/RBC/WBC,canvas=256")
    d.apply_strategy(quickstart.model, "finetune", "package:efficientnet_lite0")
    quickstart.model.backbone.bn_momentum = 0.9
    quickstart.train.update(total_steps=700, checkpoint_every=100, keep_checkpoints=8, seed=1)
    quickstart.train.schedule.boundaries = (600,)  # the records' schedule, longer than the quick start's
    quickstart.data.update(seed=1, kshot_seed=1)  # the runner sets both to the seed
    assert _config("bccd/cls", 1, "/nonexistent").to_dict() == config_lib.complete(quickstart).to_dict()


def test_classifiers_read_the_det_detectors_layers(tmp_path):
    root = str(tmp_path)
    detector = _config(PRETRAIN, 0, root).model.to_dict()
    for row in STUDY.rows:
        if not row.name.startswith(("probe/", "finetune/")):
            continue
        config = _config(row.name, 0, root)
        kind, target, start = row.name.split("/")
        assert config.model.type == "classifier" and config.model.detector.to_dict() == detector, row.name
        tap = start.split("_", 1)[1] if kind == "probe" else "conv5"
        assert config.model.features == tap
        if kind == "probe":  # frozen features, only the new linear layer trains
            assert config.model.frozen_features and config.train.trainable_only == ("^tap_classifier/",)
            assert config.train.weight_decay == 0.0 and config.train.schedule.base_lr == 0.1
        else:  # everything trains, with little data
            assert not config.model.frozen_features and config.train.trainable_only == ()
            assert config.data.subset.images_per_class == {"bccd": 5, "fmnist": 100}[target]
        if target == "fmnist":
            assert config.data.image_size == 64 and config.model.num_classes == 10
            assert config.train.total_steps == (800 if kind == "probe" else 400)
        else:
            assert config.data.source == "detection_crops" and config.model.num_classes == 3
            assert config.train.total_steps == (600 if kind == "probe" else 300)


_fake = functools.partial(fake_record, note=FAKE)


def _detection(row, seed, ap, shift):
    drift = {g: {"params": 0.01 * (i + 1)} for i, g in enumerate(("stem", "stage1", "stage2", "stage3", "stage4"))}
    drift["stage4"]["batch_stats"] = 0.3
    curve = {"iou_thresholds": list(THRESHOLDS), "coco_AP": [0.9 - 0.1 * i + shift for i in range(len(THRESHOLDS))]}
    return _fake(row, seed, {"AP": ap, "AP50": 0.8, "AP75": 0.5}, {"ap_vs_iou": curve, "drift": drift})


def test_tables_from_fake_records_and_pending_rows():
    rendered = tables([])
    assert set(rendered) == {"pretraining", "detection", "drift", "classification"}
    assert "| det_pretrain | 0 | pending |" in rendered["pretraining"]
    assert "| DET - CLS (paired by seed) | 0 | pending |" in rendered["detection"]
    assert "| DET FC2, linear | 0 | pending | 0 | pending |" in rendered["classification"]
    records = [_detection("bccd/cls", s, 0.5, 0.0) for s in (0, 1)]
    records += [_detection("bccd/det", s, ap, 0.02 * (s + 1)) for s, ap in ((0, 0.52), (1, 0.54), (2, 0.6))]
    records += [_detection(PRETRAIN, 0, 0.6, 0.0)]
    records += [_fake("probe/fmnist/det_fc1", s, {"top1": v}) for s, v in ((0, 0.8), (1, 0.9))]
    records += [_fake("finetune/bccd/cls", 0, {"mean_per_class_accuracy": 0.95, "top1": 0.99})]
    rendered = tables(records)
    detection = rendered["detection"].strip().splitlines()
    assert detection[2].startswith("| CLS, fine-tuned | 2 | 0.900 ± 0.000 | 0.800 ± 0.000 |")
    assert detection[2].endswith("| 0.500 ± 0.000 | 1.0 ± 0.0 |")
    # DET at seeds 0, 1, 2 shifted by 0.02 / 0.04 / 0.06; CLS at 0, 1: pairs 0.02, 0.04 (s.e. 0.01)
    assert detection[3].startswith("| DET, fine-tuned | 3 | 0.940 ± 0.012 |")
    assert detection[4].startswith("| CLS frozen + adapters | 0 | pending |")
    assert detection[5] == "| DET - CLS (paired by seed) | 2 | " + "0.030 ± 0.010 | " * 9 + "0.030 ± 0.010 |  |"
    assert "| det_pretrain | 1 | 0.600 | 0.800 | 0.500 | 1.0 |" in rendered["pretraining"]
    drift = rendered["drift"]
    assert (
        "| DET pre-training (canvases, from CLS) | 1 | 0.0100 | 0.0200 | 0.0300 | 0.0400 | 0.0500 | 0.3000 |" in drift
    )
    assert drift.strip().splitlines()[-1].startswith("6 runs;")
    classification = rendered["classification"]
    assert "| DET FC1, linear | 0 | pending | 2 | 0.850 ± 0.050 |" in classification
    assert "| CLS, fine-tuned from Conv5 | 1 | 0.950 | 0 | pending |" in classification
    assert classification.strip().splitlines()[-1].startswith("3 runs;")


@pytest.mark.slow
@pytest.mark.skipif(not fashion_mnist.available(), reason="Debian package dataset-fashion-mnist not installed")
def test_smoke_chain_det_pretraining_and_a_probe_on_its_conv5(tmp_path, capsys, monkeypatch):
    """probe/fmnist/det_conv5 at seed 0 runs det_pretrain at seed 0 first (its AP at every IoU and
    backbone drift in the record), then a linear probe on the DET detector's Conv5 restored from it."""
    root = str(tmp_path / "root")
    monkeypatch.setattr(type(STUDY), "folder", property(lambda self: str(tmp_path / "project")))
    runner.main(STUDY, ["--smoke", "--root", root, "--rows", "probe/fmnist/det_conv5", "--seeds", "1"])
    records = {r["row"]: r for r in runner.load_records(os.path.join(root, "records"))}
    assert set(records) == {PRETRAIN, "probe/fmnist/det_conv5"}
    pre, probe = records[PRETRAIN], records["probe/fmnist/det_conv5"]
    assert pre["smoke"] and 0.0 <= pre["metrics"]["AP"] <= 1.0
    curve = pre["extra"]["ap_vs_iou"]
    assert curve["iou_thresholds"] == list(THRESHOLDS) and len(curve["coco_AP"]) == len(THRESHOLDS)
    drift = pre["extra"]["drift"]
    assert set(drift) == {"stem", "stage1", "stage2", "stage3", "stage4"} and drift["stage1"]["params"] > 0
    assert probe["resolved_config"]["train"]["init_from"] == os.path.join(root, "runs", PRETRAIN, "s0")
    assert probe["restored"]["restored"] > 0 and probe["dependencies"] == {PRETRAIN: 0}
    assert 0.0 <= probe["metrics"]["top1"] <= 1.0 and probe["curve"][-1][0] == 2
    out = capsys.readouterr().out
    assert "| det_pretrain | 1 |" in out and "| DET Conv5, linear | 0 | pending | 1 |" in out
    with pytest.raises(ValueError, match="smoke"):  # smoke numbers never reach the page
        runner.publish(STUDY, root)
