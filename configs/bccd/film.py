"""BCCD transfer study: EfficientNet-Lite0 pretrained on ImageNet, frozen, with FiLM layers (a per-channel scale
and shift after every MBConv block, identity at init, trainable; Perez et al. 2018, the feature-wise transformations
that paper Sec. 4.5 conjectures might serve like the residual adapters).

    python -m frozen_det.train --config configs/bccd/film.py:fpn --workdir /tmp/bccd_film_fpn
    python -m frozen_det.projects.bccd --rows film:fpn,film:cascade

Argument: the head, fpn | cascade. Data, model, schedule: configs/bccd/common.py.
"""

from configs.bccd import common


def get_config(arg=None):
    return common.get_config("film", arg)
