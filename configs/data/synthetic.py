"""Synthetic shapes (the offline default): 128x128 images, 3 classes, instance masks.

    python -m frozen_det.data.show --config configs/data/synthetic.py --num 8 --output /tmp/syn

The dataset is generated on first use into ~/tensorflow_datasets/synthetic_shapes (a few
seconds). Argument: "copy_paste" turns Copy-Paste on.
"""

from frozen_det import config_defaults as d


def get_config(arg=None):
    config = d.ConfigDict()
    config.data = d.ConfigDict(
        dict(
            source="synthetic",
            canvas=128,
            batch_size=8,
            eval_batch_size=8,
            max_instances=16,
            with_masks=True,
            mask_size=28,
            augment=dict(hflip=True, scale_min=0.5, scale_max=2.0, copy_paste=arg == "copy_paste"),
            synthetic=dict(image_size=128, num_train=256, num_validation=64, num_classes=3, max_objects=6, data_dir=""),
        )
    )
    return d.complete(config)
