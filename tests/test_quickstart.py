"""configs/quickstart.py (the main job's config) reads its classes from the data; the job itself
runs in tests/test_end_to_end.py."""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_config_reads_classes_from_the_data(voc_folder):
    spec = importlib.util.spec_from_file_location("quickstart_config", os.path.join(ROOT, "configs", "quickstart.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.get_config().model.num_classes == 4  # synthetic: 3 shapes + background
    config = module.get_config(f"voc={voc_folder},canvas=256")
    # bird, cat, dog, person (the names found, sorted) + background
    assert config.model.num_classes == 5 and config.data.source == "voc_folder" and config.data.canvas == 256
    assert module.get_config(f"voc={voc_folder},classes=cat/dog").model.num_classes == 3
    assert module.get_config("tfds=lvis").model.detections.max_detections == 300
    with pytest.raises(ValueError, match="voc=DIR"):
        module.get_config("bogus")
