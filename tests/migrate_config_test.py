"""experiments/migrate_config.py: an export whose config.json predates the model options is refused
by the model factory with the fix in the message; migrated, it loads the same model."""

import functools
import importlib.util
import json
import os
import subprocess
import sys

import jax
import pytest

from facegen_jax.inference.generator_model import GeneratorModel, init_generator_variables
from facegen_jax.models import factory
from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "experiments" / "configs"))
import tiny  # noqa: E402  pylint: disable=wrong-import-position

SCRIPT = REPO_ROOT / "experiments" / "migrate_config.py"


@functools.lru_cache(maxsize=1)  # once: the script defines absl flags
def _migrate_lib():
  spec = importlib.util.spec_from_file_location("migrate_config", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_old_export_is_refused_then_migrated_then_loads(tmp_path):
  config = tiny.get_config()
  export = str(tmp_path / "export")
  GeneratorModel(config, init_generator_variables(config, jax.random.PRNGKey(0))).export(export)
  config_path = os.path.join(export, "config.json")
  with open(config_path) as f:
    new = json.load(f)
  old = json.loads(json.dumps(new))
  for key in factory.ADDED_MODEL_KEYS:
    del old["model"][key]
  with open(config_path, "w") as f:
    json.dump(old, f)

  with pytest.raises(ValueError, match=r"lacks conv_impl, level_order, motion.*migrate_config.py --path="):
    GeneratorModel.load(export)

  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, str(SCRIPT), f"--path={export}"], env=env, capture_output=True, text=True,
                        timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "added model.level_order = 'spade'" in proc.stdout and "added model.motion = 'none'" in proc.stdout
  with open(config_path + ".bak") as f:
    assert json.load(f) == old
  with open(config_path) as f:
    migrated = json.load(f)
  assert migrated == new  # tiny.py's model keys are the old behaviour's values
  assert {k: migrated["model"][k] for k in ("level_order", "conv_impl", "motion")} == _migrate_lib().OLD_BEHAVIOUR

  assert _migrate_lib().migrate(export) == {}  # idempotent: nothing left to add, file untouched
  with open(config_path) as f:
    assert json.load(f) == migrated
  assert sorted(os.listdir(export)) == ["config.json", "config.json.bak", "export.json", "generator.msgpack"]
  assert GeneratorModel.load(export).resolution == config.resolution
