"""Datasets that need no download, for tests, demos and the studies' miniatures: the synthetic
shapes (a TFDS builder), the drawing helpers they share (scenes), Fashion-MNIST items on
canvases (ImageNet-like and VOC-like COCO folders), the long-tailed LVIS-format shapes, and the
reader of Debian's Fashion-MNIST files. Each writes or reads a format an existing source reads."""
