#!/usr/bin/env bash
# The main job on the embedded default (no server): installs replaydb into .venv and
# runs the quick start (fill a buffer, sample, save, load, print a summary).
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
python -m pip install -q -e ".[gym]"
python examples/quickstart.py "$@"
