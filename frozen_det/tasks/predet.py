"""PreDet pre-training as a task (`model.type="predet"`): the query-box lookup pretext task of
Ramanathan et al., "PreDet: Large-scale weakly supervised pre-training for detection" (ICCV
2021), trained by the shared loop on two-view batches of unlabelled images
(frozen_det.data.two_view.pipelines), evaluated by pretext diagnostics on a fixed held-out set of
two-view batches. Its weights go to a detector by `train.init_from` (frozen_det.training.transfer):
the backbone, neck, RPN convolutions and box head convs / FCs have the detector's paths and
shapes; the pretext heads stay behind and the detector's class-specific layers start fresh.

Evaluation (JSON): `retrieval_top1` (each valid query's positive proposal scores above all
negatives), `retrieval_chance` (1 / (1 + negatives), what a random embedding gets),
`crpn_query_recall` (queries covered by a CRPN proposal at IoU > `predet.croi_iou`), and the
counts they come from.
"""

from __future__ import annotations

from typing import Callable

import jax
import ml_collections
import numpy as np

from frozen_det.data import two_view
from frozen_det.evaluation.gather import gathered_outputs
from frozen_det.models import config as model_config
from frozen_det.models.predet import PreDet
from frozen_det.tasks.base import Task


class PreDetTask(Task):
    name = "predet"
    data = two_view
    complete_model = staticmethod(model_config.complete_predet)
    headline_metrics = ("retrieval_top1", "retrieval_chance", "crpn_query_recall")
    heads_take_backbone_features = False
    backbone_input = "view1"  # (both views go through it: the backbone's cost is twice this)

    @property
    def num_queries(self) -> int:
        return int(self.config.model.predet.num_queries)

    # ------------------------------------------------------------------ data

    def train_pipeline(self, **kwargs):
        return two_view.build_train_pipeline(self.config, num_queries=self.num_queries, **kwargs)

    def eval_pipeline(self, **kwargs):
        return two_view.build_eval_pipeline(self.config, num_queries=self.num_queries, **kwargs)

    def validate(self, data_info) -> None:
        m, d = self.config.model, self.config.data
        stride = 2 ** int(m.neck.max_level)
        if d.image_size % stride:
            raise ValueError(
                f"config.data.image_size={d.image_size} is not a multiple of 2^max_level={stride} "
                f"(model.neck.max_level={m.neck.max_level})."
            )
        if m.box_head.num_fcs < 1:
            raise ValueError("config.model.box_head.num_fcs=0: PreDet's embeddings read the box head's last FC.")
        if data_info is None:
            return
        p = m.predet
        if p.multilabel and data_info.num_labels != p.num_labels:
            raise ValueError(
                f"config.model.predet.multilabel=True with num_labels={p.num_labels}, but the data has "
                f"{data_info.num_labels} label classes: set data.labels=True on a labelled source and "
                f"model.predet.num_labels={data_info.num_labels} (or multilabel=False)."
            )

    # ------------------------------------------------------------------ model

    def build_model(self, train_pipeline=None):
        return PreDet(ml_collections.FrozenConfigDict(self.config.model))

    def model_inputs(self, train: bool) -> tuple[str, ...]:
        keys = ("view1", "view2", "query_boxes1", "query_boxes2", "query_valid")
        return keys + (("image_labels",) if self.config.model.predet.multilabel else ())

    def example_batch(self, batch_size: int, train: bool = True) -> dict:
        """Two zero views with one valid query each (every code path traces)."""
        size, q = int(self.config.data.image_size), self.num_queries
        batch = {
            "view1": np.zeros((batch_size, size, size, 3), np.float32),
            "view2": np.zeros((batch_size, size, size, 3), np.float32),
            "query_boxes1": np.zeros((batch_size, q, 4), np.float32),
            "query_boxes2": np.zeros((batch_size, q, 4), np.float32),
            "query_valid": np.zeros((batch_size, q), bool),
        }
        batch["query_boxes1"][:, 0] = batch["query_boxes2"][:, 0] = (0, 0, size / 2, size / 2)
        batch["query_valid"][:, 0] = True
        if self.config.model.predet.multilabel:
            batch["image_labels"] = np.zeros((batch_size, int(self.config.model.predet.num_labels)), np.float32)
        return batch

    def init_rngs(self, rng: jax.Array) -> dict:
        return {"params": rng, "sampling": rng}

    # ------------------------------------------------------------------ evaluation

    def diagnostics_fn(self, model) -> Callable:
        """jitted (variables, batch) -> per-image counts (inference-mode BatchNorm, fixed key)."""
        inputs = self.model_inputs(train=False)
        return jax.jit(lambda v, b: model.apply(v, {k: b[k] for k in inputs}, train=False))

    def evaluate(self, model, variables, eval_pipeline, to_device: Callable | None = None) -> dict:
        keys = self.model_inputs(train=False)
        totals: dict = {}
        for out in gathered_outputs(self.diagnostics_fn(model), variables, eval_pipeline, keys, to_device):
            for k, v in out.items():
                totals[k] = totals.get(k, 0.0) + float(np.sum(np.asarray(v, np.float64)))
            totals["num_images"] = totals.get("num_images", 0.0) + float(len(next(iter(out.values()))))
        ratio = lambda a, b: totals.get(a, 0.0) / max(totals.get(b, 0.0), 1.0)
        result = {"num_images": int(totals.get("num_images", 0)), "num_queries": int(totals.get("queries", 0))}
        if "retrieval_hits" in totals:
            result["retrieval_top1"] = ratio("retrieval_hits", "retrieval_queries")
            result["retrieval_chance"] = 1.0 / (1.0 + ratio("negatives", "num_images"))
            result["num_retrieval_queries"] = int(totals["retrieval_queries"])
        if "crpn_covered" in totals:
            result["crpn_query_recall"] = ratio("crpn_covered", "queries")
        return result

    def predict(self, model, variables, images: list, **kwargs) -> list[dict]:
        raise SystemExit(
            "model.type='predet' is a pre-training pretext task without predictions: evaluate it "
            "(python -m frozen_det.evaluate) or transfer it into a detector (--config.train.init_from=RUN)."
        )
