"""Static-shape detection ops: pure ``jax.numpy`` functions, jittable and vmappable.

Modules (each with one job):

* :mod:`~frozen_det.ops.boxes` -- area, IoU, clipping, box coding, format conversions.
* :mod:`~frozen_det.ops.anchors` -- multilevel anchor grid (numpy, static).
* :mod:`~frozen_det.ops.matching` -- IoU-band matching of anchors / ROIs to ground truth.
* :mod:`~frozen_det.ops.sampling` -- fixed-size balanced positive/negative sampling.
* :mod:`~frozen_det.ops.roi_align` -- multilevel RoIAlign and ``crop_and_resize``.
* :mod:`~frozen_det.ops.nms` -- padded greedy NMS with a fixed output size.
* :mod:`~frozen_det.ops.postprocess` -- per-class NMS of second-stage outputs.
* :mod:`~frozen_det.ops.masks` -- mask targets and pasting masks into the image.

Conventions: boxes are ``[ymin, xmin, ymax, xmax]`` absolute canvas pixels; padding is carried
by explicit boolean masks; every output has a static shape. This package imports only jax and
numpy.
"""

from frozen_det.ops import anchors, boxes, masks, matching, nms, postprocess, roi_align, sampling

__all__ = ["anchors", "boxes", "masks", "matching", "nms", "postprocess", "roi_align", "sampling"]
