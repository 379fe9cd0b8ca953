"""BCCD transfer study: EfficientNet-Lite0 randomly initialised, trained end to end (freeze='none', no
checkpoint): the no-pretraining baseline.

    python -m frozen_det.train --config configs/bccd/scratch.py:fpn --workdir /tmp/bccd_scratch_fpn
    python -m frozen_det.projects.bccd --rows scratch:fpn,scratch:cascade

Argument: the head, fpn | cascade. Data, model, schedule: configs/bccd/common.py.
"""

from configs.bccd import common


def get_config(arg=None):
    return common.get_config("scratch", arg)
