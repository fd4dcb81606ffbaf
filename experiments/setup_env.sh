#!/usr/bin/env bash
# Creates ./.venv and installs facegen-jax with its test and video extras (CPU JAX).
# GPU/TPU installs: see BUILD.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev,video]"
.venv/bin/python -c "import jax, flax, facegen_jax; print('facegen-jax', facegen_jax.__version__, 'on', jax.devices())"
