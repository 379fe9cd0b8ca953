"""The paper-scale configs of the studies, one entry per step a researcher launches on a pod
(docs/scaling.md gives the commands in order and their expected cost). The second tier's dry run
(tests/test_dry_run.py) trains every config of `DISTINCT_PROGRAMS` for two steps on 8 simulated
devices at shrunk sizes (`python -m frozen_det.dry_run`); the others differ from one of those
only in data, schedule or freezing, and the first tier builds their input pipelines on mock data.

Li et al. 2019 (frozen_det/projects/detection_pretraining) and Huh et al. 2016
(frozen_det/projects/pretraining_data) have no paper-scale configs yet: their miniatures only.
"""

PAPER_CONFIGS = {
    "proper_reuse": (  # Vasconcelos et al. 2022 (the system this repository reimplements)
        "configs/paper/resnetrs101_fpn.py:72ep,frozen",
        "configs/paper/resnetrs101_nasfpn.py:72ep,frozen",
        "configs/paper/resnetrs101_nasfpn_cascade.py:72ep,frozen",
        "configs/paper/effb7_nasfpn_cascade_mask.py:frozen",
        "configs/paper/effb7_nasfpn_cascade_mask_lvis.py:stage1,frozen",
        "configs/paper/effb7_nasfpn_cascade_mask_lvis.py:stage2,frozen",
        "configs/paper/retinanet_resnet50_fpn.py:72ep,frozen",
    ),
    "dap": (  # Zhong et al. 2021
        "frozen_det/projects/dap/paper.py:classifier",
        "frozen_det/projects/dap/paper.py:pretrain",
        "frozen_det/projects/dap/paper.py:pretrain,freeze",
        "frozen_det/projects/dap/paper.py:voc07",
        "frozen_det/projects/dap/paper.py:voc0712",
        "frozen_det/projects/dap/paper.py:coco",
    ),
    "predet": (  # Ramanathan et al. 2021
        "frozen_det/projects/predet/paper.py:pretrain",
        "frozen_det/projects/predet/paper.py:cls",
        "frozen_det/projects/predet/paper.py:coco",
        "frozen_det/projects/predet/paper.py:voc0712",
    ),
}

DISTINCT_PROGRAMS = (
    "configs/paper/resnetrs101_fpn.py:72ep,frozen",
    "configs/paper/resnetrs101_nasfpn_cascade.py:72ep,frozen",
    "configs/paper/effb7_nasfpn_cascade_mask.py:frozen",
    "configs/paper/effb7_nasfpn_cascade_mask_lvis.py:stage2,frozen",
    "configs/paper/retinanet_resnet50_fpn.py:72ep,frozen",
    "frozen_det/projects/dap/paper.py:classifier",
    "frozen_det/projects/dap/paper.py:pretrain",
    "frozen_det/projects/dap/paper.py:voc0712",
    "frozen_det/projects/predet/paper.py:pretrain",
    "frozen_det/projects/predet/paper.py:coco",
)
