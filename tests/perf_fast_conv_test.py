"""facegen_jax.models.fast_conv: forward and gradients equal XLA's own for every conv kind used."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from facegen_jax.models import factory, fast_conv
from benchmarks import common


def _rel_err(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


# (kind, input shape, features, kernel, stride): every kind the generator and discriminator use
# (4x4 stride-2 encoder/PatchGAN convs, 4x4 stride-1 PatchGAN convs and logits, 3x3 and 1x1
# mask-affine convs, 3x3 stride-2 strided-conv mask pyramid, 4x4 stride-2 transposed convs, with
# XLA's forward below 16 output channels and the sub-pixel one above), plus odd sizes and an odd
# transposed kernel.
CASES = [
    ("conv", (2, 16, 16, 5), 8, 4, 2),
    ("conv", (2, 15, 17, 5), 8, 4, 2),
    ("conv", (2, 16, 16, 8), 1, 4, 1),
    ("conv", (2, 16, 16, 8), 6, 4, 1),
    ("conv", (2, 12, 12, 1), 6, 3, 1),
    ("conv", (2, 12, 12, 6), 7, 1, 1),
    ("conv", (2, 16, 16, 3), 4, 3, 2),
    ("transpose", (2, 8, 8, 6), 3, 4, 2),
    ("transpose", (2, 8, 8, 6), 16, 4, 2),  # >= 16 channels: sub-pixel forward too
    ("transpose", (2, 7, 9, 6), 5, 4, 2),
    ("transpose", (2, 8, 8, 6), 5, 3, 2),
]


def _modules(kind, features, kernel, stride):
  if kind == "conv":
    make = lambda impl: nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding="SAME",
                                conv_general_dilated=fast_conv.conv_fn(impl))
    return make("xla"), make("fast")
  ref = nn.ConvTranspose(features, (kernel, kernel), strides=(stride, stride), padding="SAME")
  make = lambda impl: fast_conv.ConvTranspose(features, (kernel, kernel), strides=(stride, stride), padding="SAME",
                                              conv_impl=impl)
  return ref, make("fast")


@pytest.mark.parametrize("kind,shape,features,kernel,stride", CASES)
def test_forward_and_gradients_equal_xla(kind, shape, features, kernel, stride):
  ref, fast = _modules(kind, features, kernel, stride)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape).astype(np.float32))
  params = ref.init(jax.random.PRNGKey(0), x)
  # Same parameter tree, names, shapes and initial values as flax's own module.
  fast_params = fast.init(jax.random.PRNGKey(0), x)
  assert jax.tree.structure(fast_params) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(fast_params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)

  y_ref, pull_ref = jax.vjp(lambda p, x: ref.apply(p, x), params, x)
  y_fast, pull_fast = jax.vjp(lambda p, x: fast.apply(p, x), params, x)
  assert y_fast.shape == y_ref.shape
  assert _rel_err(y_fast, y_ref) < 1e-5
  cot = jnp.asarray(rng.normal(size=y_ref.shape).astype(np.float32))
  (dp_ref, dx_ref), (dp_fast, dx_fast) = pull_ref(cot), pull_fast(cot)
  assert _rel_err(dx_fast, dx_ref) < 1e-4
  assert _rel_err(dp_fast["params"]["kernel"], dp_ref["params"]["kernel"]) < 1e-4
  assert _rel_err(dp_fast["params"]["bias"], dp_ref["params"]["bias"]) < 1e-4


def _dilations(fn, params, x, side: str) -> set:
  """The `side` ("lhs" or "rhs") dilations of every convolution in the lowered gradient program."""
  text = jax.jit(fn).lower(params, x).as_text()
  return set(re.findall(side + r"_dilate = \[([0-9, ]+)\]", text))


@pytest.mark.parametrize("kind,features,stride", [("transpose", 16, 2), ("conv", 4, 2)])
def test_fast_path_has_no_dilated_convolutions(kind, features, stride):
  """The point of fast_conv: no input-dilated (slow on XLA:CPU) convolution is left in the gradient.

  (The stride-2 kernel gradient stays XLA's own window-dilated one, measured faster than the
  space-to-depth one.)"""
  ref, fast = _modules(kind, features, 4, stride)
  x = jnp.ones((2, 8, 8, 3))
  params = ref.init(jax.random.PRNGKey(0), x)
  grad = lambda module: jax.grad(lambda p, x: module.apply(p, x).sum(), argnums=(0, 1))
  assert _dilations(grad(ref), params, x, "lhs") - {"1, 1"}  # XLA's own gradient dilates the input
  assert _dilations(grad(fast), params, x, "lhs") == {"1, 1"}
  if kind == "transpose":
    assert _dilations(grad(fast), params, x, "rhs") == {"1, 1"}


def test_impl_selection(monkeypatch):
  monkeypatch.delenv("FACEGEN_CONV_IMPL", raising=False)
  assert fast_conv.resolve_impl("auto") == ("fast" if jax.default_backend() == "cpu" else "xla")
  assert fast_conv.resolve_impl("xla") == "xla" and fast_conv.resolve_impl("fast") == "fast"
  monkeypatch.setenv("FACEGEN_CONV_IMPL", "xla")
  assert fast_conv.resolve_impl("auto") == "xla" and fast_conv.conv_fn("auto") is None
  monkeypatch.setenv("FACEGEN_CONV_IMPL", "bogus")
  with pytest.raises(ValueError, match="FACEGEN_CONV_IMPL"):
    fast_conv.resolve_impl("auto")
  with pytest.raises(ValueError, match="conv_impl"):
    fast_conv.resolve_impl("cudnn")


def test_models_fast_equal_xla():
  """Whole generator and discriminator (tiny config): same outputs and parameter gradients."""
  config = common.benchmark_config("tiny", 64, batch=2, conv_impl="xla")
  g_vars, d_vars, (source, mask), d_in = common.init_models(config, batch=2)
  grads = {}
  for impl in ("xla", "fast"):
    config.model.conv_impl = impl
    g, d = factory.build_generator(config), factory.build_discriminator(config)

    def loss(gp, dp):
      out, _ = g.apply({**g_vars, "params": gp}, source, mask, train=True, mutable=["batch_stats"])
      logits, _ = d.apply({**d_vars, "params": dp}, jnp.concatenate([out["generated"], mask], -1), train=True)
      return sum(l.mean() for l in logits) + out["reconstructed"].mean(), out["generated"]

    grads[impl] = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(g_vars["params"], d_vars["params"])
  (g_xla, out_xla), (g_fast, out_fast) = grads["xla"], grads["fast"]
  assert _rel_err(out_fast, out_xla) < 1e-4
  scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(g_xla))
  for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_xla)):
    # Leaves whose true gradient is ~0 (a bias followed by a norm) hold float32 noise only, so the
    # tolerance is relative to the largest gradient of the network.
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5 * scale)
