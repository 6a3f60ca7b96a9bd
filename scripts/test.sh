#!/usr/bin/env bash
# Installs replaydb with every extra into .venv and runs what CI runs:
# lint, format check, mypy --strict, the test suite (docs examples included), the docs build.
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
python -m pip install -q -e ".[dev]"
# Velora 0.2.0 for the drop-in test (tests/test_velora_agents.py). --no-deps: its
# gymnasium[box2d,mujoco,other] and safetensors<0.6 pins are not needed to run its
# agents on classic-control envs; the deps it imports are in the dev extra.
if python -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  python -m pip install -q --no-deps "velora==0.2.0"
  export REPLAYDB_REQUIRE_VELORA=1
fi
echo "== ruff"
ruff check src tests tests_tf examples benchmarks
ruff format --check src tests tests_tf examples benchmarks
echo "== mypy";  mypy
echo "== pytest"; python -m pytest -q -p no:cacheprovider "$@"
echo "== docs";  NO_MKDOCS_2_WARNING=1 mkdocs build --strict --quiet --site-dir "$(mktemp -d)"
# The TensorFlow half (replaydb.reverb, TF-Agents' own Reverb tests) in its own env, .venv-tf.
if [ "${REPLAYDB_SKIP_TF:-0}" != "1" ]; then
  echo "== tf";  bash scripts/test_tf.sh
fi
