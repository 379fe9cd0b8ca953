"""tools/predet_study.py: the PreDet rows have the target detectors' shared layers (so the
transfer restores the neck, RPN convolution and box head), the rows and the tables (configs only;
no training)."""

import predet_study  # noqa: E402  (tools/ is on sys.path: tests/tools/conftest.py)
import pytest

SHARED = ("backbone", "neck", "anchors", "rpn", "box_head", "roi")


@pytest.mark.parametrize("name", sorted(predet_study.PRETRAIN))
def test_predet_rows_have_the_targets_shared_layers(name, tmp_path):
    pretrain = predet_study.pretrain_config(str(tmp_path), name, smoke=False)
    assert pretrain.model.type == "predet" and pretrain.data.image_size == 128
    assert pretrain.train.total_steps == predet_study.PREDET_STEPS
    for target in predet_study.TARGETS:
        finetune = predet_study.finetune_config(str(tmp_path), f"{target}/5shot/{name}/s1", smoke=False)
        for section in SHARED:
            assert pretrain.model[section].to_dict() == finetune.model[section].to_dict(), (target, section)
        assert finetune.train.init_from.endswith(f"predet/{name}")
        assert finetune.train.init_exclude and finetune.data.kshot == 5 and finetune.data.kshot_seed == 1
        assert tuple(finetune.data.mean) == tuple(pretrain.data.mean)


def test_smoke_rows_and_pending_tables(tmp_path):
    assert len(predet_study.finetune_rows()) == 2 * len(predet_study.TARGETS) * len(predet_study.INITS)
    config = predet_study.finetune_config(str(tmp_path), "bccd/5shot/imagenet/s0", smoke=True)
    assert config.train.total_steps == predet_study.SMOKE_STEPS and not config.train.init_from
    assert config.data.canvas == 256
    results = predet_study.collect(str(tmp_path), smoke=True)
    table = predet_study.markdown(results)
    assert "Smoke run" in table and "pending" in table


def test_heads_only_rows_keep_the_imagenet_backbone(tmp_path):
    import re

    config = predet_study.finetune_config(str(tmp_path), "voc/5shot/full_heads/s0", smoke=False)
    assert config.train.init_from.endswith("predet/full")
    excluded = lambda path: any(re.search(p, path) for p in config.train.init_exclude)  # noqa: E731
    assert excluded("params/backbone/stem/conv/kernel") and excluded("batch_stats/backbone/stem/bn/mean")
    assert excluded("params/box_heads_0/class_logits/kernel")  # the class-specific layers, as every row
    assert not excluded("params/neck/lateral_2/kernel") and not excluded("params/box_heads_0/fc_0/kernel")
