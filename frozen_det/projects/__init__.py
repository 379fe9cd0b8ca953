"""Study projects (as scenic's projects/ and big_vision's configs/proj): one folder per study of
pre-training for detection, each with its rows, its README (the page, whose tables are generated
from the committed records in its results/ folder) and a command line
``python -m frozen_det.projects.<study>`` on the one row runner (runner.py).

The projects read the repository's configs/ (they run from a clone) and their datasets as the
configs describe (docs/usage.md#data)."""

PROJECTS = ("bccd", "transfer", "dap", "predet", "pretraining_data", "detection_pretraining")
