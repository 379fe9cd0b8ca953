"""PreDet's CRPN / CROI / classification losses against PyTorch, torchvision and brute-force numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from frozen_det.models import predet_losses as L
from frozen_det.ops import matching as M
from frozen_det.ops.anchors import multilevel_anchors

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
F = torch.nn.functional
BoxCoder = pytest.importorskip("torchvision.models.detection._utils").BoxCoder


def _xyxy(boxes):
    return torch.as_tensor(np.asarray(boxes, np.float64)[..., [1, 0, 3, 2]])


def _yxyx_deltas(deltas_xyxy):
    return np.asarray(deltas_xyxy)[..., [1, 0, 3, 2]]  # torchvision (dx, dy, dw, dh) -> ours (dy, dx, dh, dw)


def _random_boxes(rng, n, canvas, min_size, max_size):
    hw = rng.uniform(min_size, max_size, (n, 2))
    yx = rng.uniform(0.0, 1.0, (n, 2)) * (canvas - hw)
    return np.concatenate([yx, yx + hw], axis=-1).astype(np.float32)


def test_query_conditioned_scores_equal_torch_grouped_conv():
    rng = np.random.default_rng(0)
    b, h, w, a, d, q = 2, 3, 4, 3, 5, 4
    features = rng.normal(size=(b, h, w, a * d)).astype(np.float32)
    queries = rng.normal(size=(b, q, a * d)).astype(np.float32)
    scores = np.asarray(L.query_conditioned_scores(features, queries, a))
    assert scores.shape == (b, h, w, a, q)
    for i in range(b):
        # torch: input [1, A*D, H, W]; weight [A*Q, D, 1, 1], output channel a*Q + q = query q's a-th vector.
        weight = torch.from_numpy(queries[i].reshape(q, a, d).transpose(1, 0, 2).reshape(a * q, d, 1, 1).copy())
        ref = F.conv2d(torch.from_numpy(features[i].transpose(2, 0, 1)[None].copy()), weight, groups=a)
        ref = ref[0].numpy().reshape(a, q, h, w).transpose(2, 3, 0, 1)
        np.testing.assert_allclose(scores[i], ref, rtol=1e-5, atol=1e-5)
    # The written formula, and the 4A-group regression layout (group a*4 + k = coordinate k of anchor a).
    np.testing.assert_allclose(
        scores, np.einsum("bhwad,bqad->bhwaq", features.reshape(b, h, w, a, d), queries.reshape(b, q, a, d)), atol=1e-5
    )
    deltas = np.asarray(L.query_conditioned_deltas_map(np.tile(features, (1, 1, 1, 4)), np.tile(queries, (1, 1, 4)), a))
    assert deltas.shape == (b, h, w, a, q, 4)
    feat4 = np.tile(features, (1, 1, 1, 4)).reshape(b, h, w, a, 4, d)
    np.testing.assert_allclose(
        deltas, np.einsum("bhwakd,bqakd->bhwaqk", feat4, np.tile(queries, (1, 1, 4)).reshape(b, q, a, 4, d)), atol=1e-5
    )


@pytest.fixture(scope="module")
def crpn_case():
    """One jitted crpn_targets call on a 96x96 canvas (level-2 anchors: 24x24x3) and 2 images."""
    anchors = multilevel_anchors((96, 96), 2, 2).boxes
    rng = np.random.default_rng(1)
    queries = np.stack([_random_boxes(rng, 6, 96.0, 12.0, 60.0) for _ in range(2)])
    valid = np.array([[1, 1, 1, 1, 0, 0], [1, 0, 1, 1, 1, 1]], bool)
    queries[~valid] = 0.0
    targets = jax.jit(L.crpn_targets)(jax.random.key(3), anchors, queries, valid)
    return anchors, queries, valid, jax.tree.map(np.asarray, targets)


def test_crpn_assignment_matches_brute_force(crpn_case):
    anchors, queries, valid, t = crpn_case
    for i in range(queries.shape[0]):
        qv = np.flatnonzero(valid[i])
        # float32 as ours: exact ties (anchors inside a query) must stay ties.
        iou = torchvision.ops.box_iou(_xyxy(anchors).float(), _xyxy(queries[i][qv]).float()).numpy()  # [N, Qv]
        best = iou.max(1)
        labels = np.where(best > 0.7, M.POSITIVE, np.where(best < 0.3, M.NEGATIVE, M.IGNORE))
        query = qv[iou.argmax(1)]
        # Faster R-CNN's rule: each query's best anchor (first of ties) is positive for it; the
        # lower query index wins.
        for j in reversed(range(len(qv))):
            anchor = int(np.argmax(iou[:, j]))
            labels[anchor], query[anchor] = M.POSITIVE, qv[j]
        np.testing.assert_array_equal(t.labels[i], labels)
        np.testing.assert_allclose(t.max_iou[i], best, atol=1e-5)
        overlapping = (labels == M.POSITIVE) | (best > 0)
        np.testing.assert_array_equal(t.query_index[i][overlapping], query[overlapping])
        # No overlap with any query: a random *valid* query (and more than one of them gets used).
        zero = ~overlapping
        assert np.isin(t.query_index[i][zero], qv).all()
        assert len(np.unique(t.query_index[i][zero])) > 1
        # 128 + 128 sample, negatives filling in for missing positives, nothing ignored sampled.
        pos, neg = labels == M.POSITIVE, labels == M.NEGATIVE
        n_pos = min(pos.sum(), 128)
        assert (t.sampled[i] & pos).sum() == n_pos
        assert (t.sampled[i] & neg).sum() == min(neg.sum(), 256 - n_pos)
        assert not (t.sampled[i] & ~(pos | neg)).any()
        # Regression targets = torchvision's BoxCoder with the RPN's unit weights.
        coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
        ref = coder.encode_single(_xyxy(queries[i][t.query_index[i]]), _xyxy(anchors)).numpy()
        np.testing.assert_allclose(t.box_targets[i], _yxyx_deltas(ref), rtol=1e-4, atol=1e-4)


def test_crpn_loss_and_proposals_match_torch(crpn_case):
    anchors, queries, valid, t = crpn_case
    rng = np.random.default_rng(2)
    b, n, q = t.labels.shape + (queries.shape[1],)
    scores = rng.normal(size=(b, n, q)).astype(np.float32)
    deltas = (0.2 * rng.normal(size=(b, n, q, 4))).astype(np.float32)
    cls, box = L.crpn_loss(scores, deltas, L.CrpnTargets(*t))
    rows, cols = np.nonzero(t.sampled)
    k = t.query_index[rows, cols]
    positive = t.labels[rows, cols] == M.POSITIVE
    ref_cls = F.binary_cross_entropy_with_logits(
        torch.from_numpy(scores[rows, cols, k]), torch.from_numpy(positive.astype(np.float32)), reduction="sum"
    ) / len(rows)
    ref_box = F.smooth_l1_loss(
        torch.from_numpy(deltas[rows, cols, k][positive]),
        torch.from_numpy(t.box_targets[rows, cols][positive]),
        beta=1.0 / 9,
        reduction="sum",
    ) / len(rows)
    np.testing.assert_allclose(float(cls), float(ref_cls), rtol=1e-5)
    np.testing.assert_allclose(float(box), float(ref_box), rtol=1e-5)

    score, boxes, best = map(np.asarray, L.crpn_proposals(scores, deltas, anchors, valid))
    masked = np.where(valid[:, None, :], scores, -np.inf)
    np.testing.assert_array_equal(best, masked.argmax(-1))
    np.testing.assert_allclose(score, masked.max(-1))
    coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
    chosen = np.take_along_axis(deltas, best[..., None, None], axis=2)[:, :, 0]
    for i in range(b):
        ref = coder.decode_single(torch.from_numpy(_yxyx_deltas(chosen[i]).copy()), _xyxy(anchors)).numpy()
        np.testing.assert_allclose(boxes[i], ref[:, [1, 0, 3, 2]], rtol=1e-4, atol=1e-3)


def test_croi_samples_match_brute_force():
    rng = np.random.default_rng(4)
    queries = _random_boxes(rng, 5, 96.0, 16.0, 48.0)
    query_valid = np.array([1, 1, 1, 1, 0], bool)
    # Proposals: jittered copies of the queries (positives) plus random boxes, some padded.
    near = queries[:4, None] + rng.normal(0, 3.0, (4, 4, 4)).astype(np.float32)
    proposals = np.concatenate([near.reshape(-1, 4), _random_boxes(rng, 44, 96.0, 4.0, 40.0)])
    proposal_valid = np.ones(len(proposals), bool)
    proposal_valid[-4:] = False
    select = jax.jit(L.select_croi_samples, static_argnames=("num_negatives", "random_positive"))
    s = jax.tree.map(np.asarray, select(jax.random.key(0), proposals, proposal_valid, queries, query_valid, 16))

    iou = torchvision.ops.box_iou(_xyxy(proposals), _xyxy(queries)).numpy()
    iou[~proposal_valid] = -1.0
    iou[:, ~query_valid] = -1.0
    has_positive = (iou > 0.5).any(0) & query_valid
    np.testing.assert_array_equal(s.positive_valid, has_positive)
    np.testing.assert_array_equal(s.positive_index[has_positive], iou.argmax(0)[has_positive])
    negatives = np.flatnonzero(proposal_valid & (iou < 0.5).all(1))
    assert len(negatives) > 16
    assert s.negative_valid.all() and len(set(s.negative_index)) == 16
    assert np.isin(s.negative_index, negatives).all()

    # Fewer negatives than |P_neg| (and fewer proposals than |P_neg|): all of them, then padding.
    s = jax.tree.map(np.asarray, select(jax.random.key(0), proposals, proposal_valid, queries, query_valid, 64))
    np.testing.assert_array_equal(np.sort(s.negative_index[s.negative_valid]), negatives)
    # Random positives are still above 0.5.
    s = jax.tree.map(
        np.asarray, select(jax.random.key(5), proposals, proposal_valid, queries, query_valid, 16, random_positive=True)
    )
    assert (iou[s.positive_index[has_positive], np.flatnonzero(has_positive)] > 0.5).all()


def _info_nce_inputs(seed=0, q=4, p=6, d=8):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(q, d)),
        rng.normal(size=(q, d)),
        rng.normal(size=(p, d)),
        np.array([1, 1, 1, 1, 0, 1], bool)[:p],
        np.array([1, 1, 0, 1], bool)[:q],
    )


def _info_nce_numpy(query, positive, negative, negative_valid, query_valid, tau=0.07):
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
    sims = np.concatenate([np.sum(unit(query) * unit(positive), -1)[:, None], unit(query) @ unit(negative).T], 1)
    sims = sims[:, np.concatenate([[True], negative_valid])] / tau
    log_softmax = sims - np.log(np.exp(sims - sims.max(1, keepdims=True)).sum(1, keepdims=True)) - sims.max(1)[:, None]
    return -log_softmax[query_valid, 0].mean(), sims


def test_info_nce_matches_numpy_torch_and_finite_differences():
    query, positive, negative, negative_valid, query_valid = _info_nce_inputs()
    f32 = lambda x: jnp.asarray(x, jnp.float32)

    def loss_fn(query, positive, negative):
        return L.info_nce_loss(L.contrastive_logits(query, positive, negative, negative_valid), query_valid)

    loss, grads = jax.value_and_grad(loss_fn, argnums=(0, 1, 2))(f32(query), f32(positive), f32(negative))
    ref, sims = _info_nce_numpy(query, positive, negative, negative_valid, query_valid)
    np.testing.assert_allclose(float(loss), ref, rtol=1e-5)
    target = torch.zeros(int(query_valid.sum()), dtype=torch.long)
    ref_torch = F.cross_entropy(torch.from_numpy(sims[query_valid]), target)
    np.testing.assert_allclose(float(loss), float(ref_torch), rtol=1e-5)

    # Gradients: central differences of the float64 numpy reference.
    eps = 1e-6
    for arg, grad in zip((query, positive, negative), grads):
        numeric = np.zeros_like(arg)
        for idx in np.ndindex(arg.shape):
            plus, minus = arg.copy(), arg.copy()
            plus[idx] += eps
            minus[idx] -= eps
            args = lambda x: [x if a is arg else a for a in (query, positive, negative)]
            numeric[idx] = (
                _info_nce_numpy(*args(plus), negative_valid, query_valid)[0]
                - _info_nce_numpy(*args(minus), negative_valid, query_valid)[0]
            ) / (2 * eps)
        np.testing.assert_allclose(np.asarray(grad), numeric, rtol=1e-3, atol=1e-4)
    # Padded negatives and invalid queries receive no gradient.
    assert not np.asarray(grads[2])[~negative_valid].any()
    assert not np.asarray(grads[0])[~query_valid].any()


def test_retrieval_top1():
    logits = np.array([[5.0, 1.0, 2.0, 9.0], [1.0, 3.0, 0.0, 9.0], [4.0, 4.0, 0.0, 9.0], [2.0, 0.0, 0.0, 9.0]])
    negative_valid = np.array([True, True, False])  # the 9.0 column is padding
    logits = np.where(np.concatenate([[True], negative_valid]), logits, L._NEG)
    # hit, miss, tie (miss), hit-but-invalid-query
    assert float(L.retrieval_top1(logits, np.array([True, True, True, False]))) == pytest.approx(1 / 3)


def test_croi_regression_matches_torchvision_box_coder():
    rng = np.random.default_rng(6)
    positive = _random_boxes(rng, 5, 96.0, 10.0, 40.0)
    query = positive + rng.normal(0, 3.0, positive.shape).astype(np.float32)
    valid = np.array([1, 1, 0, 1, 1], bool)
    pred = rng.normal(0, 1.0, (5, 4)).astype(np.float32)
    loss = L.croi_regression_loss(pred, positive, query, valid)
    target = _yxyx_deltas(BoxCoder(weights=(10.0, 10.0, 5.0, 5.0)).encode_single(_xyxy(query), _xyxy(positive)))
    ref = F.smooth_l1_loss(torch.from_numpy(pred[valid]).double(), torch.from_numpy(target[valid]), beta=1.0)
    np.testing.assert_allclose(float(loss), float(ref) * 4, rtol=1e-4)  # summed over 4 coordinates
    proj = rng.normal(size=(5, 4, 3))
    feat = rng.normal(size=(5, 3))
    np.testing.assert_allclose(L.query_conditioned_deltas(feat, proj), np.einsum("qd,qkd->qk", feat, proj), rtol=1e-5)


def test_multilabel_classification_loss_matches_torch():
    rng = np.random.default_rng(7)
    levels = [rng.normal(size=(3, 10)).astype(np.float32) for _ in range(4)]
    targets = (rng.uniform(size=(3, 10)) < 0.2).astype(np.float32)
    label_valid = np.array([True, False, True])
    loss = L.multilabel_classification_loss(levels, targets, label_valid)
    ref = np.mean(
        [
            F.binary_cross_entropy_with_logits(
                torch.from_numpy(x[label_valid]), torch.from_numpy(targets[label_valid]), reduction="sum"
            ).item()
            / label_valid.sum()
            for x in levels
        ]
    )
    np.testing.assert_allclose(float(loss), ref, rtol=1e-5)
