"""What the detector tasks share (two-stage and RetinaNet): detection batches in, the config
checks against the data, COCO or LVIS evaluation, and predictions in original-image pixels.

A detector task's model follows the detectors' convention: inference returns fixed-size
`original_boxes`, `scores`, `classes` (1..num_classes-1), `valid` (and optionally `masks`).
Subclasses set `name` and `complete_model` and build the model; `with_masks` says whether the
model predicts masks.
"""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np
import tensorflow as tf

from frozen_det.data import detection
from frozen_det.data.detection import augment
from frozen_det.drawing import draw_detections
from frozen_det.evaluation.coco import paste_mask
from frozen_det.evaluation.runner import evaluate_detections
from frozen_det.tasks.base import Task


class DetectionTask(Task):
    data = detection
    headline_metrics = ("AP", "AP50", "AP75")
    evaluate_options = ("iou_thresholds",)

    @property
    def with_masks(self) -> bool:
        """Whether the model trains on and predicts instance masks."""
        return False

    # ------------------------------------------------------------------ config checks

    def validate(self, data_info) -> None:
        m, d = self.config.model, self.config.data
        stride = 2 ** int(m.neck.max_level)
        if d.canvas % stride:
            raise ValueError(
                f"config.data.canvas={d.canvas} is not a multiple of 2^max_level={stride} "
                f"(model.neck.max_level={m.neck.max_level}); use e.g. {d.canvas // stride * stride + stride}."
            )
        if data_info is not None and int(m.num_classes) != data_info.num_classes + 1:
            raise ValueError(
                f"config.model.num_classes={m.num_classes} but the dataset has {data_info.num_classes} "
                f"classes: set model.num_classes={data_info.num_classes + 1} (classes + background)."
            )

    # ------------------------------------------------------------------ model

    def model_inputs(self, train: bool) -> tuple[str, ...]:
        if not train:
            return ("image", "image_info")
        return ("image", "boxes", "classes", "valid", "image_info") + (("masks",) if self.with_masks else ())

    def example_batch(self, batch_size: int, train: bool = True) -> dict:
        """Zeros with one valid box per image: enough for target assignment to trace."""
        d = self.config.data
        n = int(d.max_instances)
        batch = {
            "image": np.zeros((batch_size, d.canvas, d.canvas, 3), np.float32),
            "image_info": np.tile(
                np.array([[d.canvas, d.canvas], [d.canvas, d.canvas], [1, 1], [0, 0]], np.float32), (batch_size, 1, 1)
            ),
        }
        if train:
            batch.update(
                boxes=np.zeros((batch_size, n, 4), np.float32),
                classes=np.zeros((batch_size, n), np.int32),
                valid=np.zeros((batch_size, n), bool),
            )
            batch["boxes"][:, 0] = (8, 8, 64, 64)
            batch["valid"][:, 0] = True
            batch["classes"][:, 0] = 1
            if self.with_masks:
                batch["masks"] = np.zeros((batch_size, n, d.mask_size, d.mask_size), np.float32)
        return batch

    # ------------------------------------------------------------------ evaluation

    def detect_fn(self, model) -> Callable:
        """jitted (variables, eval batch) -> detections in original-image pixels, with the
        batch's image ids and padding flags carried along."""
        inputs = self.model_inputs(train=False)

        def detect(variables, batch):
            out = model.apply(variables, {k: batch[k] for k in inputs}, train=False)
            keep = {k: out[k] for k in ("original_boxes", "scores", "classes", "valid")}
            if "masks" in out:
                keep["masks"] = out["masks"]
            keep["image_id"] = batch["image_id"]
            keep["example_valid"] = batch["example_valid"]
            return keep

        return jax.jit(detect)

    def evaluate(self, model, variables, eval_pipeline, to_device: Callable | None = None, iou_thresholds=None) -> dict:
        """COCO or LVIS metrics; with `iou_thresholds`, also "ap_vs_iou" (COCO-style and VOC AP at
        each threshold)."""
        keys = self.model_inputs(train=False) + ("image_id", "example_valid")
        return evaluate_detections(
            self.detect_fn(model),
            variables,
            eval_pipeline,
            keys,
            to_device=to_device,
            include_masks=self.with_masks,
            max_detections=int(self.config.model.detections.max_detections),
            metric=eval_pipeline.config.eval_metric,
            iou_thresholds=iou_thresholds,
        )

    # ------------------------------------------------------------------ prediction

    def preprocess(self, image_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(canvas image [H, W, 3], image_info [4, 2]) exactly as the eval pipeline makes them
        (longer side to the canvas, padded bottom / right)."""
        image, info = self.preprocess_tf(tf.constant(image_u8))
        return image.numpy().astype(np.float32), info.numpy()

    def preprocess_tf(self, image_u8: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """`preprocess` as TensorFlow ops on a uint8 [H, W, 3] tensor of any (dynamic) size: what
        `predict` and the exported SavedModel (frozen_det.export) both run."""
        d = self.config.data
        shape = tf.shape(image_u8)
        params = augment.resize_params(shape[0], shape[1], d.canvas, 1.0)
        image = augment.transform_image(image_u8, params, d.canvas, d.mean, d.std)
        return image, augment.image_info(params, d.canvas)

    def predict(self, model, variables, images: list, min_score: float = 0.3) -> list[dict]:
        """Detections of `(name, PIL image)` pairs at or above `min_score`: boxes [x0, y0, x1, y1]
        in the image's pixels, class id and name, score; "drawing" is the image with them drawn."""
        class_names = detection.build_source(self.data_config()).info.class_names
        detect = jax.jit(lambda v, b: model.apply(v, b, train=False))
        records = []
        for name, image in images:
            canvas_image, info = self.preprocess(np.asarray(image.convert("RGB")))
            out = jax.device_get(detect(variables, {"image": canvas_image[None], "image_info": info[None]}))
            detections, masks = [], []
            for k in np.nonzero(out["valid"][0])[0]:
                score = float(out["scores"][0, k])
                if score < min_score:
                    continue
                y0, x0, y1, x1 = (float(v) for v in out["original_boxes"][0, k])
                c = int(out["classes"][0, k])
                detections.append(
                    {
                        "box_xyxy": [x0, y0, x1, y1],
                        "class_id": c,
                        "score": score,
                        "class_name": class_names[c] if c < len(class_names) else str(c),
                    }
                )
                if "masks" in out:
                    masks.append(paste_mask(out["masks"][0, k], (y0, x0, y1, x1), (image.height, image.width)))
            records.append(
                {"image": name, "detections": detections, "drawing": draw_detections(image, detections, masks or None)}
            )
        return records
