"""The user cache folder of facegen-jax (converted weights, the compiled oneDNN library)."""

import os
import pathlib

ENV_VAR = "FACEGEN_CACHE_DIR"


def cache_dir() -> pathlib.Path:
  """`$FACEGEN_CACHE_DIR` if set, else `$XDG_CACHE_HOME/facegen_jax`, else `~/.cache/facegen_jax`."""
  if os.environ.get(ENV_VAR):
    return pathlib.Path(os.environ[ENV_VAR])
  return pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache") / "facegen_jax"
