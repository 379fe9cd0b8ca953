"""PreDet's detection self-supervision, as pure fixed-shape jnp functions (no parameters).

PreDet ("PreDet: Large-scale weakly supervised pre-training for detection", sec. 3) trains the
whole detector by a *query-box lookup*: Q query boxes are seen in two augmented views of one
image; each query's feature from view 2 must retrieve, among the boxes of view 1, those that
overlap the same region. Two modules carry it, and this file holds their scoring, targets and
losses; the learned layers (the projections that produce the embeddings passed in here) and the
wiring into a task are the caller's.

* CRPN (sec. 3.2.1): an RPN whose anchor scores are conditioned on each query.
  :func:`query_conditioned_scores` / :func:`query_conditioned_deltas_map` (the "1x1 group
  convolution with A groups"), :func:`crpn_targets` (anchor -> query assignment and the
  128 + 128 sample), :func:`crpn_loss`, :func:`crpn_proposals` (score = max over queries).
* CROI head (sec. 3.2.2): :func:`select_croi_samples` (one positive proposal per query and a
  shared set of 512 negatives), :func:`contrastive_logits` + :func:`info_nce_loss` (tau 0.07),
  :func:`retrieval_top1` (diagnostic), :func:`query_conditioned_deltas` +
  :func:`croi_regression_loss`.
* Classification (sec. 3.1): :func:`multilabel_classification_loss`, averaged over FPN levels.

Shapes: B images, Q queries (padded, with ``query_valid``), N anchors or proposals, P negatives.
Boxes are yxyx pixels of view 1's canvas. Anchor axes follow frozen_det.ops.anchors: per level
``[H, W, A]`` row-major, levels concatenated, so ``scores.reshape(B, H * W * A, Q)`` lines up
with ``MultilevelAnchors.boxes``.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from frozen_det.ops import boxes as box_ops
from frozen_det.ops import matching
from frozen_det.ops.sampling import sample_balanced

# Masked logits: exp(_NEG - max) is exactly 0 in float32 and the subtraction cannot overflow.
_NEG = -1e9


# ----------------------------------------------------------------------------------------------
# CRPN scoring: the query-conditioned grouped convolution
# ----------------------------------------------------------------------------------------------


def query_conditioned_scores(features: jax.Array, query_embeddings: jax.Array, num_anchors: int) -> jax.Array:
    """Score of every (location, anchor, query) by a 1x1 grouped convolution (PreDet sec. 3.2.1).

    The paper builds from view 1's feature map a map ``f_I^cls`` with a D-dimensional feature for
    each of the A anchors at each location, and from each query feature ``f_q`` (view 2) A vectors
    ``f_q^cls``; the score of anchor a at (y, x) for query q is their dot product, "computed
    simultaneously for all the queries and anchor-boxes as a 1x1 group-convolution with A
    groups". Exactly that: the input has ``C = A * D`` channels in A groups of D (anchor-major:
    channel ``a * D + d``), and the kernel is built from the queries, with Q output channels per
    group (output channel ``a * Q + q`` holds query q's vector for anchor a)::

        score[b, y, x, a, q] = sum_d features[b, y, x, a * D + d] * query_embeddings[b, q, a * D + d]

    The learned projections that produce ``features`` (``f_I -> f_I^cls``, a conv) and
    ``query_embeddings`` (``f_q -> A x f_q^cls``, an FC layer) are the caller's; the kernel is
    1x1 as in the paper. Each image has its own kernel (its own queries). Computed as the
    contraction above (an einsum over D, batched over images and anchors), which is the grouped
    convolution's arithmetic: a per-image grouped convolution under vmap becomes one convolution
    with B * A groups that XLA's SPMD partitioner splits wrongly when the batch is sharded over
    devices (JAX 0.10, a feature-group-count error; found by the sharded PreDet dry run).

    Args:
      features: ``[B, H, W, A * D]``.
      query_embeddings: ``[B, Q, A * D]``, same channel layout.
      num_anchors: A, the number of groups. For the box regression pass 4A (see
        :func:`query_conditioned_deltas_map`).

    Returns:
      ``[B, H, W, A, Q]`` scores (logits); padded queries get scores too, mask them downstream.
    """
    b, h, w, c = features.shape
    q = query_embeddings.shape[1]
    if c % num_anchors or query_embeddings.shape[-1] != c:
        raise ValueError(
            f"query_conditioned_scores: features have {c} channels and queries {query_embeddings.shape[-1]}; "
            f"both must equal num_anchors ({num_anchors}) * D."
        )
    d = c // num_anchors
    return jnp.einsum(
        "bhwad,bqad->bhwaq",
        features.reshape(b, h, w, num_anchors, d),
        query_embeddings.reshape(b, q, num_anchors, d).astype(features.dtype),
    )


def query_conditioned_deltas_map(features: jax.Array, query_embeddings: jax.Array, num_anchors: int) -> jax.Array:
    """CRPN box regression for every (location, anchor, query): the same grouped convolution with
    4A groups ("we follow the same design used to obtain query scores, and generate 4A regression
    co-ordinates", PreDet sec. 3.2.1). Group ``a * 4 + k`` gives coordinate k (ty, tx, th, tw, the
    order of frozen_det.ops.boxes.encode_boxes) of anchor a.

    ``features [B, H, W, 4A * D]``, ``query_embeddings [B, Q, 4A * D]`` -> ``[B, H, W, A, Q, 4]``.
    """
    out = query_conditioned_scores(features, query_embeddings, 4 * num_anchors)  # [B, H, W, 4A, Q]
    b, h, w, _, q = out.shape
    return out.reshape(b, h, w, num_anchors, 4, q).transpose(0, 1, 2, 3, 5, 4)


# ----------------------------------------------------------------------------------------------
# CRPN targets and losses
# ----------------------------------------------------------------------------------------------


class CrpnTargets(NamedTuple):
    labels: jax.Array  # [B, N] int32, frozen_det.ops.matching POSITIVE / NEGATIVE / IGNORE / INVALID
    query_index: jax.Array  # [B, N] int32, the query whose score / deltas the anchor trains
    max_iou: jax.Array  # [B, N] best IoU with a valid query (-1 when the image has none)
    sampled: jax.Array  # [B, N] bool, the 128 + 128 anchors that enter the losses
    box_targets: jax.Array  # [B, N, 4] encode_boxes(query box, anchor); meaningful on positives


def _assign_one_image(key, anchors, query_boxes, query_valid, positive_above, negative_below, force_best_anchor):
    iou = box_ops.pairwise_iou(anchors, query_boxes, valid2=query_valid)  # [N, Q], -1 for padding
    match = matching.match_by_iou(
        iou,
        negative_below,
        positive_above,
        strict_positive=True,
        invalid_below=0.0,  # IoU -1 everywhere: the image has no valid query, nothing to learn
        force_match_gt=force_best_anchor,
        gt_valid=query_valid,
    )
    # "the query box that has the maximum overlap with it (or random query if overlap with all
    # query boxes is zero)": a uniformly drawn valid query for the zero-overlap anchors.
    num_valid = jnp.sum(query_valid, dtype=jnp.int32)
    rank = jax.random.randint(key, (anchors.shape[0],), 0, jnp.maximum(num_valid, 1))
    valid_rank = jnp.cumsum(query_valid.astype(jnp.int32)) - 1  # [Q] rank among valid queries
    random_query = jnp.argmax((valid_rank[None, :] == rank[:, None]) & query_valid[None, :], axis=-1)
    best_query = jnp.argmax(iou, axis=-1)
    query_index = jnp.where(match.labels == matching.POSITIVE, match.matched_gt, best_query)
    query_index = jnp.where((match.labels != matching.POSITIVE) & (match.max_iou <= 0.0), random_query, query_index)
    targets = box_ops.encode_boxes(query_boxes[query_index], anchors)
    return match.labels, query_index.astype(jnp.int32), match.max_iou, targets


def crpn_targets(
    key: jax.Array,
    anchors: jax.Array,
    query_boxes: jax.Array,
    query_valid: jax.Array,
    positive_above: float = 0.7,
    negative_below: float = 0.3,
    num_samples: int = 256,
    positive_fraction: float = 0.5,
    force_best_anchor: bool = True,
) -> CrpnTargets:
    """CRPN anchor labels, the query each anchor trains against, and the anchor sample (PreDet
    sec. 3.2.1, "CRPN losses").

    Each anchor takes the valid query of maximum IoU (a uniformly random valid query if it
    overlaps none); positive if that IoU is > 0.7, negative if < 0.3, ignored in between. Then 256
    anchors are drawn with at most half positives (frozen_det.ops.sampling.sample_balanced with the
    RPN's settings: when fewer than 128 positives exist, negatives fill the 256, as in Faster
    R-CNN / detectron2, whose defaults the paper follows, sec. 4.1).

    Choices the paper leaves open:
      * ``force_best_anchor`` (default True): each valid query's best anchor is also positive for
        it, whatever its IoU -- Faster R-CNN's rule, and detectron2's RPN default (low-quality
        matches), which the paper says it keeps. One anchor per query (first of ties); if two
        queries pick the same anchor the lower query index wins (frozen_det.ops.matching).
      * Positive is strictly > 0.7 as written (the matcher's ``strict_positive``); negative < 0.3.
      * An image without any valid query gets INVALID labels everywhere and no samples.

    Args:
      key: PRNG key (random query for zero-overlap anchors, and the sample).
      anchors: ``[N, 4]`` (shared) or ``[B, N, 4]``.
      query_boxes: ``[B, Q, 4]`` in view 1's coordinates; ``query_valid`` ``[B, Q]`` bool.
    """
    batch = query_boxes.shape[0]
    anchors = jnp.broadcast_to(anchors, (batch,) + anchors.shape[-2:])
    assign_key, sample_key = jax.random.split(key)
    labels, query_index, max_iou, box_targets = jax.vmap(
        lambda k, a, qb, qv: _assign_one_image(k, a, qb, qv, positive_above, negative_below, force_best_anchor)
    )(jax.random.split(assign_key, batch), anchors, query_boxes, query_valid)
    sample = jax.vmap(
        lambda k, l: sample_balanced(
            k, l == matching.POSITIVE, l == matching.NEGATIVE, num_samples, positive_fraction, False
        )
    )(jax.random.split(sample_key, batch), labels)
    return CrpnTargets(labels, query_index, max_iou, sample.indicator, box_targets)


def smooth_l1(x: jax.Array, beta: float) -> jax.Array:
    """PyTorch's smooth-L1 (``0.5 x^2 / beta`` below ``beta``, ``|x| - beta / 2`` above); beta 0 is L1.
    Equal to Keras' Huber (``optax.huber_loss``) divided by beta."""
    if beta == 0.0:
        return jnp.abs(x)
    return optax.huber_loss(x, delta=beta) / beta


def _take_query(values: jax.Array, query_index: jax.Array) -> jax.Array:
    """``values [B, N, Q, ...]`` at ``query_index [B, N]`` -> ``[B, N, ...]``."""
    index = query_index.reshape(query_index.shape + (1,) * (values.ndim - query_index.ndim))
    return jnp.take_along_axis(values, index, axis=2)[:, :, 0]


def crpn_loss(
    scores: jax.Array, deltas: jax.Array, targets: CrpnTargets, beta: float = 1.0 / 9
) -> tuple[jax.Array, jax.Array]:
    """CRPN classification and regression losses (PreDet sec. 3.2.1): sigmoid BCE of each sampled
    anchor's score *for its assigned query* against its label, and smooth-L1 of the positives'
    deltas *for their query* against Faster R-CNN targets (frozen_det.ops.boxes.encode_boxes, no
    weights, as the RPN). Both are summed and divided by the number of sampled anchors (about
    B * 256), the normalisation of detectron2's RPN. ``beta`` 1/9 is Faster R-CNN's RPN value
    (sigma 3); the paper does not give one (detectron2's default is 0, plain L1).

    Args:
      scores: ``[B, N, Q]`` logits (e.g. :func:`query_conditioned_scores` reshaped).
      deltas: ``[B, N, Q, 4]``.
      targets: from :func:`crpn_targets`.

    Returns:
      ``(classification_loss, box_loss)`` scalars.
    """
    weight = targets.sampled.astype(jnp.float32)
    normaliser = jnp.maximum(jnp.sum(weight), 1.0)
    logit = _take_query(scores, targets.query_index).astype(jnp.float32)
    label = (targets.labels == matching.POSITIVE).astype(jnp.float32)
    cls = jnp.sum(optax.sigmoid_binary_cross_entropy(logit, label) * weight) / normaliser
    pred = _take_query(deltas, targets.query_index).astype(jnp.float32)
    box = smooth_l1(pred - targets.box_targets, beta).sum(-1)
    return cls, jnp.sum(box * weight * label) / normaliser


def crpn_proposals(
    scores: jax.Array, deltas: jax.Array, anchors: jax.Array, query_valid: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Proposal scores and boxes from the CRPN (PreDet sec. 3.2.1, "Proposal construction"): each
    anchor's score is its maximum over the valid queries, and it is regressed with the deltas of
    that highest-scoring query (frozen_det.ops.boxes.decode_boxes, RPN coding). Top-K and NMS are
    the caller's (the detector's proposal ops).

    ``scores [B, N, Q]``, ``deltas [B, N, Q, 4]``, ``anchors [N, 4]`` or ``[B, N, 4]``,
    ``query_valid [B, Q]`` -> ``(proposal_scores [B, N], proposal_boxes [B, N, 4], best_query [B, N])``.
    """
    masked = jnp.where(query_valid[:, None, :], scores, _NEG)
    best_query = jnp.argmax(masked, axis=-1).astype(jnp.int32)
    best_score = jnp.max(masked, axis=-1)
    boxes = box_ops.decode_boxes(_take_query(deltas, best_query), anchors)
    return best_score, boxes, best_query


# ----------------------------------------------------------------------------------------------
# CROI head: positives, negatives, InfoNCE, regression
# ----------------------------------------------------------------------------------------------


class CroiSamples(NamedTuple):
    positive_index: jax.Array  # [..., Q] int32 proposal index of each query's positive
    positive_valid: jax.Array  # [..., Q] bool: query valid and it has a proposal with IoU > 0.5
    positive_iou: jax.Array  # [..., Q]
    negative_index: jax.Array  # [..., P] int32 proposal indices of the shared negatives
    negative_valid: jax.Array  # [..., P] bool


def select_croi_samples(
    key: jax.Array,
    proposals: jax.Array,
    proposal_valid: jax.Array,
    query_boxes: jax.Array,
    query_valid: jax.Array,
    num_negatives: int = 512,
    iou_threshold: float = 0.5,
    random_positive: bool = False,
) -> CroiSamples:
    """One positive proposal per query and one shared negative set for one image (PreDet sec. 3.2.2).

    Negatives ``P_neg``: valid proposals whose IoU with *every* valid query is < 0.5; ``|P_neg|``
    is 512 (sec. 4.1), drawn uniformly when there are more (sample_balanced with no positives),
    padded with ``negative_valid`` False when there are fewer.

    Positive ``p_q^+``: a proposal with IoU > 0.5 with q. The paper says "sample one"; by default
    we take the one of highest IoU (deterministic, and the easiest to regress to the query), with
    ``random_positive=True`` a uniformly random one among those above 0.5. A query without such a
    proposal gets ``positive_valid`` False and drops out of both CROI losses. (detectron2, whose
    defaults the paper uses, appends the ground-truth boxes -- here the queries -- to the
    proposals; a caller that does the same guarantees every valid query a positive.)

    ``proposals [N, 4]``, ``proposal_valid [N]``, ``query_boxes [Q, 4]``, ``query_valid [Q]``; use
    ``jax.vmap`` with split keys for a batch.
    """
    n = proposals.shape[0]
    positive_key, negative_key = jax.random.split(key)
    iou = box_ops.pairwise_iou(proposals, query_boxes, valid1=proposal_valid, valid2=query_valid)  # [N, Q]
    above = iou > iou_threshold
    rank = jax.random.uniform(positive_key, iou.shape) if random_positive else iou
    positive_index = jnp.argmax(jnp.where(above, rank, -2.0), axis=0).astype(jnp.int32)  # [Q]
    positive_valid = jnp.any(above, axis=0) & query_valid
    positive_iou = jnp.take_along_axis(iou, positive_index[None], axis=0)[0]

    negative = proposal_valid & jnp.all(iou < iou_threshold, axis=1)
    size = max(n, num_negatives)  # sample_balanced needs at least num_samples entries
    negative = jnp.pad(negative, (0, size - n))
    sample = sample_balanced(negative_key, jnp.zeros_like(negative), negative, num_negatives, 0.0, False)
    negative_index = jnp.where(sample.valid, sample.indices, 0).astype(jnp.int32)
    return CroiSamples(positive_index, positive_valid, positive_iou, negative_index, sample.valid)


def _l2_normalise(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))


def contrastive_logits(
    query_embeddings: jax.Array,
    positive_embeddings: jax.Array,
    negative_embeddings: jax.Array,
    negative_valid: jax.Array,
    temperature: float = 0.07,
) -> jax.Array:
    """Query-proposal scores ``s_pq / tau`` for InfoNCE (PreDet sec. 3.2.2): cosine similarity of
    the L2-normalised embeddings (the box-head MLP and the FC layer that produce them are the
    caller's), column 0 the query's positive, columns 1.. the shared negatives (padding -1e9).

    ``query_embeddings [..., Q, D]``, ``positive_embeddings [..., Q, D]``, ``negative_embeddings
    [..., P, D]``, ``negative_valid [..., P]`` -> ``[..., Q, 1 + P]`` float32.
    """
    q = _l2_normalise(query_embeddings)
    positive = jnp.sum(q * _l2_normalise(positive_embeddings), axis=-1, keepdims=True)
    negative = jnp.einsum("...qd,...pd->...qp", q, _l2_normalise(negative_embeddings))
    negative = jnp.where(negative_valid[..., None, :], negative / temperature, _NEG)
    return jnp.concatenate([positive / temperature, negative], axis=-1)


def info_nce_loss(logits: jax.Array, query_valid: jax.Array) -> jax.Array:
    """InfoNCE (PreDet sec. 3.2.2, L_info): ``-log softmax(logits)[0]`` averaged over the valid
    queries (those with a positive) of the whole batch. ``logits [..., Q, 1 + P]`` from
    :func:`contrastive_logits`, ``query_valid [..., Q]``."""
    per_query = -jax.nn.log_softmax(logits, axis=-1)[..., 0]
    weight = query_valid.astype(jnp.float32)
    return jnp.sum(per_query * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def retrieval_top1(logits: jax.Array, query_valid: jax.Array) -> jax.Array:
    """Diagnostic: fraction of valid queries whose positive scores strictly above every valid
    negative (top-1 retrieval among [positive + negatives]). Same inputs as :func:`info_nce_loss`."""
    hit = logits[..., 0] > jnp.max(logits[..., 1:], axis=-1)
    weight = query_valid.astype(jnp.float32)
    return jnp.sum(hit * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def query_conditioned_deltas(proposal_features: jax.Array, query_projection: jax.Array) -> jax.Array:
    """CROI regression coordinates (PreDet sec. 3.2.2, Fig. 4): the query feature ``b_q`` projected
    to ``4 x D`` and the proposal feature ``b_p`` to ``1 x D`` (both FC layers, the caller's); the
    4 dot products are the deltas (ty, tx, th, tw) that move p onto q.

    ``proposal_features [..., D]``, ``query_projection [..., 4, D]`` -> ``[..., 4]``.
    """
    return jnp.einsum("...d,...kd->...k", proposal_features, query_projection)


def croi_regression_loss(
    pred_deltas: jax.Array,
    positive_boxes: jax.Array,
    query_boxes: jax.Array,
    valid: jax.Array,
    weights: box_ops.Weights = box_ops.FRCNN_WEIGHTS,
    beta: float = 1.0,
) -> jax.Array:
    """L_croi-reg (PreDet sec. 3.2.2): smooth-L1 between the positive proposal's predicted deltas
    and the Faster R-CNN targets of its query box (view 1 coordinates), summed over the 4
    coordinates and averaged over the valid queries. ``weights`` (10, 10, 5, 5) and ``beta`` 1.0
    are Faster R-CNN's ROI-head values (the paper does not state them).

    ``pred_deltas [..., Q, 4]``, ``positive_boxes [..., Q, 4]``, ``query_boxes [..., Q, 4]``,
    ``valid [..., Q]`` (e.g. ``CroiSamples.positive_valid``).
    """
    targets = box_ops.encode_boxes(query_boxes, positive_boxes, weights)
    loss = smooth_l1(pred_deltas.astype(jnp.float32) - targets, beta).sum(-1)
    weight = valid.astype(jnp.float32)
    return jnp.sum(loss * weight) / jnp.maximum(jnp.sum(weight), 1.0)


# ----------------------------------------------------------------------------------------------
# Classification pre-training loss
# ----------------------------------------------------------------------------------------------


def multilabel_classification_loss(
    level_logits: Sequence[jax.Array], targets: jax.Array, label_valid: Optional[jax.Array] = None
) -> jax.Array:
    """L_cls (PreDet sec. 3.1): a classification head shared by all FPN levels (pooling + FC, the
    caller's) gives ``[B, K]`` logits per level; each level's multi-label loss is sigmoid BCE
    against the multi-hot ``targets [B, K]``, summed over classes and averaged over images, and
    L_cls is the mean over levels. (The paper cites a "multi-label cross-entropy loss" [Mahajan et
    al. 2018] without its form; per-class sigmoid BCE is our choice.) ``label_valid [B]`` drops
    images without labels."""
    targets = targets.astype(jnp.float32)
    weight = jnp.ones(targets.shape[0]) if label_valid is None else label_valid.astype(jnp.float32)
    total = 0.0
    for logits in level_logits:
        per_image = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), targets).sum(-1)
        total = total + jnp.sum(per_image * weight) / jnp.maximum(jnp.sum(weight), 1.0)
    return total / len(level_logits)
