"""PreDet's pretext model: a Faster R-CNN's layers trained by query-box lookup between two views.

Ramanathan, Wang, Mahajan, "PreDet: Large-scale weakly supervised pre-training for detection"
(ICCV 2021), sec. 3. The model *is* a TwoStageDetector (same `setup`, so `backbone/`, `neck/`,
`rpn_head/` and `box_heads_0/` are the same modules with the same parameter paths and shapes as
the detector a PreDet run is transferred into) plus the pretext heads:

* Query features (sec. 3.2): RoIAlign of the queries on view 2's FPN (each box at its level, as
  the detector does) -> the box head's convs and FCs (`box_heads_0`, `taps=True`: its class and
  box layers are never created) -> ``b_q``.
* CRPN (sec. 3.2.1) on view 1: the RPN's shared 3x3 conv(s) (`rpn_head`, `taps=True`) -> 1x1
  convs to ``A x D`` (scores) and ``4A x D`` (boxes) per location (`crpn_scores`, `crpn_boxes`);
  ``b_q`` -> FC layers to ``A x D`` / ``4A x D`` (`crpn_query_scores`, `crpn_query_boxes`); the
  grouped-convolution dot products, targets, 128 + 128 sample and loss of
  frozen_det.models.predet_losses; proposals = best-query score and deltas per anchor, then the
  detector's own proposal generation (per-level top-k, NMS, global top-k: `config.rpn`'s train
  counts).
* CROI head (sec. 3.2.2) on view 1: one positive proposal per query and ``|P_neg|`` shared
  negatives (predet_losses.select_croi_samples); their RoIAlign features -> the same box head ->
  ``b_p``; one FC (`croi_embedding`, shared by ``b_p`` and ``b_q`` as in the paper's Fig. 4) ->
  cosine / tau -> InfoNCE; regression: ``b_q`` -> ``4 x R`` (`croi_query_regression`), ``b_p`` ->
  ``1 x R`` (`croi_proposal_regression`), their dot products are the deltas, smooth-L1 to the
  query box in view 1 (the box coder weights of `box_head.weights`).
* Multi-label classification (sec. 3.1): global average pooling of every FPN level of both views
  -> one FC shared by the levels (`multilabel_classifier`) -> sigmoid BCE against
  `image_labels`, averaged over the levels.

Choices the paper leaves open, made here:

* Direction: as the paper, the *queries are seen in view 2* and *looked up in view 1* (the CRPN
  and CROI run on view 1; targets are ``query_boxes1``). The views are symmetric augmentations,
  so the other direction would be the same task; only one is computed per step.
* Both views go through the backbone and neck as one batch of 2B images, so BatchNorm sees both
  ("every training batch of size N contains two-views of N/2 distinct images", sec. 3.3).
* The query feature ``f_q`` of the CRPN is the box head's output ``b_q`` (the paper's ``f_q`` is
  the ROI-pooled feature; going through the shared box head keeps one query representation and
  trains the box head from the CRPN as well).
* Proposals are `stop_gradient`ed (as the detector's RPN proposals) and the (view 1) query
  boxes are appended to them (`predet.add_queries_to_proposals`, detectron2's default of adding
  the ground truth), so every valid query has a positive; the positive is drawn at random among
  the proposals above 0.5 IoU (`predet.random_positive`, "sample one positive") -- with the
  highest-IoU rule it would always be the query's own box and the regression target 0.
* Without the CRPN (Table 1's rows without L_crpn) the CROI head reads
  `predet.num_random_proposals` uniformly random boxes plus one jittered copy of each query
  (random positives and negatives per query, sec. 5.1); the CRPN's layers are then not built.
* The multi-label loss reads both views (the image's labels hold for both).
* Initialisation of the bilinear heads (a score is the dot product of two learned projections):
  the query side at the usual LeCun scale, the image / proposal side N(0, 0.01), so scores and
  deltas start near 0 (as the RPN's outputs do) without the vanishing gradients of two small
  sides (both small: the CRPN score loss stayed at log 2 for the first 20 tiny steps).

Train mode returns ``((losses, metrics), ...)`` as every task's model (`losses["total"]` the sum of
the switched-on terms: `crpn_score`, `crpn_box`, `croi_info_nce`, `croi_box`, `multilabel`);
metrics: `retrieval_top1` (InfoNCE top-1 among positive + negatives), `retrieval_chance`
(1 / (1 + valid negatives)), `crpn_query_recall` (fraction of valid queries covered by a CRPN
proposal at IoU > `croi_iou`), `crpn_sampled_positives`, `queries_per_image`. Inference mode
(``train=False``, BatchNorm statistics, a fixed sampling key) returns the same diagnostics per
image as counts (`queries`, `retrieval_hits`, `retrieval_queries`, `negatives`, `crpn_covered`,
`crpn_positives`) for an exact average over a held-out set.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from frozen_det.models import predet_losses as pl
from frozen_det.models.detector import TwoStageDetector
from frozen_det.models.heads.rpn import generate_proposals
from frozen_det.ops import boxes as box_ops
from frozen_det.ops import matching

# The pretext heads' parameter names (never in a detector: they stay behind on transfer).
PRETEXT_MODULES = (
    "crpn_scores",
    "crpn_boxes",
    "crpn_query_scores",
    "crpn_query_boxes",
    "croi_embedding",
    "croi_query_regression",
    "croi_proposal_regression",
    "multilabel_classifier",
)


def random_proposals(key, query_boxes, query_valid, num_random: int, image_shape) -> tuple[jax.Array, jax.Array]:
    """Proposals without a CRPN (PreDet Table 1, rows without L_crpn): ``num_random`` uniform boxes
    per image (sides 4 px to the canvas) and one copy of each valid query with its centre moved by
    up to 10% and its sides scaled by 0.8-1.25 (IoU with the query mostly above 0.5).
    ``[B, num_random + Q, 4]`` and validity."""
    b, q = query_boxes.shape[:2]
    h, w = float(image_shape[0]), float(image_shape[1])
    size_key, pos_key, jitter_key = jax.random.split(key, 3)
    size = jnp.maximum(jax.random.uniform(size_key, (b, num_random, 2)) * jnp.array([h, w]), 4.0)
    corner = jax.random.uniform(pos_key, (b, num_random, 2)) * (jnp.array([h, w]) - size)
    uniform = jnp.concatenate([corner, corner + size], axis=-1)
    centre = (query_boxes[..., :2] + query_boxes[..., 2:]) / 2
    sides = query_boxes[..., 2:] - query_boxes[..., :2]
    shift, scale = jnp.split(jax.random.uniform(jitter_key, (b, q, 4)), 2, axis=-1)
    centre = centre + (shift - 0.5) * 0.2 * sides
    sides = sides * jnp.exp((scale - 0.5) * 2 * jnp.log(1.25))
    jittered = jnp.concatenate([centre - sides / 2, centre + sides / 2], axis=-1)
    boxes = box_ops.clip_boxes(jnp.concatenate([uniform, jittered], axis=1), image_shape)
    valid = jnp.concatenate([jnp.ones((b, num_random), bool), query_valid], axis=1)
    return jnp.where(valid[..., None], boxes, 0.0), valid


def _gather(values: jax.Array, index: jax.Array) -> jax.Array:
    """``values [B, N, ...]`` at ``index [B, K]`` -> ``[B, K, ...]``."""
    return jnp.take_along_axis(values, index.reshape(index.shape + (1,) * (values.ndim - 2)), axis=1)


class PreDet(TwoStageDetector):
    """`config` is a complete `config.model` of type "predet" (frozen_det.models.config.predet_defaults)."""

    def setup(self):
        super().setup()
        p = self.config.predet
        a = self.num_anchors_per_location
        dtype = jnp.dtype(self.config.dtype)
        # Bilinear scores (a dot product of two projections): the query side starts at the usual
        # LeCun scale and the image / proposal side small, so the scores start near 0 (as the RPN's
        # N(0, 1e-5) outputs) while the gradient of the small side is not itself vanishing.
        small = nn.initializers.normal(0.01)
        if p.crpn:
            self.crpn_scores = nn.Conv(a * p.crpn_dims, (1, 1), dtype=dtype, kernel_init=small)
            self.crpn_boxes = nn.Conv(4 * a * p.crpn_dims, (1, 1), dtype=dtype, kernel_init=small)
            self.crpn_query_scores = nn.Dense(a * p.crpn_dims, dtype=dtype)
            self.crpn_query_boxes = nn.Dense(4 * a * p.crpn_dims, dtype=dtype)
        if p.croi:
            self.croi_embedding = nn.Dense(p.embedding_dims, dtype=dtype)
        if p.croi_regression:
            self.croi_query_regression = nn.Dense(4 * p.regression_dims, dtype=dtype)
            self.croi_proposal_regression = nn.Dense(p.regression_dims, dtype=dtype, kernel_init=small)
        if p.multilabel:
            self.multilabel_classifier = nn.Dense(p.num_labels, dtype=dtype, kernel_init=small)

    # ------------------------------------------------------------------ pieces

    def crpn(self, features, query_features, image_shape, train: bool):
        """Query-conditioned scores ``[B, N, Q]`` and deltas ``[B, N, Q, 4]`` over all anchors."""
        a = self.num_anchors_per_location
        taps = self.rpn_head(features, train, taps=True)
        query_scores = self.crpn_query_scores(query_features)
        query_boxes = self.crpn_query_boxes(query_features)
        scores, deltas = [], []
        for level in sorted(taps):
            s = pl.query_conditioned_scores(self.crpn_scores(taps[level]), query_scores, a)
            d = pl.query_conditioned_deltas_map(self.crpn_boxes(taps[level]), query_boxes, a)
            b, h, w, _, q = s.shape
            scores.append(s.reshape(b, h * w * a, q).astype(jnp.float32))
            deltas.append(d.reshape(b, h * w * a, q, 4).astype(jnp.float32))
        return jnp.concatenate(scores, axis=1), jnp.concatenate(deltas, axis=1)

    def crpn_proposal_boxes(self, scores, deltas, anchors, query_valid, image_shape, train: bool):
        """Per anchor the best valid query's score and deltas (predet_losses.crpn_proposals), then
        the detector's proposal generation. ``(boxes [B, K, 4], valid [B, K])``."""
        best_score, _, best_query = pl.crpn_proposals(scores, deltas, jnp.asarray(anchors.boxes), query_valid)
        best_deltas = jnp.take_along_axis(deltas, best_query[..., None, None], axis=2)[:, :, 0]
        score_levels = anchors.split_levels(best_score, axis=1)
        delta_levels = {l: v.reshape(v.shape[:3] + (-1,)) for l, v in anchors.split_levels(best_deltas, axis=1).items()}
        boxes, _, valid = generate_proposals(
            score_levels, delta_levels, anchors.per_level, image_shape, **self.proposal_limits(train)
        )
        return jax.lax.stop_gradient(boxes), valid

    def query_recall(self, proposals, proposal_valid, query_boxes, query_valid):
        """Per image: valid queries covered by a proposal at IoU > croi_iou, and valid queries."""
        iou = box_ops.pairwise_iou(proposals, query_boxes, valid1=proposal_valid, valid2=query_valid)
        covered = jnp.any(iou > self.config.predet.croi_iou, axis=1) & query_valid
        return jnp.sum(covered, axis=1), jnp.sum(query_valid, axis=1)

    def multilabel_logits(self, features):
        """The classification head shared by the FPN levels: [level logits [N, num_labels]]."""
        return [self.multilabel_classifier(jnp.mean(features[l], axis=(1, 2))) for l in sorted(features)]

    # ------------------------------------------------------------------ the pretext task

    def pretext(self, batch: Mapping[str, Any], train: bool, key):
        c, p = self.config, self.config.predet
        view1, view2 = batch["view1"], batch["view2"]
        boxes1 = batch["query_boxes1"].astype(jnp.float32)
        boxes2 = batch["query_boxes2"].astype(jnp.float32)
        query_valid = batch["query_valid"].astype(bool)
        b = view1.shape[0]
        image_shape = view1.shape[1:3]
        crpn_key, random_key, croi_key = jax.random.split(key, 3)

        both = self.features(jnp.concatenate([view1, view2.astype(view1.dtype)], axis=0), train=train)
        features1 = {l: v[:b] for l, v in both.items()}
        features2 = {l: v[b:] for l, v in both.items()}
        losses, stats = {}, {"queries": jnp.sum(query_valid, axis=1)}

        needs_queries = p.crpn or p.croi or p.croi_regression
        query_features = self.box_features(features2, boxes2, train) if needs_queries else None

        if p.crpn:
            anchors = self.anchors(image_shape)
            scores, deltas = self.crpn(features1, query_features, image_shape, train)
            targets = pl.crpn_targets(
                crpn_key,
                jnp.asarray(anchors.boxes),
                boxes1,
                query_valid,
                positive_above=p.crpn_positive_above,
                negative_below=p.crpn_negative_below,
                num_samples=p.crpn_batch_size_per_image,
                positive_fraction=p.crpn_positive_fraction,
            )
            losses["crpn_score"], losses["crpn_box"] = pl.crpn_loss(scores, deltas, targets, p.crpn_huber_beta)
            proposals, proposal_valid = self.crpn_proposal_boxes(
                scores, deltas, anchors, query_valid, image_shape, train
            )
            stats["crpn_covered"], _ = self.query_recall(proposals, proposal_valid, boxes1, query_valid)
            stats["crpn_positives"] = jnp.sum(targets.sampled & (targets.labels == matching.POSITIVE), axis=1)
        else:
            proposals, proposal_valid = random_proposals(
                random_key, boxes1, query_valid, p.num_random_proposals, image_shape
            )

        if p.croi:
            if p.add_queries_to_proposals:
                proposals = jnp.concatenate([proposals, boxes1], axis=1)
                proposal_valid = jnp.concatenate([proposal_valid, query_valid], axis=1)
            samples = jax.vmap(
                lambda k, pb, pv, qb, qv: pl.select_croi_samples(
                    k, pb, pv, qb, qv, p.num_negatives, p.croi_iou, p.random_positive
                )
            )(jax.random.split(croi_key, b), proposals, proposal_valid, boxes1, query_valid)
            positive_boxes = _gather(proposals, samples.positive_index)
            negative_boxes = _gather(proposals, samples.negative_index)
            q = boxes1.shape[1]
            sampled = self.box_features(features1, jnp.concatenate([positive_boxes, negative_boxes], axis=1), train)
            positive_features, negative_features = sampled[:, :q], sampled[:, q:]
            logits = pl.contrastive_logits(
                self.croi_embedding(query_features),
                self.croi_embedding(positive_features),
                self.croi_embedding(negative_features),
                samples.negative_valid,
                p.temperature,
            )
            losses["croi_info_nce"] = pl.info_nce_loss(logits, samples.positive_valid)
            stats["retrieval_queries"] = jnp.sum(samples.positive_valid, axis=1)
            stats["retrieval_hits"] = (
                jax.vmap(pl.retrieval_top1)(logits, samples.positive_valid) * stats["retrieval_queries"]
            )
            stats["negatives"] = jnp.sum(samples.negative_valid, axis=1)
            if p.croi_regression:
                projection = self.croi_query_regression(query_features).reshape(b, q, 4, p.regression_dims)
                pred = pl.query_conditioned_deltas(self.croi_proposal_regression(positive_features), projection)
                losses["croi_box"] = pl.croi_regression_loss(
                    pred,
                    positive_boxes,
                    boxes1,
                    samples.positive_valid,
                    weights=tuple(c.box_head.weights),
                    beta=p.croi_huber_beta,
                )

        if p.multilabel:
            labels = jnp.concatenate([batch["image_labels"]] * 2, axis=0)
            losses["multilabel"] = pl.multilabel_classification_loss(self.multilabel_logits(both), labels)
        return losses, stats

    def __call__(self, batch: Mapping[str, Any], train: bool = False):
        key = self.make_rng("sampling") if self.has_rng("sampling") else jax.random.key(0)
        losses, stats = self.pretext(batch, train, key)
        if not train:
            return stats
        losses["total"] = sum(losses.values())
        ratio = lambda n, d: jnp.sum(n) / jnp.maximum(jnp.sum(d), 1)
        metrics = {"queries_per_image": jnp.mean(stats["queries"].astype(jnp.float32))}
        if "retrieval_hits" in stats:
            metrics["retrieval_top1"] = ratio(stats["retrieval_hits"], stats["retrieval_queries"])
            metrics["retrieval_chance"] = jnp.mean(1.0 / (1.0 + stats["negatives"]))
        if "crpn_covered" in stats:
            metrics["crpn_query_recall"] = ratio(stats["crpn_covered"], stats["queries"])
            metrics["crpn_sampled_positives"] = jnp.mean(stats["crpn_positives"].astype(jnp.float32))
        return losses, metrics
