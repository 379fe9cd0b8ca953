"""BCCD transfer study: EfficientNet-Lite0 pretrained on ImageNet, frozen (freeze='all'): only the FPN, RPN and
box heads train; the backbone runs in inference mode without a backward pass.

    python -m frozen_det.train --config configs/bccd/frozen.py:fpn --workdir /tmp/bccd_frozen_fpn
    python -m frozen_det.projects.bccd --rows frozen:fpn,frozen:cascade

Argument: the head, fpn | cascade. Data, model, schedule: configs/bccd/common.py.
"""

from configs.bccd import common


def get_config(arg=None):
    return common.get_config("frozen", arg)
