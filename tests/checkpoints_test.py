"""The generator-only restore of inference reads exactly the arrays of training's full restore."""

import dataclasses
import pathlib
import sys

import jax
import numpy as np
import pytest

from facegen_jax.inference.generator_model import GeneratorModel, generator_shapes
from facegen_jax.io import checkpoints
from facegen_jax.train import checkpointing
from facegen_jax.train.state import TrainState, create_train_state

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "experiments" / "configs"))
import tiny  # pylint: disable=wrong-import-position


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A workdir whose checkpoint (step 7) has EMA params unlike the raw ones."""
  path = tmp_path_factory.mktemp("wd")
  config = tiny.get_config()
  state = create_train_state(config)
  state = state.replace(step=state.step + 7, ema_params=jax.tree.map(lambda x: x * 0.5 + 0.25, state.ema_params),
                        g_vars={**state.g_vars, "batch_stats": jax.tree.map(lambda x: x + 3.0,
                                                                           state.g_vars["batch_stats"])})
  manager = checkpoints.make_manager(str(path), keep=3)
  checkpointing.save(manager, state, {"next_index": 28})
  manager.wait_until_finished()
  manager.close()
  (path / "config.json").write_text(config.to_json_best_effort())
  return path, config


def _full_restore(path, config):
  manager = checkpoints.make_manager(str(path), keep=3)
  try:
    state, data = checkpointing.restore_latest(manager, create_train_state(config))
  finally:
    manager.close()
  return jax.device_get(state), data


def _assert_same(got, want):
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


@pytest.mark.parametrize("use_ema", [True, False])
def test_generator_restore_equals_the_full_restore(workdir, use_ema):
  path, config = workdir
  state, data = _full_restore(path, config)
  assert data == {"next_index": 28} and int(state.step) == 7
  variables, info = checkpoints.restore_generator(str(path), generator_shapes(config), use_ema=use_ema)
  want = {"params": state.ema_params if use_ema else state.g_vars["params"],
          "batch_stats": state.g_vars["batch_stats"]}
  _assert_same(variables, want)
  assert info == {"step": 7, "weights": "ema" if use_ema else "raw"}
  model = GeneratorModel.load(str(path), use_ema=use_ema)
  _assert_same(jax.device_get(model.variables), want)
  assert model.info == info


def test_generator_restore_reads_train_state_fields_by_their_names():
  names = {f.name for f in dataclasses.fields(TrainState)}
  assert {checkpoints.GENERATOR_VARS, checkpoints.EMA_PARAMS, checkpoints.STEP} <= names


def test_generator_restore_of_another_config_fails_clearly(workdir, tmp_path):
  path, config = workdir
  other = tiny.get_config()
  other.model.base_features = 16
  with pytest.raises(ValueError, match="does not match this config"):
    checkpoints.restore_generator(str(path), generator_shapes(other))
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    checkpoints.restore_generator(str(tmp_path), generator_shapes(config))
