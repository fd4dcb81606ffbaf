"""Damaged checkpoints are caught and survived; a mismatched config leaves the workdir untouched.

A tiny run of 4 steps (checkpoints at 2 and 4) is copied, its newest step damaged in one of the
ways a disk, a copy or a kill damages files; training the copy again must set step 4 aside with
one warning, resume from step 2 and end bit-identical to the undamaged run.
"""

import hashlib
import logging
import os
import pathlib
import shutil
import sys

import jax
import numpy as np
import pytest

from facegen_jax.inference.generator_model import GeneratorModel
from facegen_jax.io import checkpoints
from facegen_jax.train import checkpointing, loop, sharding
from facegen_jax.train.state import create_train_state

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks import faults  # noqa: E402  pylint: disable=wrong-import-position
from train_test import tiny_config  # noqa: E402  pylint: disable=wrong-import-position


def _config():
  return tiny_config(num_train_steps=4, checkpoint_every_steps=2)


def _restore(workdir):
  manager = checkpoints.make_manager(str(workdir), 3)
  try:
    like = sharding.replicate(create_train_state(_config()), sharding.make_mesh())
    state, data = checkpointing.restore_latest(manager, like)
  finally:
    manager.close()
  return jax.device_get(state), data


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  """(workdir, final state, data state) of an uninterrupted 4-step run."""
  workdir = tmp_path_factory.mktemp("straight") / "wd"
  loop.train(_config(), str(workdir))
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]
  state, data = _restore(workdir)
  return workdir, state, data


def _garble_data_state(step_dir):
  (step_dir / "data" / "metadata").write_text("{garbled")


DAMAGES = {"bit_flip": faults.flip_bytes, "truncated": faults.truncate, "metadata_deleted": faults.delete_metadata,
           "data_state_garbled": _garble_data_state, "step_emptied": faults.empty}


def _assert_bit_identical(got, want):
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_newest_step_is_set_aside_and_the_run_ends_bit_identical(straight, tmp_path, caplog, damage):
  source, want_state, want_data = straight
  workdir = tmp_path / "wd"
  shutil.copytree(source, workdir)
  DAMAGES[damage](workdir / "checkpoints" / "4")
  with caplog.at_level(logging.WARNING):
    loop.train(_config(), str(workdir))
  warnings = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
  assert len(warnings) == 1, warnings
  assert "checkpoints/4 is damaged" in warnings[0] and "resuming from step 2" in warnings[0], warnings[0]
  assert (workdir / checkpoints.DAMAGED_DIR / "4").is_dir()  # kept, not deleted
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]
  state, data = _restore(workdir)
  assert int(state.step) == 4 and data == want_data
  _assert_bit_identical(state, want_state)


def test_inference_refuses_a_bit_flipped_checkpoint(straight, tmp_path):
  source, _, _ = straight
  workdir = tmp_path / "wd"
  shutil.copytree(source, workdir)
  faults.flip_bytes(workdir / "checkpoints" / "4")
  with pytest.raises(checkpoints.DamagedCheckpointError, match=r"checkpoints/4 is damaged .*SHA-256 differs"):
    GeneratorModel.load(str(workdir))


def _save(workdir, state, data=None):
  manager = checkpoints.make_manager(str(workdir), 3)
  checkpointing.save(manager, state, data or {"next_index": 0})
  manager.close()


def test_non_finite_weights_are_refused_by_inference_and_skipped_by_training(tmp_path):
  config = _config()
  good = create_train_state(config)
  ema = jax.tree.map(np.array, good.ema_params)
  first = jax.tree_util.tree_flatten_with_path(ema)[0][0]
  leaf = first[1]
  leaf.reshape(-1)[:3] = np.nan
  bad = good.replace(step=good.step + 2, ema_params=ema)
  _save(tmp_path, good.replace(step=good.step + 1))
  _save(tmp_path, bad)  # a sealed step: its files are as saved, its values are not usable
  (tmp_path / "config.json").write_text(config.to_json_best_effort())
  with pytest.raises(checkpoints.DamagedCheckpointError, match=r"checkpoints/2: NaN or infinite values in "
                     r"params/encoder/conv_0/kernel \(3 values\); the weights are damaged: rerun train.py"):
    GeneratorModel.load(str(tmp_path))
  state, _ = _restore(tmp_path)
  assert int(state.step) == 1
  assert (tmp_path / checkpoints.DAMAGED_DIR / "2").is_dir()


def test_no_good_checkpoint_is_one_error_and_moves_nothing(tmp_path):
  good = create_train_state(_config())
  _save(tmp_path, good.replace(step=good.step + 1))
  faults.truncate(tmp_path / "checkpoints" / "1")
  with pytest.raises(checkpoints.DamagedCheckpointError, match=r"no usable checkpoint in .*step 1: .* bytes, "):
    _restore(tmp_path)
  assert os.listdir(tmp_path / "checkpoints") == ["1"] and not (tmp_path / checkpoints.DAMAGED_DIR).exists()


def _snapshot(folder):
  return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
          for p in sorted(pathlib.Path(folder).rglob("*")) if p.is_file()}


def test_mismatched_config_leaves_every_file_of_the_workdir_untouched(straight, tmp_path):
  source, _, _ = straight
  workdir = tmp_path / "wd"
  shutil.copytree(source, workdir)
  before = _snapshot(workdir)
  other = tiny_config(num_train_steps=6, **{"model.base_features": 16})
  with pytest.raises(ValueError, match=r"checkpoints/4 does not match this config: it was saved with another model "
                     r"\(.*saved float32\[4, 4, 3, 8\], config wants float32\[4, 4, 3, 16\]"):
    loop.train(other, str(workdir))
  assert _snapshot(workdir) == before


def test_inference_refuses_an_export_with_non_finite_weights(tmp_path):
  config = _config()
  variables = jax.tree.map(np.array, {"params": create_train_state(config).ema_params,
                                      "batch_stats": create_train_state(config).g_vars["batch_stats"]})
  jax.tree.leaves(variables["params"])[-1].reshape(-1)[0] = np.inf
  GeneratorModel(config, variables).export(str(tmp_path / "export"))
  with pytest.raises(checkpoints.DamagedCheckpointError, match=r"export/generator\.msgpack: NaN or infinite values "
                     r"in params/.*\(1 values\); the weights are damaged: export again"):
    GeneratorModel.load(str(tmp_path / "export"))
