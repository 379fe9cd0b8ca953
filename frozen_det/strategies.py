"""Every transfer strategy on one switch: ``train.transfer``.

The strategies of Vasconcelos et al. 2022 (from scratch, fine-tuned, frozen, partly frozen,
frozen + residual adapters, sec. 4.5's FiLM) and initialisation from any run (a classifier, a
DAP or PreDet pre-training, a detector) are spread over four fields: ``model.backbone.freeze``,
``model.backbone.adapters``, ``model.backbone.init_checkpoint`` and ``train.init_from``.
``train.transfer`` names them in one value that every detector, classifier and study config
accepts, ``STRATEGY[,from=RUN]``:

  scratch      random backbone: nothing frozen, no pretrained weights
  finetune     the config's pretrained backbone, everything trained
  frozen       the pretrained backbone frozen (stop-gradient, BatchNorm on its statistics)
  frozen@K     the stem and the first K stages frozen, the rest fine-tuned (freeze-k)
  adapters     frozen + residual adapters after each block (paper sec. 4.5, Table 7)
  film         frozen + FiLM scale and shift after each block
  from=RUN     the backbone (and every other matching layer) from the run in RUN (its workdir):
               train.init_from; the config's pretrained checkpoint is then not loaded

When set, it decides those four fields (the config's own values are overwritten; config.complete
applies it); empty (the default) leaves them as the config gives them.

    python -m frozen_det.train --config configs/bccd/finetune.py:fpn --config.train.transfer=adapters ...
    python -m frozen_det.train --config configs/dap/detector.py:voc --config.train.transfer=frozen@2,from=runs/dap ...
"""

from __future__ import annotations

import dataclasses

# name -> (backbone.freeze, backbone.adapters, keeps the pretrained checkpoint)
STRATEGIES = {
    "scratch": ("none", "none", False),
    "finetune": ("none", "none", True),
    "frozen": ("all", "none", True),
    "adapters": ("all", "residual", True),
    "film": ("all", "film", True),
}
PARTLY_FROZEN = "frozen@"  # frozen@K: stem + first K stages

# Path regex of every leaf outside the backbone ("params/neck/...", "batch_stats/rpn_head/..."):
# as `train.init_exclude`, another run's backbone alone transfers; `train.backbone_from` uses it.
OUTSIDE_THE_BACKBONE = (r"^\w+/(?!backbone/)",)


@dataclasses.dataclass(frozen=True)
class Transfer:
    freeze: str
    adapters: str
    pretrained: bool
    source_run: str


def parse(text: str, field: str = "config.train.transfer") -> Transfer:
    """``STRATEGY[,from=RUN]`` -> what it sets; a ValueError naming the field and the choices."""
    tokens = [t.strip() for t in text.split(",") if t.strip()]
    runs = [t[len("from=") :] for t in tokens if t.startswith("from=")]
    names = [t for t in tokens if not t.startswith("from=")]
    choices = f"{', '.join(STRATEGIES)}, {PARTLY_FROZEN}K, each optionally with ,from=RUN"
    if len(names) != 1 or len(runs) > 1 or (runs and not runs[0]):
        raise ValueError(f"{field}={text!r}: one strategy and at most one from=RUN; choose {choices}")
    name, source = names[0], (runs[0] if runs else "")
    if name.startswith(PARTLY_FROZEN) and name[len(PARTLY_FROZEN) :].isdigit():
        freeze, adapters, pretrained = name[len(PARTLY_FROZEN) :], "none", True
    elif name in STRATEGIES:
        freeze, adapters, pretrained = STRATEGIES[name]
    else:
        raise ValueError(f"{field}={text!r}: unknown strategy {name!r}; choose {choices}")
    if source and not pretrained:
        raise ValueError(f"{field}={text!r}: scratch starts from random weights, not from a run")
    return Transfer(freeze, adapters, pretrained, source)


def apply(backbone, train) -> None:
    """Sets the backbone section's freeze / adapters / init_checkpoint and ``train.init_from`` from
    ``train.transfer`` (nothing when it is empty). A pretrained strategy without ``from=RUN``
    loads the backbone's own ``init_checkpoint``: a config without one is refused rather than
    silently trained from random weights."""
    if not train.transfer:
        return
    if backbone is None:
        raise ValueError(f"config.train.transfer={train.transfer!r}: this model has no backbone to transfer")
    t = parse(train.transfer)
    backbone.freeze = t.freeze
    backbone.adapters = t.adapters
    if t.pretrained and not t.source_run and not backbone.init_checkpoint:
        raise ValueError(
            f"config.train.transfer={train.transfer!r}: the config names no pretrained weights "
            "(model.backbone.init_checkpoint is empty); set them, or add from=RUN"
        )
    if not t.pretrained or t.source_run:
        backbone.init_checkpoint = ""
    if t.source_run:
        train.init_from = t.source_run
