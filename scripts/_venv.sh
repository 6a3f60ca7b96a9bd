# Sourced by the scripts in this folder: makes .venv (once) and activates it.
# A torch already in .venv is kept (users bring their own); where none is present
# the pinned CPU wheel is installed, since an unpinned torch pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
if ! python -c "import torch" >/dev/null 2>&1; then
  echo "installing torch==2.13.0 (CPU wheel)"
  python -m pip install -q "torch==2.13.0"
fi
