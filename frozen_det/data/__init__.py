"""Input pipelines: sources -> augmentation -> fixed-shape numpy batches, one layout per kind of
example on one engine.

    frozen_det/data/
      pipeline.py, position.py   the engine: seeded, sharded, resumable train / eval iterators
                                 (a `Kind` says what one kind of example needs), the saved
                                 (epoch, offset) position, batch stacking and eval padding
      source.py, tfds.py         what every source shares: records, decoding, DataError, image
                                 file listing; TFDS builders and split reading
      sections.py                what every kind's `config.data` shares: ImageNet mean / std,
                                 `resolve()` (batch size, the source's location)
      class_stats.py             per-class counts of a split: repeat factors, class weights
      detection/                 boxes (and masks): config, sources (TFDS, COCO / VOC folders),
                                 augment (flip, LSJ), copy_paste, example, k-shot, pipelines
      classification/            image labels: config, sources, transforms, subsets / label
                                 sets, the WordNet taxonomy, pipelines
      two_view/                  PreDet's two augmented views with aligned query boxes: config,
                                 views, sources, region proposals (+ their cache), pipelines
      offline/                   datasets that need no download: the synthetic shapes (TFDS
                                 builder), scenes (drawing helpers), objects on canvases, the
                                 long-tailed LVIS-format shapes, Debian's Fashion-MNIST reader
      show.py                    `python -m frozen_det.data.show`: draw augmented examples

Where a new thing goes:
- a new dataset of an existing kind is a source in that kind's sources module (and a value of
  its `data.source`); a dataset generated or read offline for tests and studies goes to
  offline/ and is read through an existing source (write COCO / VOC folders or a TFDS builder);
- an augmentation belongs to the kind whose example it changes (detection/augment.py for
  geometry that moves boxes and masks, classification/transforms.py, two_view/views.py); it
  draws its random numbers from the example's stateless seed (`pipeline.sub_seed`), never from
  global state, so resumed runs see the same examples;
- a new kind of example (another task's batch) is a subpackage with config.py (its schema,
  completed through `sections.resolve`), its sources and a pipelines.py that declares its
  `pipeline.Kind`; the task that reads it names the subpackage (frozen_det.tasks).

Each kind's batch contract is in its package's docstring (detection: frozen_det.data.detection).
The package never imports frozen_det.models, frozen_det.training or frozen_det.tasks, and keeps
TensorFlow off accelerators (``tf.config.set_visible_devices([], "GPU")`` before building
pipelines).
"""
