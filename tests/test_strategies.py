"""train.transfer, every transfer strategy on one switch (frozen_det/strategies.py): each named
value gives exactly the config of the study's own strategy file, freeze-k and from=RUN set
their fields, bad values are one error naming the field, and complete() stays idempotent."""

import pytest

from frozen_det import strategies
from frozen_det.config import complete
from frozen_det.projects.runner import repo_config
from frozen_det.tasks import task_class


def _bccd(strategy: str, transfer: str = ""):
    config = repo_config(f"configs/bccd/{strategy}.py:fpn")
    config.train.transfer = transfer
    return complete(config)


@pytest.mark.parametrize("name", sorted(strategies.STRATEGIES))
def test_each_value_equals_the_strategy_config_file(name):
    switched = _bccd("finetune", name).to_dict()
    own = _bccd(name).to_dict()
    assert switched["train"].pop("transfer") == name
    own["train"].pop("transfer")
    assert switched == own


def test_partly_frozen_and_from_a_run():
    config = _bccd("finetune", "frozen@2")
    assert (config.model.backbone.freeze, config.model.backbone.adapters) == ("2", "none")
    assert config.model.backbone.init_checkpoint == "package:efficientnet_lite0"
    patterns = task_class("two_stage")(config).frozen_patterns()
    assert patterns and patterns != task_class("two_stage")(_bccd("frozen")).frozen_patterns()
    config = _bccd("frozen", "adapters,from=/runs/dap")
    assert config.train.init_from == "/runs/dap" and config.model.backbone.init_checkpoint == ""
    assert (config.model.backbone.freeze, config.model.backbone.adapters) == ("all", "residual")
    assert complete(config).to_dict() == config.to_dict()  # idempotent


def test_a_classifier_takes_the_same_switch():
    config = repo_config("configs/classification/bccd_crops.py:finetune")
    config.train.transfer = "film"
    config = complete(config)
    assert (config.model.backbone.freeze, config.model.backbone.adapters) == ("all", "film")


@pytest.mark.parametrize(
    "value, message",
    [
        ("frozen,finetune", "one strategy"),
        ("from=/runs/x", "one strategy"),
        ("frozen,from=", "one strategy"),
        ("freeze", "unknown strategy 'freeze'"),
        ("frozen@two", "unknown strategy"),
        ("scratch,from=/runs/x", "not from a run"),
    ],
)
def test_bad_values_name_the_field(value, message):
    with pytest.raises(ValueError, match=message) as error:
        _bccd("finetune", value)
    assert str(error.value).startswith(f"config.train.transfer={value!r}")


def test_a_pretrained_strategy_without_weights_is_refused():
    with pytest.raises(ValueError, match="names no pretrained weights"):
        _bccd("scratch", "finetune")
    assert _bccd("scratch", "finetune,from=/runs/cls").train.init_from == "/runs/cls"
