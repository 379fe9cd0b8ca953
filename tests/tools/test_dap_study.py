"""tools/dap_study.py: DAP pre-training has the targets' shared layers (so the transfer restores
backbone, FPN, RPN and box head), each row starts from the right run with the class-specific
layers excluded and its own k-shot seed, and the tables render with pending rows (configs only;
no training)."""

import dap_study  # noqa: E402  (tools/ is on sys.path: tests/tools/conftest.py)

SHARED = ("backbone", "neck", "anchors", "rpn", "box_head", "roi")


def test_rows_start_from_the_right_runs_with_the_shared_layers(tmp_path):
    root = str(tmp_path)
    for freeze in (False, True):
        pretrain = dap_study.pretrain_config(root, "paper", freeze)
        assert pretrain.train.init_from == dap_study.paths(root)["cls"]
        assert pretrain.data.coco_files["train"] == (dap_study.pseudo_box_file(root, "paper"), "train")
        assert pretrain.model.backbone.freeze == ("all" if freeze else "none")
    pretrain = dap_study.pretrain_config(root, "paper", False)
    rows = dap_study.finetune_rows()
    assert len(rows) == len(dap_study.TARGETS) * len(dap_study.KSHOTS) * len(dap_study.INITS) * len(dap_study.SEEDS)
    assert rows[0].startswith("voc/5shot/") and rows[-1].startswith("bccd/20shot/")
    for name in ("voc/5shot/dap/s1", "bccd/20shot/dap_freeze/s0", "bccd/5shot/cls/s1"):
        target, kshot, init, seed = name.split("/")
        config = dap_study.finetune_config(root, name)
        expected = dap_study.paths(root)["cls"] if init == "cls" else f"{root}/{init}/paper"
        assert config.train.init_from == expected
        assert config.train.init_exclude == ("/(class_logits|box_deltas)/",)
        assert config.data.kshot == int(kshot[:-4]) and config.data.kshot_seed == config.train.seed == int(seed[1:])
        for section in SHARED:  # everything but the class count transfers
            assert config.model[section].to_dict() == pretrain.model[section].to_dict(), (name, section)
        assert tuple(config.data.mean) == tuple(pretrain.data.mean)
    table = dap_study.markdown(dap_study.collect(root))
    assert "| VOC-like canvases | 5 | pending / pending |" in table
