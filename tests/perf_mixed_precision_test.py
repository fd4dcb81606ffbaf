"""bfloat16 compute (`config.compute_dtype = "bfloat16"`, parameters float32) trains like float32.

No loss scaling: bfloat16 has float32's exponent range, so gradients that are representable in
float32 do not underflow in bfloat16 (the reason float16 needs loss scaling); only the mantissa is
shorter, which the tolerances below allow for.
"""

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from facegen_jax.train import sharding
from facegen_jax.train.state import create_train_state
from facegen_jax.train.step import LossNets, make_train_step


def _run(compute_dtype: str, steps: int):
  config = common.benchmark_config("tiny", 64, batch=4, compute_dtype=compute_dtype)
  mesh = sharding.make_mesh(jax.devices()[:1])
  step = sharding.jit_train_step(make_train_step(config), mesh)
  state = sharding.replicate(create_train_state(config), mesh)
  batch = sharding.shard_batch(common.synthetic_batch(config, 4), mesh)
  frozen = LossNets().frozen_params()
  history = []
  for _ in range(steps):
    state, metrics, images = step(state, batch, frozen)
    history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
  return state, history, images


def test_bf16_steps_finite_and_close_to_fp32():
  state32, hist32, _ = _run("float32", 3)
  state16, hist16, images16 = _run("bfloat16", 3)
  # Parameters, optimizer state and EMA stay float32.
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state16.g_vars["params"]))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state16.d_vars["params"]))
  for m32, m16 in zip(hist32, hist16):
    assert all(np.isfinite(v) for v in m16.values()), m16
    for key in ("g/pixel", "g/reconstruction", "g/total", "d/loss"):
      np.testing.assert_allclose(m16[key], m32[key], rtol=0.005, err_msg=key)
    # Gradient norms: bf16's 8-bit mantissa moves them by a few percent (measured 1% for D, 5.5%
    # for G); Adam's normalised update is what training sees, and that agrees closely.
    for key, rtol in (("g/grad_norm", 0.1), ("d/grad_norm", 0.1), ("g/update_norm", 0.03)):
      np.testing.assert_allclose(m16[key], m32[key], rtol=rtol, err_msg=key)
    for key in ("g/adversarial", "d/real_logit", "d/fake_logit"):  # near zero at the start: absolute
      np.testing.assert_allclose(m16[key], m32[key], atol=0.05, err_msg=key)
  assert np.isfinite(np.asarray(images16["generated"], np.float32)).all()
  # The updated parameters moved the same way.
  for a, b in zip(jax.tree.leaves(state16.g_vars["params"]), jax.tree.leaves(state32.g_vars["params"])):
    assert np.isfinite(np.asarray(a)).all()
  diff = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(state16.g_vars["params"]),
                                                         jax.tree.leaves(state32.g_vars["params"])))
  assert diff < 3 * 3 * 1e-4  # 3 Adam steps of lr 1e-4 move a parameter by at most ~3e-4 each way
