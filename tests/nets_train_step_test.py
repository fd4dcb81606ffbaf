"""The loss networks in a real train step: the identity and perceptual terms are computed,
finite, per sample, and their gradients reach the generator."""

import pathlib
import sys

import jax
import numpy as np

from facegen_jax.data.synthetic import SyntheticFaces
from facegen_jax.nets import load_frozen_net
from facegen_jax.train import sharding
from facegen_jax.train.state import create_train_state
from facegen_jax.train.step import LossNets, make_train_step

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "experiments" / "configs"))
import tiny  # noqa: E402  pylint: disable=wrong-import-position


def test_train_step_with_dlib_identity_and_perceptual_losses(tmp_path):
  c = tiny.get_config()
  for group in ("first", "perturbed"):
    c.loss[group].identity = 1.0
    c.loss[group].perceptual = 1.0
    for term in ("pixel", "reconstruction", "adversarial"):
      c.loss[group][term] = 0.0
  net = load_frozen_net("dlib_resnet", cache=tmp_path)
  nets = LossNets(identity=net, perceptual=net)
  mesh = sharding.make_mesh()
  step = sharding.jit_train_step(make_train_step(c, nets), mesh)
  state = sharding.replicate(create_train_state(c), mesh)
  batch = sharding.shard_batch(next(SyntheticFaces(64, c.global_batch_size, seed=0)), mesh)
  before = jax.device_get(state.g_vars["params"])  # the step donates its input state
  new_state, metrics, _ = step(state, batch, nets.frozen_params())
  metrics = jax.device_get(metrics)
  assert 0.0 < metrics["g/identity"] < 2.0, metrics
  assert metrics["g/perceptual"] > 0.0, metrics
  assert np.isfinite(metrics["g/grad_norm"]) and metrics["g/grad_norm"] > 0.0, metrics
  moved = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                       before, jax.device_get(new_state.g_vars["params"]))
  assert any(jax.tree.leaves(moved))  # only L1 + L2 are weighted, so they moved the generator
