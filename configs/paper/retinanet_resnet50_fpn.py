"""RetinaNet ResNet-50 FPN (P3-P7) on COCO at 1024x1024 with large-scale jitter: Lin et al.,
"Focal Loss for Dense Object Detection" (ICCV 2017) as frozen_det.models.config.retinanet_defaults,
the one-stage counterpart of the paper's rows (Vasconcelos et al. 2022 study two-stage
detectors; this asks whether their frozen-backbone finding carries over to a one-stage one).

    python -m frozen_det.train --config configs/paper/retinanet_resnet50_fpn.py:72ep,frozen --workdir W
    python -m frozen_det.resources --config configs/paper/retinanet_resnet50_fpn.py:finetune

Argument tokens: schedule 72ep | 600ep; strategy frozen | finetune (also scratch | adapters |
film). Data, augmentation and schedule are the two-stage paper configs' (TFDS coco/2017, LSJ
[0.1, 2.0] + flip, batch 64, docs/reference.md §1.2, §2.11); the learning rate is TF Model
Garden's RetinaNet rate (0.32 at batch 256, tensorflow/models official/vision/configs/retinanet.py
`retinanet_resnetfpn_coco`) scaled linearly to batch 64. Backbone weights: torchvision's ImageNet
ResNet-50 converted with `tools/convert_checkpoint.py --format torchvision_resnet --depth 50
--input resnet50-0676ba61.pth --output weights/resnet50_tv`.

Expected cost (an estimate from XLA's FLOP count, not a measured run): 33.9M parameters, 10.4M
trainable when frozen (FPN and subnets). The train step at 1024x1024 costs 1,133 GFLOPs per
image frozen and 1,482 fine-tuned (`python -m frozen_det.resources`, measured with TF Model
Garden's 91-wide classifier before the config took our 81 COCO classes; the class subnet's last
conv then costs about 2% more of the frozen step): the subnets on P3-P7
outweigh the ResNet-50, so freezing saves only 24% of it. 72 epochs (8.5M
images) are 9.6e18 / 1.3e19 FLOPs: about 75 / 95 TPU v3 chip-hours at 30% of the bf16 peak
(4.5 / 6 hours on a v3-32); 600 epochs about 8.3 times that.
"""

from frozen_det import config_defaults as d


def get_config(arg=None):
    args = d.parse_arg(arg, schedule=("72ep", d.PAPER_SCHEDULES), strategy=("frozen", d.STRATEGIES))
    config = d.ConfigDict()
    config.model = d.retinanet_model(d.backbone(type="resnet", depth=50), num_classes=d.COCO_CLASSES)
    d.apply_strategy(config.model, args["strategy"], "weights/resnet50_tv")
    config.data = d.coco_data(canvas=1024)
    config.train = d.paper_train(args["schedule"])
    config.train.schedule.base_lr = 0.32 * 64 / 256
    return d.complete(config)
