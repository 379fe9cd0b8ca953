"""Image classification as a task (`model.type="classifier"`): any backbone + global pooling +
linear classifier, trained on classification batches (frozen_det.data.classification),
evaluated by top-1 / top-5 / loss / per-class accuracy, predicting the top classes of an image.

A linear probe is this task with `train.trainable_only=("/classifier/",)` (the backbone, head
convolution included, frozen); fine-tuning trains everything; transfer from any run is
`train.init_from` (frozen_det.training.transfer)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow as tf

from frozen_det.checkpoints.pretrained import IMAGENET_CLASSES
from frozen_det.data import classification
from frozen_det.data.classification.subsets import source_label_set
from frozen_det.data.classification.taxonomy import imagenet1k_class_names
from frozen_det.data.classification.transforms import centre_crop
from frozen_det.data.source import DataError
from frozen_det.evaluation.classification import ClassificationEvaluator
from frozen_det.evaluation.gather import gathered_outputs
from frozen_det.models import config as model_config
from frozen_det.models.classifier import Classifier, DetectorTapClassifier
from frozen_det.tasks.base import Task


class ClassificationTask(Task):
    name = "classifier"
    data = classification
    complete_model = staticmethod(model_config.complete_classifier)
    headline_metrics = ("top1", "top5", "mean_per_class_accuracy")
    heads_take_backbone_features = False

    def validate(self, data_info) -> None:
        m = self.config.model
        if data_info is not None and int(m.num_classes) != data_info.num_classes:
            raise ValueError(
                f"config.model.num_classes={m.num_classes} but the dataset has {data_info.num_classes} "
                f"classes: set model.num_classes={data_info.num_classes}."
            )

    def build_model(self, train_pipeline=None):
        m = self.config.model
        if m.features == "backbone":
            return Classifier(ml_collections.FrozenConfigDict(m))
        return DetectorTapClassifier(
            ml_collections.FrozenConfigDict(m.detector),
            tap=m.features,
            num_tap_classes=m.num_classes,
            loss_kind=m.loss,
            label_smoothing=m.label_smoothing,
            frozen_features=m.frozen_features,
        )

    @classmethod
    def backbone_section(cls, model):
        return model.backbone if model.features == "backbone" else model.detector.backbone

    def model_inputs(self, train: bool) -> tuple[str, ...]:
        return ("image", "label") if train else ("image",)

    def example_batch(self, batch_size: int, train: bool = True) -> dict:
        size = int(self.config.data.image_size)
        batch = {"image": np.zeros((batch_size, size, size, 3), np.float32)}
        if train:
            batch["label"] = np.zeros((batch_size,), np.int32)
        return batch

    def class_names(self) -> tuple[str, ...]:
        """The names of the model's output classes: its data's label set, or (the data not on this
        machine, e.g. ImageNet for a pretrained head) the ImageNet-1k names for a 1000-way head,
        else class_<i>."""
        d = self.data_config()
        try:
            return tuple(source_label_set(d, classification.build_source(d)).names)
        except DataError:
            n = int(self.config.model.num_classes)
            return tuple(imagenet1k_class_names()) if n == IMAGENET_CLASSES else tuple(f"class_{i}" for i in range(n))

    # ------------------------------------------------------------------ evaluation

    def features_fn(self, model) -> Callable:
        """jitted (variables, images) -> pooled features [B, D] (what the classifier sees)."""

        def features(variables, images):
            out = model.apply(variables, {"image": images}, train=False, with_maps=True)
            return jnp.mean(out["pre_pool_map"].astype(jnp.float32), axis=(1, 2))

        return jax.jit(features)

    def evaluate(self, model, variables, eval_pipeline, to_device: Callable | None = None) -> dict:
        logits_fn = jax.jit(lambda v, b: {"logits": model.apply(v, b, train=False)["logits"]})
        evaluator = ClassificationEvaluator(eval_pipeline.info.class_names)
        for out in gathered_outputs(logits_fn, variables, eval_pipeline, ("image",), to_device, carry=("label",)):
            evaluator.add(out["logits"], out["label"])
        return evaluator.evaluate()

    # ------------------------------------------------------------------ prediction

    def predict(self, model, variables, images: list, min_score: float = 0.0, top_k: int = 5) -> list[dict]:
        """The `top_k` classes (name, probability) of each `(name, PIL image)` pair, with the
        evaluation preprocessing (shorter side resized, centre crop)."""
        d = self.data_config()
        class_names = self.class_names()
        probabilities = jax.jit(lambda v, b: model.apply(v, b, train=False)["probabilities"])
        records = []
        for name, image in images:
            crop = centre_crop(tf.constant(np.asarray(image.convert("RGB"))), d.image_size, d.crop_fraction).numpy()
            x = (crop - np.asarray(d.mean, np.float32)) / np.asarray(d.std, np.float32)
            probs = np.asarray(jax.device_get(probabilities(variables, {"image": x[None].astype(np.float32)})))[0]
            best = np.argsort(-probs, kind="stable")[:top_k]
            records.append(
                {
                    "image": name,
                    "top_classes": [
                        {"class_id": int(c), "class_name": class_names[c], "probability": float(probs[c])}
                        for c in best
                        if probs[c] >= min_score
                    ],
                }
            )
        return records
