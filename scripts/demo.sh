#!/usr/bin/env bash
# The main job on the embedded default (no server): installs replaydb into .venv, builds a
# CartPole-v1 starter buffer and trains a small DQN from it with replaydb sampling, printing
# a learning curve (a few minutes on two CPU cores; pass --smoke for a few seconds).
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
python -m pip install -q -e ".[gym]"
python examples/dqn_cartpole.py "$@"
