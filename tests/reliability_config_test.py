"""Bad config values are refused before anything compiles, one line per key naming what is allowed."""

import importlib
import pathlib
import sys
import time

import pytest

from facegen_jax.train import config_check, loop

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from train_test import tiny_config as _tiny  # noqa: E402  pylint: disable=wrong-import-position


@pytest.mark.parametrize("name", ["tiny", "demo", "faces"])
def test_shipped_configs_are_valid(name):
  assert config_check.problems(importlib.import_module(name).get_config(), devices=1) == []


@pytest.mark.parametrize("key,value,message", [
    ("optimizer.g_learning_rate", -1e-4, "config.optimizer.g_learning_rate=-0.0001: must be a positive finite number"),
    ("num_train_steps", -5, "config.num_train_steps=-5: must be a positive integer"),
    ("global_batch_size", 0, "config.global_batch_size=0: must be a positive multiple of the device count 1"),
    ("checkpoint_every_steps", 0, "config.checkpoint_every_steps=0: must be a positive integer"),
    ("resolution", 100, "config.resolution=100: must be a power of two (64, 128, 256, ...)"),
    ("model.norm", "layer", "config.model.norm='layer': must be one of 'batch', 'instance', 'none'"),
    ("model.motion", "flow", "config.model.motion='flow': must be one of 'none', 'landmark_tps', 'landmark_pwa'"),
    ("loss.adversarial_kind", "wgan", "config.loss.adversarial_kind='wgan': must be one of 'hinge', 'non_saturating'"),
    ("data.source", "folder", "config.data.source='folder': must be one of 'synthetic', 'tfds'"),
])
def test_each_bad_value_is_one_line_naming_key_and_allowed_values(key, value, message):
  assert config_check.problems(_tiny(**{key: value})) == [message]


def test_batch_must_divide_over_devices_and_processes():
  assert config_check.problems(_tiny(global_batch_size=6), devices=4, processes=2) == [
      "config.global_batch_size=6: must be a positive multiple of the device count 4 and of the process count 2"]
  assert config_check.problems(_tiny(global_batch_size=8), devices=4, processes=2) == []


def test_train_refuses_before_compiling_or_writing(tmp_path):
  config = _tiny(global_batch_size=0, **{"optimizer.d_learning_rate": -1.0})
  start = time.time()
  with pytest.raises(config_check.ConfigError) as error:
    loop.train(config, str(tmp_path / "wd"))
  assert str(error.value).splitlines() == [
      "config.optimizer.d_learning_rate=-1.0: must be a positive finite number",
      "config.global_batch_size=0: must be a positive multiple of the device count 1"]
  assert time.time() - start < 5 and not (tmp_path / "wd").exists()
