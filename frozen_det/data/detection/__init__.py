"""Detection input pipelines: sources -> augmentation -> fixed-shape numpy batches.

    from frozen_det.data import detection
    train = detection.build_train_pipeline(config)      # infinite, per-process batches
    batch = next(train)
    state = train.state()                               # small JSON-able dict
    train2 = detection.build_train_pipeline(config); train2.restore(state)   # same next batches
    evals = detection.build_eval_pipeline(config)       # one ordered pass per iter(), padded
    gt = evals.source.coco_ground_truth(evals.split)    # COCO-format dict for pycocotools
    info = evals.source.info                            # class names, num_classes, category ids

Config fields and defaults: :func:`frozen_det.data.detection.config.defaults`.

Batch contract (per process; B = global batch // process count, N = data.max_instances,
H = W = data.canvas, C = num_classes, M = data.mask_size):

==========================  ===================  =============================================
key                         dtype / shape        meaning
==========================  ===================  =============================================
image                       float32 [B,H,W,3]    RGB normalised by data.mean / data.std on
                            (bfloat16 by         [0, 255]; padding is 0 (= the mean colour)
                            data.image_dtype)
boxes                       float32 [B,N,4]      [ymin, xmin, ymax, xmax], canvas pixels;
                                                 padding rows 0
classes                     int32 [B,N]          1..C; 0 = padding
valid                       bool [B,N]           real instance
is_crowd                    bool [B,N]           train: always False (crowds dropped);
                                                 eval: crowd / VOC-difficult instances, valid
masks                       float32 [B,N,M,M]    only with data.with_masks: instance mask
                            (uint8 0..255 by     cropped inside its box and resized
                            data.masks_dtype)    bilinearly (soft), docs/reference.md §2.10
canvas_masks                uint8 [B,N,H,W]      only with data.canvas_masks: 0/1 full-canvas
image_info                  float32 [B,4,2]      [[orig h, w], [canvas h, w], [scale y, x],
                                                 [offset y, x]]: canvas = orig*scale - offset;
                                                 inverse: ops.boxes.to_original_boxes
image_id                    int64 [B]            dataset image id (-1 for eval padding)
image_labels                float32 [B,C+1]      multi-hot of the (non-crowd) classes present
num_dropped_instances       int32 [B]            instances that did not fit in N
num_bad_boxes               int32 [B]            boxes removed as degenerate / non-finite
example_valid               bool [B]             False for eval padding examples
==========================  ===================  =============================================

Train order (docs/reference.md §2.11 / §5.6): decode, sanitise boxes, drop crowds, hflip (p=0.5),
large-scale jitter (scale U[scale_min, scale_max] of the canvas, random crop, pad), drop empty
boxes, Copy-Paste if enabled, box-aligned mask crops, pad to N. Eval: longer side resized to
the canvas, padded bottom/right, nothing dropped.

"""

from frozen_det.data.detection import config
from frozen_det.data.detection.pipelines import DETECTION, build_eval_pipeline, build_train_pipeline
from frozen_det.data.detection.sources import DatasetInfo, build_source

__all__ = ["config", "DETECTION", "DatasetInfo", "build_eval_pipeline", "build_source", "build_train_pipeline"]
