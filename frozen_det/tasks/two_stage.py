"""The two-stage detector as a task (`model.type="two_stage"`): Faster / Mask / Cascade R-CNN
trained on detection batches, evaluated with COCO or LVIS metrics, predicting boxes (and masks)
in original-image pixels (the parts every detector shares: frozen_det.tasks.detection)."""

from __future__ import annotations

import logging

import ml_collections

from frozen_det.data import class_stats
from frozen_det.models import config as model_config
from frozen_det.models.detector import TwoStageDetector
from frozen_det.tasks.detection import DetectionTask

log = logging.getLogger(__name__)


class TwoStageTask(DetectionTask):
    name = "two_stage"
    complete_model = staticmethod(model_config.complete_two_stage)

    @property
    def with_masks(self) -> bool:
        return bool(self.config.model.mask.enabled)

    def validate(self, data_info) -> None:
        super().validate(data_info)
        if self.with_masks and not self.config.data.with_masks:
            raise ValueError("config.model.mask.enabled=True needs config.data.with_masks=True.")

    # ------------------------------------------------------------------ model

    def needs_class_statistics(self) -> bool:
        """Whether the training losses read the training split's class counts."""
        head = self.config.model.box_head
        return head.class_weighting != "none" or head.class_loss == "federated"

    def build_model(self, train_pipeline=None):
        """The detector; losses that read class counts get them from `train_pipeline`'s split
        (one label-only pass), or uniform stand-ins without one (costs do not depend on them;
        inference never reads them)."""
        frozen = ml_collections.FrozenConfigDict(self.config.model)
        if not self.needs_class_statistics():
            return TwoStageDetector(frozen)
        if train_pipeline is None:
            stats = class_stats.uniform_statistics(int(self.config.model.num_classes) - 1)
        else:
            stats = class_stats.source_statistics(train_pipeline.source, train_pipeline.split)
            log.info(
                "class statistics of %r: %d images, %d instances, %d classes without instances",
                train_pipeline.split,
                stats.num_images,
                int(stats.instance_counts.sum()),
                int((stats.instance_counts[1:] == 0).sum()),
            )
        return TwoStageDetector(
            frozen,
            class_instance_counts=tuple(int(n) for n in stats.instance_counts),
            class_image_counts=tuple(int(n) for n in stats.image_counts),
        )
