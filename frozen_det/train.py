"""Train (or resume) a run of any task (`config.model.type`).

    python -m frozen_det.train --config configs/tiny/two_stage.py --workdir /tmp/run [--config.train.total_steps=50]

Running the same command again after an interruption (SIGTERM or Ctrl-C saves a checkpoint of
the step the run is on; Ctrl-C then exits with status 130) resumes from the latest readable
checkpoint in WORKDIR/checkpoints, including the input pipeline's position. Mistakes in the
config or flags print one line and exit 2 (`--verbosity=1`: the traceback;
frozen_det.runtime).
"""

from __future__ import annotations

import sys

from absl import flags
from ml_collections import config_flags

from frozen_det.runtime import prepare_entry_point, run_main


def main(argv):
    del argv
    from frozen_det.training.loop import train_and_evaluate

    train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    prepare_entry_point(sys.argv)  # before anything (the config file too) imports TensorFlow
    # Flags are defined only when run as a program, so the module can be imported (tests,
    # notebooks) beside other entry points that define the same flag names.
    _CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
    _WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and evaluations.")
    flags.mark_flags_as_required(["config", "workdir"])
    run_main(main)
