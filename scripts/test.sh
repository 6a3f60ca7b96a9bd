#!/usr/bin/env bash
# Installs replaydb with every extra into .venv and runs what CI runs:
# lint, format check, mypy --strict, the test suite (docs examples included), the docs build.
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
python -m pip install -q -e ".[dev]"
echo "== ruff"
ruff check src tests examples benchmarks
ruff format --check src tests examples benchmarks
echo "== mypy";  mypy
echo "== pytest"; python -m pytest -q -p no:cacheprovider "$@"
echo "== docs";  NO_MKDOCS_2_WARNING=1 mkdocs build --strict --quiet --site-dir "$(mktemp -d)"
# The TensorFlow half (replaydb.reverb, TF-Agents' own Reverb tests) in its own env, .venv-tf.
if [ "${REPLAYDB_SKIP_TF:-0}" != "1" ]; then
  echo "== tf";  bash scripts/test_tf.sh
fi
