"""Shapes, the mask-affine normalization against numpy, config-driven structure, and the shipped
weights against their golden frames."""

import functools
import importlib.util

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from facegen_jax.models import (GenerationDecoder, Generator, MaskAffineNorm, MultiScaleDiscriminator,
                                PatchDiscriminator, ReconstructionDecoder, TextureEncoder, num_levels)
from facegen_jax.models import layers
from tests.conftest import REPO_ROOT

GOLDEN = REPO_ROOT / "tests" / "golden"


def _init_apply(module, *args, **kwargs):
  variables = module.init(jax.random.PRNGKey(0), *args, train=False, **kwargs)
  out, _ = module.apply(variables, *args, train=True, mutable=["batch_stats"], **kwargs)
  return variables, out


@pytest.mark.parametrize("res", [64, 128])
def test_shapes(res):
  b = 2
  s = num_levels(res, 8)
  enc_feats = [8, 16, 16, 16, 16][:s]
  x = jnp.ones((b, res, res, 3))
  _, (code, enc_outs) = _init_apply(TextureEncoder(enc_feats), x)
  assert code.shape == (b, 8, 8, enc_feats[-1])
  assert [o.shape[1] for o in enc_outs] == [res // 2**(k + 1) for k in range(s)]

  dec_feats = enc_feats[-2::-1]
  _, (recon, inter) = _init_apply(ReconstructionDecoder(dec_feats), code)
  assert recon.shape == (b, res, res, 3)
  assert [t.shape for t in inter] == [(b, 8 * 2**(k + 1), 8 * 2**(k + 1), f) for k, f in enumerate(dec_feats)]

  masks = {t.shape[1]: jnp.ones((b, t.shape[1], t.shape[1], 1)) for t in inter}
  _, gen = _init_apply(GenerationDecoder(dec_feats, fuse=functools.partial(MaskAffineNorm, hidden_features=4)), code, inter, masks)
  assert gen.shape == (b, res, res, 3)

  _, out = _init_apply(Generator(resolution=res, base_features=8, max_features=16, hidden_features=4),
                       x, jnp.ones((b, res, res, 9)))
  assert out["generated"].shape == out["reconstructed"].shape == (b, res, res, 3)
  assert float(jnp.abs(out["generated"]).max()) <= 1.0

  d_vars, (logits, feats) = _init_apply(
      MultiScaleDiscriminator(num_scales=3, patch=functools.partial(PatchDiscriminator, base_features=8, spectral_norm=True)),
      jnp.ones((b, res, res, 4)))
  assert [l.shape for l in logits] == [(b, res // 2**(3 + k), res // 2**(3 + k), 1) for k in range(3)]
  assert len(feats) == 3 and all(len(f) == 4 for f in feats)
  assert "batch_stats" in d_vars  # spectral-norm power-iteration state


def test_resolution_errors():
  with pytest.raises(ValueError, match="power of two"):
    num_levels(96, 8)
  with pytest.raises(ValueError, match="at least 3"):
    num_levels(32, 8)
  assert [num_levels(r, 8) for r in (64, 128, 256, 512)] == [3, 4, 5, 6]


def _conv_same(x, kernel, bias):
  """numpy NHWC 'SAME' convolution (stride 1)."""
  kh, kw, _, _ = kernel.shape
  ph, pw = (kh - 1) // 2, (kw - 1) // 2
  xp = np.pad(x, ((0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)))
  h, w = x.shape[1:3]
  out = np.zeros(x.shape[:3] + (kernel.shape[-1],))
  for i in range(kh):
    for j in range(kw):
      out += np.einsum("bhwc,cd->bhwd", xp[:, i:i + h, j:j + w], kernel[i, j])
  return out + bias


@pytest.mark.parametrize("modulation,hidden", [("residual", 6), ("plain", 0)])
def test_mask_affine_norm_matches_numpy(modulation, hidden):
  rng = np.random.default_rng(0)
  x = rng.normal(2.0, 3.0, (3, 8, 8, 5)).astype(np.float32)
  mask = rng.uniform(0, 1, (3, 8, 8, 2)).astype(np.float32)
  module = MaskAffineNorm(gamma_kernel=3, beta_kernel=5, hidden_features=hidden, modulation=modulation)
  variables = module.init(jax.random.PRNGKey(1), x, mask, train=False)
  # Random (not zero-initialised) conv parameters, so gamma and beta matter.
  params = jax.tree.map(lambda p: rng.normal(0, 0.3, p.shape).astype(np.float32), variables["params"])
  out, _ = module.apply({**variables, "params": params}, x, mask, train=True, mutable=["batch_stats"])

  p = flax.core.unfreeze(params)
  mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
  normalized = (x - mean) / np.sqrt(var + 1e-5)
  feats = mask
  if hidden:
    feats = np.maximum(_conv_same(feats, p["shared"]["kernel"], p["shared"]["bias"]), 0)
  gamma = _conv_same(feats, p["gamma"]["kernel"], p["gamma"]["bias"])
  beta = _conv_same(feats, p["beta"]["kernel"], p["beta"]["bias"])
  expected = normalized * (1 + gamma) + beta if modulation == "residual" else normalized * gamma + beta
  np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-4, atol=1e-4)
  assert p["gamma"]["kernel"].shape[:2] == (3, 3) and p["beta"]["kernel"].shape[:2] == (5, 5)


def test_mask_affine_norm_needs_two_kernel_sizes():
  with pytest.raises(ValueError, match="must differ"):
    MaskAffineNorm(gamma_kernel=3, beta_kernel=3).init(
        jax.random.PRNGKey(0), jnp.ones((1, 4, 4, 2)), jnp.ones((1, 4, 4, 1)), train=False)


def _generator_params(merge_levels):
  g = Generator(resolution=64, base_features=8, max_features=32, hidden_features=4, merge_levels=merge_levels)
  v = g.init(jax.random.PRNGKey(0), jnp.ones((1, 64, 64, 3)), jnp.ones((1, 64, 64, 1)), train=False)
  return v["params"]["generation_decoder"]


def test_merge_levels_change_parameter_shapes():
  # 64 -> s = 3 encoder layers [8, 16, 32]; generation levels at 16 (16 ch) and 32 (8 ch).
  all_levels, none, first = _generator_params(None), _generator_params(()), _generator_params((1,))
  assert all_levels["fuse_1"]["gamma"]["kernel"].shape[-1] == 32  # 16 + 16 concatenated
  assert all_levels["fuse_2"]["gamma"]["kernel"].shape[-1] == 16  # 8 + 8
  assert none["fuse_1"]["gamma"]["kernel"].shape[-1] == 16
  assert none["fuse_2"]["gamma"]["kernel"].shape[-1] == 8
  assert first["fuse_1"]["gamma"]["kernel"].shape[-1] == 32
  assert first["fuse_2"]["gamma"]["kernel"].shape[-1] == 8
  assert all_levels["up_1"]["kernel"].shape[2] == 32 and none["up_1"]["kernel"].shape[2] == 16


@pytest.mark.parametrize("method", ["nearest", "bilinear", "area", "strided_conv"])
def test_mask_pyramid(method):
  mask = jnp.zeros((2, 64, 64, 1)).at[:, 16:48, 16:48].set(1.0)
  pyramid = layers.MaskPyramid((8, 16, 32), method, features=4)
  variables = pyramid.init(jax.random.PRNGKey(0), mask)
  out = pyramid.apply(variables, mask)
  assert sorted(out) == [8, 16, 32]
  for size, m in out.items():
    assert m.shape[:3] == (2, size, size)
  if method == "area":
    np.testing.assert_allclose(out[8][0, :, :, 0], np.pad(np.ones((4, 4)), 2))


@pytest.mark.parametrize("order", ["spade", "spec"])
def test_generation_level_order(order):
  """"spec": fuse -> transposed conv -> norm -> ReLU (docs/method.md, Decoders); "spade": fuse -> ReLU ->
  transposed conv, the next level's parameter-free norm standing in for the norm. Seen from the
  inputs each layer receives: ReLU outputs are >= 0, the others are not."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  g = Generator(resolution=64, base_features=8, max_features=32, hidden_features=4, level_order=order)
  rng = np.random.RandomState(0)
  src, mask = jnp.asarray(rng.uniform(-1, 1, (2, 64, 64, 3))), jnp.asarray(rng.uniform(0, 1, (2, 64, 64, 1)))
  variables = g.init(jax.random.PRNGKey(0), src, mask, train=False)
  params = variables["params"]["generation_decoder"]
  assert ("up_1_norm" in params) == (order == "spec") and "up_2_norm" not in params  # level 2 outputs the image
  inputs = {}

  def record(next_fun, args, kwargs, context):
    if context.method_name == "__call__" and context.module.name in ("fuse_2", "up_1", "up_2"):
      inputs[context.module.name] = np.asarray(args[0])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    g.apply(variables, src, mask, train=True, mutable=["batch_stats"])
  up_1_channels = params["up_1"]["kernel"].shape[-1]
  from_up_1 = inputs["fuse_2"][..., :up_1_channels]  # level 2's input before the concatenation
  assert (from_up_1.min() >= 0) == (order == "spec")
  assert (inputs["up_2"].min() >= 0) == (order == "spade")


def test_unknown_level_order():
  g = Generator(resolution=64, base_features=8, max_features=32, hidden_features=4, level_order="sideways")
  with pytest.raises(ValueError, match="model.level_order must be one of"):
    g.init(jax.random.PRNGKey(0), jnp.ones((1, 64, 64, 3)), jnp.ones((1, 64, 64, 1)), train=False)


def test_reconstruction_decoder_needs_two_levels():
  with pytest.raises(ValueError, match="j >= 2 levels"):
    ReconstructionDecoder([]).init(jax.random.PRNGKey(0), jnp.ones((1, 8, 8, 4)), train=False)


def test_shipped_weights_reenact_the_golden_frames():
  """weights/demo_128_spec load into today's parameter tree and reenact the bundled clip to the frames
  tests/golden/make_demo_reenact_golden.py wrote before the models were restructured (<= 1/255)."""
  from facegen_jax.inference.generator_model import GeneratorModel  # pylint: disable=import-outside-toplevel
  weights = str(REPO_ROOT / "weights" / "demo_128_spec")
  assert GeneratorModel.load(weights).resolution == 128
  spec = importlib.util.spec_from_file_location("make_demo_reenact_golden", GOLDEN / "make_demo_reenact_golden.py")
  golden_lib = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(golden_lib)
  frames = golden_lib.reenact_frames(weights)
  with np.load(GOLDEN / "demo_reenact.npz") as f:
    golden = f["frames"]
  assert frames.shape == golden.shape and frames.dtype == np.uint8
  assert int(np.abs(frames.astype(np.int16) - golden.astype(np.int16)).max()) <= 1


def test_only_the_factory_and_the_conv_package_know_conv_impl():
  """The back-end is chosen once: the other model modules are handed convolution constructors."""
  models = REPO_ROOT / "facegen_jax" / "models"
  knowing = {str(p.relative_to(models)) for p in models.rglob("*.py") if "conv_impl" in p.read_text()}
  assert knowing <= {"factory.py", "conv/__init__.py"}, knowing


def test_discriminator_norms_are_stateless():
  with pytest.raises(ValueError, match="stateless"):
    PatchDiscriminator(norm="batch").init(jax.random.PRNGKey(0), jnp.ones((1, 32, 32, 3)), train=False)
