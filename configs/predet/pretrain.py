"""PreDet pre-training (Ramanathan et al., "PreDet: Large-scale weakly supervised pre-training for
detection", ICCV 2021) of a tiny Faster R-CNN's layers on a folder of unlabelled images, then
transfer into the detector of configs/tiny/two_stage.py (same layers; the backbone's width set
to this file's), which restores the backbone, FPN, RPN convolution and box head (162 leaves) and
leaves the RPN's and box head's output layers fresh:

    python -m frozen_det.train --config configs/predet/pretrain.py --workdir /tmp/predet \\
        --config.data.path=IMAGE_FOLDER
    python -m frozen_det.train --config configs/tiny/two_stage.py --workdir /tmp/det \\
        --config.model.backbone.width=0.25 --config.train.init_from=/tmp/predet

Argument: the losses switched on, comma-separated tokens of "crpn" (L_crpn), "croi" (L_info), "reg"
(L_croi-reg), "mlc" (L_cls, the multi-label classification loss); the paper's Table 1 rows are e.g.
"mlc", "crpn,croi,reg", "mlc,croi", "mlc,croi,reg", "mlc,crpn,croi,reg". Without a loss token:
"crpn,croi,reg" (image folders have no labels). "mlc" needs image labels: it switches the data to a
COCO folder with `data.labels=True` and `model.predet.num_labels=80` (override both for another
dataset, e.g. ImageNet from TFDS: `--config.data.source=tfds --config.data.name=imagenet2012
--config.model.predet.num_labels=1000`). Add "lite0" to pre-train the layers of
configs/canvases/detector.py:lite0 instead (the packaged ImageNet EfficientNet-Lite0 backbone,
32-channel FPN P2-P5, 64-filter box head with two 128-wide FCs) on 128 x 128 views with the Lite0's
mean 127 / std 128: the PreDet rows of frozen_det/projects/predet, which transfer into
configs/dap/detector.py:voc,lite0 / bccd,lite0 and restore every shared leaf there. Add "proposals"
to draw the queries from cached region proposals (`--config.data.proposals_file=cache.npz`,
frozen_det.data.two_view.proposals) instead of random boxes.

Tiny CPU defaults: ResNet-18 at width 0.25, 32-channel FPN P2-P5 and heads, 64x64 views, 8 queries,
64 negatives, batch 8. On a shared 2-core CPU: ~40 s to compile, 1.3 steps/s; on 16 generated
images of coloured rectangles, 150 steps took the CRPN loss from 0.68 to 0.23, its query recall
(IoU > 0.5) from 0.45 to 0.72 and InfoNCE from 4.5 to 3.3 (held-out retrieval top-1 0.23, chance
0.05). The paper: ResNeXt-101 FPN, 480x480 views, 16 queries, |P_neg| 512, batch 1024, 540k
iterations.
"""

from configs.canvases import detector as canvases_detector
from frozen_det import config_defaults as d

LOSSES = {"crpn": "crpn", "croi": "croi", "reg": "croi_regression", "mlc": "multilabel"}


def get_config(arg=None):
    tokens = [t for t in (arg or "").split(",") if t]
    unknown = sorted(set(tokens) - set(LOSSES) - {"proposals", "lite0"})
    if unknown:
        raise ValueError(f"config argument {unknown}: tokens are {sorted(LOSSES)}, 'proposals' and 'lite0'")
    losses = [t for t in tokens if t in LOSSES] or ["crpn", "croi", "reg"]
    switches = {field: token in losses for token, field in LOSSES.items()}

    lite0 = "lite0" in tokens
    if lite0:
        canvases = canvases_detector.get_config("lite0")
        detector = canvases.model
    else:
        detector = d.tiny_two_stage_model(num_classes=4)
        detector.backbone.width = 0.25
        detector.neck.max_level = 5
    config = d.ConfigDict()
    config.model = d.predet_model(
        detector,
        num_queries=8,
        num_negatives=64,
        crpn_dims=16,
        embedding_dims=64,
        regression_dims=32,
        crpn_batch_size_per_image=64,
        num_random_proposals=64,
        num_labels=80 if switches["multilabel"] else 0,
        **switches,
    )
    config.data = d.ConfigDict(
        dict(
            source="coco_folder" if switches["multilabel"] else "image_folder",
            labels=switches["multilabel"],
            image_size=128 if lite0 else 64,
            eval_batch_size=8,
            num_eval_examples=64,
            queries="proposals" if "proposals" in tokens else "random",
        )
    )
    config.train = d.train(batch_size=8, total_steps=300, boundaries=(240,), base_lr=0.02, warmup_steps=20)
    return d.complete(config)
