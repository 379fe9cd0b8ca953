"""BCCD transfer study: EfficientNet-Lite0 pretrained on ImageNet, fine-tuned end to end (freeze='none').

    python -m frozen_det.train --config configs/bccd/finetune.py:fpn --workdir /tmp/bccd_study/finetune_fpn
    python tools/bccd_study.py --rows finetune:fpn,finetune:cascade

Argument: the head, fpn | cascade. Data, model, schedule: configs/bccd/common.py.
"""

import os
import runpy

_COMMON = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "common.py"))


def get_config(arg=None):
    return _COMMON["get_config"]("finetune", arg)
