"""Shared test fixtures."""

import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def shared_faces_dir() -> pathlib.Path:
  """The real faces from ../shared/faces (or $FACEGEN_SHARED_FACES)."""
  return pathlib.Path(os.environ.get("FACEGEN_SHARED_FACES", REPO_ROOT.parent / "shared" / "faces"))


@pytest.fixture(scope="session")
def shared_faces():
  path = shared_faces_dir()
  if not (path / "MANIFEST.tsv").exists():
    if os.environ.get("CI"):  # CI always has ../shared beside the clone: a missing folder is an error
      pytest.fail(f"real faces not found at {path} (CI=true); set FACEGEN_SHARED_FACES")
    pytest.skip(f"real faces not found at {path}; set FACEGEN_SHARED_FACES")
  return path


def pytest_configure(config):
  """Persistent XLA compilation cache: the train-step tests compile the same programs."""
  del config
  import jax  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_compilation_cache_dir", os.environ.get("FACEGEN_JAX_CACHE", "/tmp/facegen_jax_xla_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
