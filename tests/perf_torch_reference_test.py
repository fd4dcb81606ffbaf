"""The PyTorch reference of benchmarks/torch_reference.py is the same network as the flax one.

Needs torch (the `bench` extra, which .ci/run installs); without it this module is skipped
(`pytest.importorskip`), as is the timer-process test of perf_benchmark_timing_test.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks import common  # pylint: disable=wrong-import-position
from benchmarks import torch_reference  # pylint: disable=wrong-import-position
from facegen_jax.models import factory  # pylint: disable=wrong-import-position


def _nchw(x):
  return torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())


def _nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


def _num_params(tree) -> int:
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(tree))


@pytest.mark.parametrize("name,resolution", [("tiny", 64), ("default", 64)])
def test_same_parameter_count_and_outputs(name, resolution):
  config = common.benchmark_config(name, resolution, batch=2)
  if name == "default":  # the default channel plan on a small image keeps the test fast
    config.discriminator.num_scales = 2
  g_vars, d_vars, (source, mask, *_), d_in = common.init_models(config, batch=2)
  # Random batch-norm/instance-norm affines, so every parameter matters.
  rng = np.random.default_rng(0)
  g_vars = {**g_vars, "params": jax.tree.map(
      lambda p: p + rng.normal(0, 0.1, p.shape).astype(np.float32), g_vars["params"])}
  d_vars = {**d_vars, "params": jax.tree.map(
      lambda p: p + rng.normal(0, 0.1, p.shape).astype(np.float32), d_vars["params"])}

  t_gen, t_disc = torch_reference.Generator(config), torch_reference.MultiScaleDiscriminator(config)
  assert torch_reference.num_params(t_gen) == _num_params(g_vars["params"])
  assert torch_reference.num_params(t_disc) == _num_params(d_vars["params"])
  torch_reference.load_flax_params(t_gen, g_vars["params"])
  torch_reference.load_flax_params(t_disc, d_vars["params"])

  generator, discriminator = factory.build_generator(config), factory.build_discriminator(config)
  out, _ = generator.apply(g_vars, source, mask, train=True, mutable=["batch_stats"])
  t_out = t_gen.train()(_nchw(source), _nchw(mask))
  for key in ("generated", "reconstructed"):
    np.testing.assert_allclose(_nhwc(t_out[key]), np.asarray(out[key]), atol=2e-4, rtol=1e-3)

  logits, _ = discriminator.apply(d_vars, d_in, train=True)
  t_logits = t_disc(_nchw(d_in))
  assert len(t_logits) == len(logits)
  for t, j in zip(t_logits, logits):
    np.testing.assert_allclose(_nhwc(t), np.asarray(j), atol=2e-4, rtol=1e-3)


@pytest.mark.parametrize("autocast", [None, torch.bfloat16], ids=["float32", "bfloat16-autocast"])
def test_torch_train_step_runs_and_learns(autocast):
  config = common.benchmark_config("tiny", 64, batch=2)
  step = torch_reference.TorchTrainStep(config, autocast=autocast)
  batch = common.synthetic_batch(config, 2)
  img = lambda k: torch.from_numpy(batch[k].transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1)
  msk = lambda k: torch.from_numpy(batch[k].transpose(0, 3, 1, 2).astype(np.float32) / 255)
  args = (img("source"), img("target"), msk("driving_mask"), msk("target_mask"))
  first = step(*args)
  for _ in range(5):
    last = step(*args)
  assert np.isfinite(first["g/total"]) and np.isfinite(last["d/loss"])
  assert last["g/total"] < first["g/total"]
  # parameters stay float32 under autocast; the convolutions ran in bfloat16
  assert all(p.dtype == torch.float32 for p in step.generator.parameters())
  if autocast is not None:
    with step._forward():  # pylint: disable=protected-access
      out = step.generator(args[0], args[2])
    assert out["generated"].dtype == torch.bfloat16
