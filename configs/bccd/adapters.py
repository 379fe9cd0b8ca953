"""BCCD transfer study: EfficientNet-Lite0 pretrained on ImageNet, frozen, with residual adapters (a zero-initialised
1x1 conv beside every MBConv block, trainable; paper Table 7).

    python -m frozen_det.train --config configs/bccd/adapters.py:fpn --workdir /tmp/bccd_adapters_fpn
    python -m frozen_det.projects.bccd --rows adapters:fpn,adapters:cascade

Argument: the head, fpn | cascade. Data, model, schedule: configs/bccd/common.py.
"""

from configs.bccd import common


def get_config(arg=None):
    return common.get_config("adapters", arg)
