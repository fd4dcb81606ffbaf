#!/usr/bin/env bash
# Creates ./.venv and installs facegen-jax with its test and video extras and the jaxlib of
# FACEGEN_ACCELERATOR: cpu (default: CPU JAX and the oneDNN convolutions), cuda12 or tpu (BUILD.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ACCELERATOR=${FACEGEN_ACCELERATOR:-cpu}
case "$ACCELERATOR" in
  cpu|cuda12|tpu) ;;
  *) echo "error: FACEGEN_ACCELERATOR=$ACCELERATOR: expected cpu, cuda12 or tpu" >&2; exit 2 ;;
esac
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[$ACCELERATOR,dev,video]"
.venv/bin/python -c "import jax, flax, facegen_jax; print('facegen-jax', facegen_jax.__version__, 'on', jax.devices())"
