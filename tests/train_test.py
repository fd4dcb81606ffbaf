"""Real train steps on tiny configs: overfitting, multi-device equality, resume, NaN stop, CLI."""

import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from facegen_jax.data.synthetic import SyntheticFaces
from facegen_jax.io import checkpoints
from facegen_jax.train import checkpointing, loop, sharding
from facegen_jax.train.state import create_train_state
from facegen_jax.train.step import LossNets, make_train_step

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "experiments" / "configs"))
import tiny  # noqa: E402  pylint: disable=wrong-import-position


def tiny_config(**overrides):
  c = tiny.get_config()
  c.log_every_steps = 1
  c.image_every_steps = 0
  for key, value in overrides.items():
    node = c
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = value
  return c


def test_overfits_one_batch():
  c = tiny_config(**{"optimizer.g_learning_rate": 1e-3, "optimizer.d_learning_rate": 1e-3})
  mesh = sharding.make_mesh()
  step = sharding.jit_train_step(make_train_step(c), mesh)
  state = sharding.replicate(create_train_state(c), mesh)
  batch = sharding.shard_batch(next(SyntheticFaces(64, 4, seed=3, num_identities=4)), mesh)
  frozen = LossNets().frozen_params()
  losses = []
  for _ in range(120):
    state, metrics, _ = step(state, batch, frozen)
    losses.append(float(metrics["g/pixel"]))
  assert np.isfinite(losses).all()
  assert min(losses[-10:]) <= 0.5 * losses[0], (losses[0], losses[-10:])


MULTI_DEVICE_SCRIPT = r"""
import sys
import jax, numpy as np
sys.path.insert(0, sys.argv[1])
import tiny
from facegen_jax.data.synthetic import SyntheticFaces
from facegen_jax.train import sharding
from facegen_jax.train.state import create_train_state
from facegen_jax.train.step import LossNets, make_train_step
assert jax.device_count() == 4, jax.devices()
c = tiny.get_config()
c.global_batch_size = 8
c.model.motion = sys.argv[2]
host_batch = next(SyntheticFaces(64, 8, seed=1))
results = []
for devices in (jax.devices(), jax.devices()[:1]):
  mesh = sharding.make_mesh(devices)
  step = sharding.jit_train_step(make_train_step(c), mesh)
  state = sharding.replicate(create_train_state(c), mesh)
  batch = sharding.shard_batch(host_batch, mesh)
  if len(devices) == 4:
    assert len(batch["source"].addressable_shards) == 4
    assert batch["source"].addressable_shards[0].data.shape[0] == 2
  state, metrics, images = step(state, batch, LossNets().frozen_params())
  # The rows this process fed, back in its order (what the image summaries pair with its batch).
  local = sharding.process_local(images)
  np.testing.assert_array_equal(local["generated"], np.asarray(images["generated"]))
  assert local["generated"].shape[0] == 8
  results.append(jax.device_get((state, metrics)))
(s4, m4), (s1, m1) = results
for a, b in zip(jax.tree.leaves(s4), jax.tree.leaves(s1)):
  np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
for k in m1:
  np.testing.assert_allclose(m4[k], m1[k], rtol=2e-4, atol=2e-5)
print("MULTI_DEVICE_OK", len(jax.tree.leaves(s4)))
"""


@pytest.mark.parametrize("motion", ["none", "landmark_tps"])
def test_four_devices_equal_one_device(motion):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", MULTI_DEVICE_SCRIPT, str(REPO / "experiments" / "configs"), motion],
                          env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "MULTI_DEVICE_OK" in result.stdout


def _restore(workdir, config):
  manager = checkpoints.make_manager(str(workdir), 3)
  like = sharding.replicate(create_train_state(config), sharding.make_mesh())
  state, data_state = checkpointing.restore_latest(manager, like)
  manager.close()
  return jax.device_get(state), data_state


def test_resume_equals_straight_run(tmp_path):
  straight = tiny_config(num_train_steps=4, checkpoint_every_steps=2)
  loop.train(straight, str(tmp_path / "straight"))
  first_half = tiny_config(num_train_steps=2, checkpoint_every_steps=2)
  loop.train(first_half, str(tmp_path / "resumed"))
  assert sorted(os.listdir(tmp_path / "resumed" / "checkpoints")) == ["2"]
  loop.train(straight, str(tmp_path / "resumed"))  # restarts from step 2
  a, data_a = _restore(tmp_path / "straight", straight)
  b, data_b = _restore(tmp_path / "resumed", straight)
  assert int(a.step) == int(b.step) == 4
  assert data_a == data_b == {"next_index": 16}
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
  good = tiny_config(num_train_steps=2, checkpoint_every_steps=1)
  loop.train(good, str(tmp_path))
  # A learning rate this large makes the parameters overflow in the next update.
  bad = tiny_config(num_train_steps=6, checkpoint_every_steps=1, **{"optimizer.g_learning_rate": 1e38})
  with pytest.raises(loop.NonFiniteLossError, match=r"at step 3; stopped.*step 2\) is the last good state"):
    loop.train(bad, str(tmp_path))
  state, _ = _restore(tmp_path, good)
  assert int(state.step) == 2
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state))


def test_weighted_loss_without_network_fails_clearly():
  c = tiny_config(**{"loss.first.identity": 1.0, "loss.identity_net": ""})
  with pytest.raises(ValueError, match="no identity network is loaded"):
    make_train_step(c, loop.load_loss_nets(c))


def _train_cli(workdir, *extra):
  return subprocess.run(
      [sys.executable, str(REPO / "experiments" / "train.py"), "--config=" + str(REPO / "experiments/configs/tiny.py"),
       f"--workdir={workdir}", *extra], capture_output=True, text=True, timeout=600, cwd=REPO)


def test_train_cli_end_to_end_and_resume(tmp_path):
  workdir = tmp_path / "wd"
  first = _train_cli(workdir, "--config.num_train_steps=3", "--config.checkpoint_every_steps=2",
                     "--config.image_every_steps=3")
  assert first.returncode == 0, first.stderr[-3000:]
  assert "step 3/3" in first.stderr and "steps/s" in first.stderr and "ETA" in first.stderr
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "3"]
  assert (workdir / "config.json").exists()
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir / "tensorboard"))
  assert (workdir / "samples" / "step_00000003.png").exists()
  second = _train_cli(workdir, "--config.num_train_steps=4")
  assert second.returncode == 0, second.stderr[-3000:]
  assert "resumed from" in second.stderr and "at step 3" in second.stderr
  assert "4" in os.listdir(workdir / "checkpoints")


def test_train_cli_rejects_unknown_config_key(tmp_path):
  result = _train_cli(tmp_path / "wd", "--config.no_such_key=1")
  assert result.returncode != 0
  assert "unknown config key 'no_such_key' in --config.no_such_key=1" in result.stderr, result.stderr
  assert "Traceback" not in result.stderr, result.stderr
  assert not (tmp_path / "wd").exists()
  result = _train_cli(tmp_path / "wd", "--config.model.base_featurez=8")  # a nested key names its neighbour
  assert 'did you mean "base_features"' in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_sigterm_saves_and_exits_cleanly(tmp_path):
  import signal  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel
  workdir = tmp_path / "wd"
  proc = subprocess.Popen(
      [sys.executable, str(REPO / "experiments" / "train.py"), "--config=" + str(REPO / "experiments/configs/tiny.py"),
       f"--workdir={workdir}", "--config.num_train_steps=100000", "--config.checkpoint_every_steps=100000",
       "--config.log_every_steps=1"], stderr=subprocess.PIPE, text=True, cwd=REPO)
  deadline = time.time() + 300
  for line in proc.stderr:
    if "step 3/" in line or time.time() > deadline:
      break
  proc.send_signal(signal.SIGTERM)
  _, rest = proc.communicate(timeout=300)
  assert proc.returncode == 0, rest[-2000:]
  assert "SIGTERM: saving step" in rest
  steps = [int(s) for s in os.listdir(workdir / "checkpoints")]
  assert len(steps) == 1 and 3 <= steps[0] < 100000


def test_step_rng_is_fold_in_of_the_checkpointed_key_and_the_step():
  """Every step hands the networks `fold_in(state.rng, step)` keys: equal at equal steps (a resumed
  run draws the same numbers), different from step to step, different for G and D."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  from facegen_jax.train.step import step_rngs  # pylint: disable=import-outside-toplevel

  c = tiny_config()
  train_step = make_train_step(c)
  state = create_train_state(c)
  batch = next(SyntheticFaces(64, 2, seed=3, num_identities=4))
  frozen = LossNets().frozen_params()
  names, keys = [], []

  def record(next_fun, args, kwargs, context):
    if context.method_name == "__call__" and not isinstance(context.module.parent, nn.Module):  # top-level G, D
      names.append(type(context.module).__name__)
      keys.append(jax.random.key_data(context.module.make_rng("dropout")))
    return next_fun(*args, **kwargs)

  @jax.jit
  def step_keys(step):  # the keys the networks see inside the train step at `step`
    names.clear()
    keys.clear()
    with nn.intercept_methods(record):
      train_step(state.replace(step=step), batch, frozen)
    return list(keys)

  def keys_at(step):
    out = step_keys(jax.numpy.asarray(step, state.step.dtype))
    return {name: np.asarray(key) for name, key in zip(names, out)}

  first, again, second = keys_at(0), keys_at(0), keys_at(1)
  assert len(first) == 2, first.keys()  # generator and discriminator
  for name in first:
    np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first[name], second[name]), name
  g_name, d_name = sorted(first, key=lambda n: "Discriminator" in n)
  assert not np.array_equal(first[g_name], first[d_name])
  g_rngs, _ = step_rngs(state.rng, 0)
  assert not np.array_equal(np.asarray(jax.random.key_data(g_rngs["dropout"])), np.asarray(state.rng))


def test_two_processes_train_together(tmp_path):
  """`train.py --multihost` as two processes of 2 CPU devices each (gloo collectives, addresses from
  the JAX_* variables BUILD.md documents): one global mesh of 4 devices, one checkpoint, image
  summaries built from each process's own shards."""
  import socket  # pylint: disable=import-outside-toplevel
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  workdir = tmp_path / "wd"
  procs = []
  for pid in range(2):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(pid))
    procs.append(subprocess.Popen(
        [sys.executable, str(REPO / "experiments" / "train.py"), "--multihost",
         "--config=" + str(REPO / "experiments/configs/tiny.py"), f"--workdir={workdir}",
         "--config.num_train_steps=2", "--config.image_every_steps=2", "--config.checkpoint_every_steps=2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO))
  logs = [p.communicate(timeout=600)[1] for p in procs]
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  assert "devices: 4 (cpu), processes: 2" in logs[0]
  assert "step 2/2" in logs[0]
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2"]
  assert os.listdir(workdir / "samples")  # the grid of process 0's rows
