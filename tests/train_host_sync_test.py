"""The training loop reads nothing back from the device on a step that does not log, save or
evaluate, and its NaN stop (checked when the metrics are fetched) still keeps the last good
checkpoint.

Every device-to-host read of a jax array goes through `ArrayImpl._value` (`np.asarray`,
`float`, `jax.device_get`, `.tolist()`, ...); the test counts the reads the loop's thread makes
after each dispatched train step. (`jax.transfer_guard` cannot catch them on CPU, where a
device buffer already is host memory.)
"""

import threading

import jax
import numpy as np
import pytest
from jax._src import array as jax_array

from facegen_jax.io import checkpoints
from facegen_jax.train import checkpointing, loop, sharding
from facegen_jax.train.state import create_train_state
from train_test import tiny_config


def _count_reads(monkeypatch):
  """Patches the train step and `ArrayImpl._value`: returns {steps dispatched so far: host reads
  by the calling thread after them} (key 0: the setup before the first step returned)."""
  reads, dispatched = {}, [0]
  main = threading.current_thread()
  original_value = jax_array.ArrayImpl._value  # pylint: disable=protected-access

  def value(self):
    if threading.current_thread() is main:
      reads[dispatched[0]] = reads.get(dispatched[0], 0) + 1
    return original_value.fget(self)

  original_jit = sharding.jit_train_step

  def jit_train_step(train_step, mesh):
    jitted = original_jit(train_step, mesh)

    def counted(*args):
      out = jitted(*args)  # the first call compiles, which reads closed-over constants: that is setup
      dispatched[0] += 1
      return out

    return counted

  monkeypatch.setattr(jax_array.ArrayImpl, "_value", property(value))
  monkeypatch.setattr(sharding, "jit_train_step", jit_train_step)
  return reads


def test_no_host_read_on_steps_that_do_not_log(tmp_path, monkeypatch):
  reads = _count_reads(monkeypatch)
  config = tiny_config(num_train_steps=7, log_every_steps=3, checkpoint_every_steps=100, image_every_steps=2)
  metrics = loop.train(config, str(tmp_path))
  steps_with_reads = sorted(k for k in reads if k > 0)
  assert steps_with_reads == [3, 6, 7], reads  # log steps 3 and 6, the last step 7 (log and checkpoint)
  assert np.isfinite(list(metrics.values())).all() and "g/total" in metrics
  # The grids of the image steps were still written (from the background thread).
  assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [
      "step_00000002.png", "step_00000004.png", "step_00000006.png", "step_00000007.png"]


def test_checkpoint_and_eval_steps_fetch_too(tmp_path, monkeypatch):
  """A checkpoint is only written after the pending metrics were fetched and checked."""
  reads = _count_reads(monkeypatch)
  config = tiny_config(num_train_steps=5, log_every_steps=100, checkpoint_every_steps=2, image_every_steps=0)
  loop.train(config, str(tmp_path))
  assert sorted(k for k in reads if k > 0) == [2, 4, 5], reads


def test_nan_between_logs_is_caught_before_the_next_checkpoint(tmp_path):
  good = tiny_config(num_train_steps=2, checkpoint_every_steps=1)
  loop.train(good, str(tmp_path))
  # Step 3 overflows; the metrics are fetched at step 4 (a checkpoint step), which is not saved.
  bad = tiny_config(num_train_steps=8, log_every_steps=8, checkpoint_every_steps=2,
                    **{"optimizer.g_learning_rate": 1e38})
  with pytest.raises(loop.NonFiniteLossError, match=r"at step 3; stopped.*step 2\) is the last good state"):
    loop.train(bad, str(tmp_path))
  manager = checkpoints.make_manager(str(tmp_path), 3)
  assert manager.all_steps() == [1, 2]
  state, _ = checkpointing.restore_latest(manager, sharding.replicate(create_train_state(good), sharding.make_mesh()))
  manager.close()
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(state)))
