"""The convolution back-ends of facegen_jax.models.conv (the XLA rewrites and oneDNN): forward and
gradients equal XLA's own for every conv kind used, on one device and data-parallel over four."""

import os
import re
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from facegen_jax.models import conv, factory
from facegen_jax.models.conv import onednn
from benchmarks import common
from tests.conftest import REPO_ROOT

# The oneDNN backend is part of the install on Linux x86_64 (setup.cfg); elsewhere its tests skip.
ONEDNN_EXPECTED = sys.platform == "linux" and os.uname().machine == "x86_64"
IMPLS = ["fast", "onednn"]


def _require(impl):
  if impl == "onednn" and not onednn.available():
    if ONEDNN_EXPECTED:
      pytest.fail(f"oneDNN convolutions unavailable on Linux x86_64: {onednn.unavailable_reason()}")
    pytest.skip(f"oneDNN convolutions unavailable: {onednn.unavailable_reason()}")


def _rel_err(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


# (kind, input shape, features, kernel, stride): every kind the generator and discriminator use
# (4x4 stride-2 encoder/PatchGAN convs, 4x4 stride-1 PatchGAN convs and logits, 3x3 and 1x1
# mask-affine convs, 3x3 stride-2 strided-conv mask pyramid, 4x4 stride-2 transposed convs, with
# XLA's forward below 16 output channels and the sub-pixel one above), plus odd sizes, an odd
# transposed kernel and channel counts that are not multiples of oneDNN's 16-channel blocks.
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
    ("transpose", (2, 8, 8, 40), 24, 4, 2),  # channels that oneDNN's blocked weights pad to 16s
    ("transpose", (2, 8, 8, 32), 3, 4, 2),  # as the decoders' last layer: to 3 channels
]


def _modules(kind, features, kernel, stride, impl="fast"):
  if kind == "conv":
    make = lambda impl: nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding="SAME",
                                conv_general_dilated=conv.conv_fn(impl))
    return make("xla"), make(impl)
  ref = nn.ConvTranspose(features, (kernel, kernel), strides=(stride, stride), padding="SAME")
  make = lambda impl: conv.ConvTranspose(features, (kernel, kernel), strides=(stride, stride), padding="SAME",
                                         conv_general_dilated=conv.conv_fn(impl))
  return ref, make(impl)


def _custom_calls(fn, *args) -> list:
  return re.findall(r'custom_call_target="(facegen_conv_[a-z0-9_]+)"', jax.jit(fn).lower(*args).compile().as_text())


@pytest.fixture
def onednn_threads(request):
  """Sets onednn's single-thread threshold (million FLOPs) for one test, then restores it."""
  mflop = request.param
  before = onednn.current_single_thread_mflop()
  if mflop is not None and onednn.available():
    onednn.set_single_thread_mflop(mflop)
  yield mflop
  if mflop is not None and onednn.available():
    onednn.set_single_thread_mflop(before)


# oneDNN twice: every convolution on the whole OpenMP team (threshold 0) and every one on a
# single thread (threshold above any case), so both ways a primitive can be built and run are
# checked whatever the default threshold.
@pytest.mark.parametrize("impl,onednn_threads", [("fast", None), ("onednn", 0.0), ("onednn", 1e9)],
                         ids=["fast", "onednn-team", "onednn-single"], indirect=["onednn_threads"])
@pytest.mark.parametrize("kind,shape,features,kernel,stride", CASES)
def test_forward_and_gradients_equal_xla(kind, shape, features, kernel, stride, impl, onednn_threads):
  _require(impl)
  ref, fast = _modules(kind, features, kernel, stride, impl)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape).astype(np.float32))
  params = ref.init(jax.random.PRNGKey(0), x)
  # Same parameter tree, names, shapes and initial values as flax's own module.
  fast_params = fast.init(jax.random.PRNGKey(0), x)
  assert jax.tree.structure(fast_params) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(fast_params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)

  single_before = onednn.single_thread_calls()
  y_ref, pull_ref = jax.vjp(lambda p, x: ref.apply(p, x), params, x)
  y_fast, pull_fast = jax.vjp(lambda p, x: fast.apply(p, x), params, x)
  assert y_fast.shape == y_ref.shape
  assert _rel_err(y_fast, y_ref) < 1e-5
  cot = jnp.asarray(rng.normal(size=y_ref.shape).astype(np.float32))
  (dp_ref, dx_ref), (dp_fast, dx_fast) = pull_ref(cot), pull_fast(cot)
  assert _rel_err(dx_fast, dx_ref) < 1e-4
  assert _rel_err(dp_fast["params"]["kernel"], dp_ref["params"]["kernel"]) < 1e-4
  assert _rel_err(dp_fast["params"]["bias"], dp_ref["params"]["bias"]) < 1e-4
  if impl == "onednn" and kernel > 1:  # really ran on oneDNN: forward and both gradients
    # (a transposed convolution into few channels has its forward on XLA, its gradients on oneDNN)
    xla_forward = kind == "transpose" and features < conv.XLA_TRANSPOSE_FORWARD_BELOW
    # and on one thread exactly when asked
    single = onednn.single_thread_calls() - single_before
    assert single == ((2 if xla_forward else 3) if onednn_threads else 0), (onednn_threads, single)
    calls = _custom_calls(jax.value_and_grad(lambda p, x, c: jnp.sum(fast.apply(p, x) * c), (0, 1)), params, x, cot)
    assert set(calls) == {"facegen_conv_bwd_data", "facegen_conv_bwd_weights", "facegen_conv_fwd"} - (
        {"facegen_conv_bwd_data"} if xla_forward else set()), calls
    # Not differentiated: one call, a forward_inference primitive (transposed: the data gradient one).
    want = "facegen_conv_fwd_inference" if kind == "conv" else "facegen_conv_bwd_data"
    assert _custom_calls(lambda p, x: fast.apply(p, x), params, x) == ([] if xla_forward else [want])


def _dilations(fn, params, x, side: str) -> set:
  """The `side` ("lhs" or "rhs") dilations of every convolution in the lowered gradient program."""
  text = jax.jit(fn).lower(params, x).as_text()
  return set(re.findall(side + r"_dilate = \[([0-9, ]+)\]", text))


@pytest.mark.parametrize("kind,features,stride", [("transpose", 16, 2), ("conv", 4, 2)])
def test_fast_path_has_no_dilated_convolutions(kind, features, stride):
  """The point of the XLA rewrites: no input-dilated (slow on XLA:CPU) convolution is left in the gradient.

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
  cpu_default = "onednn" if onednn.available() else "fast"
  assert conv.resolve_impl("auto") == (cpu_default if jax.default_backend() == "cpu" else "xla")
  assert conv.resolve_impl("xla") == "xla" and conv.resolve_impl("fast") == "fast"
  monkeypatch.setenv("FACEGEN_CONV_IMPL", "xla")
  assert conv.resolve_impl("auto") == "xla" and conv.conv_fn("auto") is None
  monkeypatch.setenv("FACEGEN_CONV_IMPL", "bogus")
  with pytest.raises(ValueError, match="FACEGEN_CONV_IMPL"):
    conv.resolve_impl("auto")
  with pytest.raises(ValueError, match="conv_impl"):
    conv.resolve_impl("cudnn")


def test_single_thread_threshold_setting(monkeypatch):
  for dtype, env in onednn.SINGLE_THREAD_ENV.items():
    monkeypatch.delenv(env, raising=False)
    assert onednn.single_thread_mflop(dtype) == onednn.DEFAULT_SINGLE_THREAD_MFLOP[dtype]
    monkeypatch.setenv(env, "0")
    assert onednn.single_thread_mflop(dtype) == 0.0
    monkeypatch.setenv(env, "inf")
    assert onednn.single_thread_mflop(dtype) == float("inf")
    for bad in ("many", "-5", "nan"):
      monkeypatch.setenv(env, bad)
      with pytest.raises(ValueError, match=env):
        onednn.single_thread_mflop(dtype)
  with pytest.raises(ValueError, match=">= 0"):
    onednn.set_single_thread_mflop(-1.0)
  with pytest.raises(ValueError, match="float16"):
    onednn.single_thread_mflop("float16")
  assert onednn._flops(float("inf")) == np.iinfo(np.int64).max  # pylint: disable=protected-access
  assert onednn._flops(200.0) == 200_000_000  # pylint: disable=protected-access


def test_onednn_unavailable_falls_back(monkeypatch):
  """Without oneDNN (other platforms, no compiler): "auto" uses the XLA formulations, an explicit
  "onednn" fails naming why, and the build names the fix."""
  monkeypatch.delenv("FACEGEN_CONV_IMPL", raising=False)
  monkeypatch.setattr(onednn, "_state", {"ok": False, "reason": "RuntimeError: oneDNN not found"})
  if jax.default_backend() == "cpu":
    assert conv.resolve_impl("auto") == "fast"
  with pytest.raises(RuntimeError, match="conv_impl='onednn'.*oneDNN not found"):
    conv.resolve_impl("onednn")
  monkeypatch.setattr(onednn, "_dnnl_roots", lambda: [REPO_ROOT / "no-such-dir"])
  with pytest.raises(RuntimeError, match="pip install onednn-cpu-gomp onednn-devel-cpu-gomp"):
    onednn._find_dnnl()  # pylint: disable=protected-access


# (kind, input shape, features, kernel, stride) in bfloat16: strided, stride-1 and transposed
# convolutions, channels oneDNN pads to its blocks, a transposed one with its forward on oneDNN.
BF16_CASES = [
    ("conv", (2, 16, 16, 40), 24, 4, 2),
    ("conv", (2, 12, 12, 32), 32, 3, 1),
    ("transpose", (2, 8, 8, 40), 24, 4, 2),
    ("transpose", (2, 8, 8, 32), 3, 4, 2),
]


@pytest.fixture
def bf16_threads(request):
  """Sets onednn's bfloat16 single-thread threshold for one test, then restores it."""
  before = onednn.current_single_thread_mflop("bfloat16")
  if onednn.available():
    onednn.set_single_thread_mflop(request.param, "bfloat16")
  yield request.param
  if onednn.available():
    onednn.set_single_thread_mflop(before, "bfloat16")


@pytest.mark.parametrize("bf16_threads", [0.0, float("inf")], ids=["team", "single"], indirect=True)
@pytest.mark.parametrize("kind,shape,features,kernel,stride", BF16_CASES)
def test_onednn_bfloat16_equals_float32_to_bfloat16_precision(kind, shape, features, kernel, stride, bf16_threads):
  """bfloat16 (compute_dtype) convolutions run on oneDNN's bfloat16 primitives where the CPU has
  native kernels (AMX / AVX512-BF16), with forward and gradients equal to float32's on the same
  bfloat16-rounded inputs up to bfloat16 rounding, on the whole OpenMP team or on one thread;
  elsewhere they keep the XLA formulations."""
  _require("onednn")
  single_before = onednn.single_thread_calls()
  ref, _ = _modules(kind, features, kernel, stride)
  make = nn.Conv if kind == "conv" else conv.ConvTranspose
  ours = make(features, (kernel, kernel), strides=(stride, stride), padding="SAME", dtype=jnp.bfloat16,
              conv_general_dilated=conv.conv_fn("onednn"))
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape), jnp.bfloat16)
  params = jax.tree.map(lambda p: p.astype(jnp.bfloat16).astype(jnp.float32), ref.init(jax.random.PRNGKey(0), x))
  cot = jnp.asarray(rng.normal(size=ref.apply(params, x.astype(jnp.float32)).shape), jnp.float32)
  loss = lambda m, dtype: lambda p, x: jnp.sum(m.apply(p, x.astype(dtype)).astype(jnp.float32) * cot)
  g_ref = jax.grad(loss(ref, jnp.float32), (0, 1))(params, x)
  g = jax.grad(loss(ours, jnp.bfloat16), (0, 1))(params, x)
  single = onednn.single_thread_calls() - single_before  # forward and both gradients
  if onednn.bf16_native():
    assert (single >= 2) if bf16_threads else (single == 0), (bf16_threads, single)
  assert ours.apply(params, x).dtype == jnp.bfloat16
  assert _rel_err(ours.apply(params, x), ref.apply(params, x.astype(jnp.float32))) < 1e-2
  # Kernel gradients accumulate in float32 inside oneDNN; the bias gradient is a bfloat16 sum in XLA.
  assert _rel_err(g[0]["params"]["kernel"], g_ref[0]["params"]["kernel"]) < 1e-2
  assert _rel_err(g[0]["params"]["bias"], g_ref[0]["params"]["bias"]) < 5e-2
  assert _rel_err(g[1], g_ref[1]) < 1e-2
  calls = set(_custom_calls(jax.value_and_grad(loss(ours, jnp.bfloat16), (0, 1)), params, x))
  if onednn.bf16_native():
    want = {"facegen_conv_bwd_data_bf16", "facegen_conv_bwd_weights_bf16", "facegen_conv_fwd_bf16"}
    if kind == "transpose" and features < conv.XLA_TRANSPOSE_FORWARD_BELOW:
      want.discard("facegen_conv_bwd_data_bf16")
    assert calls == want, calls
  else:
    assert not calls, calls


_SHARDED_SCRIPT = textwrap.dedent("""
    import re, sys
    import jax, jax.numpy as jnp, numpy as np
    from jax import lax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from facegen_jax.models.conv import onednn as onednn_conv
    assert jax.device_count() == 4 and onednn_conv.available()
    DN = ("NHWC", "HWIO", "NHWC")
    mesh = Mesh(np.array(jax.devices()), ("data",))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(8, 16, 16, 5)), jnp.float32)
    w1 = jnp.asarray(rng.normal(size=(4, 4, 5, 12)), jnp.float32)
    w2 = jnp.asarray(rng.normal(size=(4, 4, 12, 16)), jnp.float32)

    def net(conv, conv_t):
      return lambda x, w1, w2: jnp.sum(conv_t(jax.nn.relu(conv(x, w1)), w2) ** 2)

    ref = net(lambda x, w: lax.conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)), dimension_numbers=DN),
              lambda x, w: lax.conv_general_dilated(x, w, (1, 1), ((2, 2), (2, 2)), lhs_dilation=(2, 2),
                                                    dimension_numbers=DN))
    ours = net(lambda x, w: onednn_conv.conv2d(x, w, (2, 2), ((1, 1), (1, 1))),
               lambda x, w: onednn_conv.conv_transpose2d(x, w, (2, 2), ((2, 2), (2, 2))))
    batch, rep = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    fn = jax.jit(jax.value_and_grad(ours, (0, 1, 2)), out_shardings=(rep, (batch, rep, rep)))
    args = (jax.device_put(x, batch), jax.device_put(w1, rep), jax.device_put(w2, rep))
    hlo = fn.lower(*args).compile().as_text()
    shapes = re.findall(r'= f32.([0-9,]+).[^=]*custom_call_target="facegen_conv_(fwd|bwd_data)', hlo)
    assert len(shapes) == 4 and all(s.split(",")[0] == "2" for s, _ in shapes), shapes  # a batch shard each
    assert "all-gather" not in hlo, "an activation was gathered"
    value, grads = fn(*args)
    value_ref, grads_ref = jax.value_and_grad(ref, (0, 1, 2))(x, w1, w2)
    np.testing.assert_allclose(value, value_ref, rtol=1e-5)
    for g, g_ref in zip(grads, grads_ref):
      assert float(jnp.abs(g - g_ref).max() / jnp.abs(g_ref).max()) < 1e-4
    print("ok")
""")


def test_onednn_data_parallel_over_four_devices():
  """Sharded jit: each device convolves its own batch shard (no activation is gathered), the weight
  gradient is all-reduced, and values and gradients equal XLA's."""
  _require("onednn")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu",
             PYTHONPATH=str(REPO_ROOT))
  proc = subprocess.run([sys.executable, "-c", _SHARDED_SCRIPT], env=env, capture_output=True, text=True,
                        timeout=600, check=False)
  assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


@pytest.mark.parametrize("impl", IMPLS)
def test_models_equal_xla(impl):
  """Whole generator and discriminator (tiny config): same outputs and parameter gradients."""
  _require(impl)
  config = common.benchmark_config("tiny", 64, batch=2, conv_impl="xla")
  g_vars, d_vars, (source, mask, *_), d_in = common.init_models(config, batch=2)
  grads = {}
  for impl_ in ("xla", impl):
    config.model.conv_impl = impl_
    g, d = factory.build_generator(config), factory.build_discriminator(config)

    def loss(gp, dp):
      out, _ = g.apply({**g_vars, "params": gp}, source, mask, train=True, mutable=["batch_stats"])
      logits, _ = d.apply({**d_vars, "params": dp}, jnp.concatenate([out["generated"], mask], -1), train=True)
      return sum(l.mean() for l in logits) + out["reconstructed"].mean(), out["generated"]

    grads[impl_] = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(g_vars["params"], d_vars["params"])
  (g_xla, out_xla), (g_fast, out_fast) = grads["xla"], grads[impl]
  assert _rel_err(out_fast, out_xla) < 1e-4
  scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(g_xla))
  for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_xla)):
    # Leaves whose true gradient is ~0 (a bias followed by a norm) hold float32 noise only, so the
    # tolerance is relative to the largest gradient of the network.
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5 * scale)
