"""BCCD transfer study: EfficientNet-Lite0 pretrained on ImageNet, fine-tuned end to end (freeze='none').

    python -m frozen_det.train --config configs/bccd/finetune.py:fpn --workdir /tmp/bccd_finetune_fpn
    python -m frozen_det.projects.bccd --rows finetune:fpn,finetune:cascade

Argument: the head, fpn | cascade. Data, model, schedule: configs/bccd/common.py.
"""

from configs.bccd import common


def get_config(arg=None):
    return common.get_config("finetune", arg)
