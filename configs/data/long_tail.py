"""The generated long-tailed LVIS-format shapes (frozen_det.data.offline.long_tail): 128 px, 20
classes (3 frequent, 5 common, 12 rare by training images), boxes + masks, LVIS evaluation
(federated; data.eval_metric "auto" picks it from the r/c/f frequencies). Generate it first
(about 5 s), then pass its folder as the argument or as --config.data.path:

    python -m frozen_det.data.offline.long_tail --output /tmp/long_tail
    python -m frozen_det.data.show --config configs/data/long_tail.py:/tmp/long_tail --num 8 --output /tmp/lt

max_instances 16 fits the generator's default max_objects=6 with room for Copy-Paste; raise it
with --config.data.max_instances if the dataset was generated with more objects per image.
"""

from frozen_det import config_defaults as d


def get_config(arg=None):
    config = d.ConfigDict()
    config.data = d.ConfigDict(
        dict(
            source="coco_folder",
            path=arg or "",
            train_split="train",
            eval_split="val",
            coco_files=dict(
                train=("annotations/lvis_v1_train.json", "train"), val=("annotations/lvis_v1_val.json", "val")
            ),
            canvas=128,
            batch_size=8,
            eval_batch_size=8,
            max_instances=16,
            with_masks=True,
            mask_size=28,
            augment=dict(hflip=True, scale_min=0.5, scale_max=2.0),
        )
    )
    return d.complete(config)
