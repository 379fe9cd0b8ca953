"""Paper Tables 4-6 (LVIS v1): the EfficientNet-B7 + NAS-FPN Cascade Mask R-CNN of
effb7_nasfpn_cascade_mask.py on LVIS, in the two-stage recipe of Ghiasi et al. that the paper
follows (sec. 4.3):

  stage1: ordinary training (softmax CE), 1204 classes (1203 + background), 300 detections per
          image, score threshold 0 and 1000 boxes before NMS (docs/reference.md §5.7, the LVIS settings of
          the same codebase), LVIS evaluation through the official API (federated, APr/c/f);
  stage2: restores stage 1 (--config.train.init_from=STAGE1_WORKDIR) and re-trains only the
          classifier's final layers (every cascade stage's `class_logits`) with a class-balanced
          loss (effective-number weights; `sampling` token: repeat-factor sampling instead), all
          other parameters and BN statistics unchanged.

    python -m frozen_det.train --config configs/paper/effb7_nasfpn_cascade_mask_lvis.py:stage1,frozen --workdir W1
    python -m frozen_det.train --config configs/paper/effb7_nasfpn_cascade_mask_lvis.py:stage2,frozen --workdir W2 \
        --config.train.init_from=W1

Tokens: stage1 | stage2; strategy frozen | finetune | scratch | adapters; copy_paste | vanilla;
second-stage balance loss | sampling. The second stage's length and learning rate are not
published (docs/reference.md §5.7): ours are 1/10 of the first stage's steps with a warm-up + cosine at a
tenth of its learning rate.
"""

import importlib.util
import os

from frozen_det import config_defaults as d


def _coco_config(arg):
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "effb7_nasfpn_cascade_mask.py")
    spec = importlib.util.spec_from_file_location("effb7_nasfpn_cascade_mask", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def get_config(arg=None):
    args = d.parse_arg(
        arg,
        stage=("stage1", ("stage1", "stage2")),
        strategy=("frozen", d.STRATEGIES),
        augment=("copy_paste", ("copy_paste", "vanilla")),
        balance=("loss", ("loss", "sampling")),
    )
    config = _coco_config(f"{args['strategy']},{args['augment']}")
    config.model.num_classes = 1204
    config.model.detections.update(max_detections=300, score_threshold=0.0, pre_nms_top_k=1000)
    config.data.update(
        source="tfds", name="lvis", train_split="train", eval_split="validation", max_instances=300, eval_metric="lvis"
    )
    if args["stage"] == "stage2":
        d.second_stage(
            config,
            balance=args["balance"],
            total_steps=config.train.total_steps // 10,
            base_lr=config.train.schedule.base_lr / 10,
        )
    return d.complete(config)
