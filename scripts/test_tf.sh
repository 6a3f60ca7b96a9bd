#!/usr/bin/env bash
# The TensorFlow half of CI: builds .venv-tf once (TensorFlow 2.15 CPU, TF-Agents 0.19.0,
# torch 2.13.0 CPU, numpy<2; no dm-reverb), installs replaydb into it and runs tests_tf/
# (replaydb.reverb call by call, TF-Agents' own Reverb tests with reverb -> replaydb.reverb,
# the sbsim workflow, the DQN example, the docs page). An existing .venv-tf is reused.
# Arguments go to pytest, e.g. `scripts/test_tf.sh -m "not slow"` skips TF-Agents' tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON_TF:-$(command -v python3.11 || command -v python3)}"
if [ ! -x .venv-tf/bin/python ]; then
  "$PY" -c 'import sys; assert (3, 9) <= sys.version_info[:2] <= (3, 11), "TF-Agents 0.19 needs Python 3.9-3.11; set PYTHON_TF"'
  "$PY" -m venv .venv-tf
fi
python() { .venv-tf/bin/python "$@"; }
if ! python -c "import tf_agents, torch" >/dev/null 2>&1; then
  echo "== building .venv-tf (TensorFlow, TF-Agents, torch 2.13.0 CPU)"
  python -m pip install -q --upgrade pip
  # tf-agents pins typing-extensions==4.5.0, which torch>=2.2 outgrows: separate steps.
  python -m pip install -q "tensorflow-cpu==2.15.*" "tf-agents==0.19.0" \
    "tensorflow-probability==0.23.*" "tf-keras==2.15.*"
  python -m pip install -q "torch==2.13.0" "numpy<2"
  python -m pip install -q "safetensors>=0.4" "tqdm>=4.60" "gymnasium>=1.0" \
    "pytest>=8" "pytest-timeout>=2.2" "hypothesis>=6.100" "cramjam>=2.7" mock rlds portpicker
fi
if python -c "import importlib.util as u, sys; sys.exit(u.find_spec('reverb') is None)"; then
  echo "dm-reverb is installed in .venv-tf; these tests need reverb -> replaydb.reverb" >&2
  echo "(remove it: .venv-tf/bin/pip uninstall dm-reverb)" >&2
  exit 1
fi
python -m pip install -q --no-deps -e .
echo "== pytest tests_tf"
python -m pytest -q -p no:cacheprovider -c tests_tf/pytest.ini tests_tf "$@"
