"""RetinaNet as a task (`model.type="retinanet"`): the one-stage detector of Lin et al., "Focal
Loss for Dense Object Detection" (ICCV 2017) on the same backbones, freeze switch, adapters and
necks as the two-stage detector, trained on detection batches, evaluated with COCO or LVIS
metrics and predicting boxes in original-image pixels (frozen_det.tasks.detection)."""

from __future__ import annotations

import ml_collections

from frozen_det.models import config as model_config
from frozen_det.models.retinanet import RetinaNet
from frozen_det.tasks.detection import DetectionTask


class RetinaNetTask(DetectionTask):
    name = "retinanet"
    complete_model = staticmethod(model_config.complete_retinanet)

    def build_model(self, train_pipeline=None):
        return RetinaNet(ml_collections.FrozenConfigDict(self.config.model))
