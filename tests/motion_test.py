"""The landmark-driven motion of the generator (models/motion.py, landmarks/tps.py): the TPS flow
against scipy, landmark transport, the identity, gradients, the bilinear warp, the generator's
trees, and the float64 host flow inference gives every runtime."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.interpolate
import scipy.ndimage

from facegen_jax.data.synthetic import MEAN_FACE, SyntheticFaces
from facegen_jax.landmarks import layout, tps
from facegen_jax.landmarks.perturb import perturb_landmarks
from facegen_jax.models import factory, motion
from facegen_jax.train import finetune, sharding, state as state_lib, step as step_lib
from facegen_jax.train.base_config import base_config

R = 128


def face_pairs(n: int, seed: int = 0):
  """`n` (source, driving) landmark pairs `[68, 2]` on a 128 crop: a face, and the same face moved
  by a random similarity with its features and contour perturbed (what a talking head does)."""
  rng = np.random.default_rng(seed)
  base = (MEAN_FACE - MEAN_FACE.mean(0)) / np.ptp(MEAN_FACE, axis=0).max() * 64 + 64
  pairs = []
  for _ in range(n):
    drv = base + rng.normal(0, 0.5, (68, 2))
    angle, scale, shift = rng.normal(0, 0.1), 1 + rng.normal(0, 0.05), rng.normal(0, 3, 2)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = (drv - drv.mean(0)) @ rot.T * scale + drv.mean(0) + shift
    src = perturb_landmarks(moved, rng, feature_shift=0.05, contour_shift=0.03, feature_scale=0.1, image_size=R)
    pairs.append((src.astype(np.float32), drv.astype(np.float32)))
  return pairs


def scipy_flow(src: np.ndarray, drv: np.ndarray, smoothing: float) -> np.ndarray:
  """The same spline from scipy in float64: `[R, R, 2]` normalized source coordinates."""
  return scipy_flow_at(src, drv, smoothing, R)


def scipy_flow_at(src: np.ndarray, drv: np.ndarray, smoothing: float, size: int) -> np.ndarray:
  """`scipy_flow` for landmarks in pixels of a `size` crop: `[size, size, 2]`."""
  anchors = np.asarray(motion.border_anchors(4), np.float64)
  d = np.concatenate([(drv.astype(np.float64) + 0.5) * 2 / size - 1, anchors])
  s = np.concatenate([(src.astype(np.float64) + 0.5) * 2 / size - 1, anchors])
  interp = scipy.interpolate.RBFInterpolator(d, s, kernel="thin_plate_spline", smoothing=smoothing, degree=1)
  c = (2 * np.arange(size) + 1.0) / size - 1
  grid = np.stack(np.meshgrid(c, c, indexing="xy"), -1).reshape(-1, 2)
  return interp(grid).reshape(size, size, 2)


def test_flow_carries_every_driving_landmark_onto_its_source_landmark():
  for src, drv in face_pairs(8):
    at = motion.landmark_map(src[None], drv[None], R, motion.to_normalized(jnp.asarray(drv), R)[None])[0]
    err = np.abs(np.asarray(motion.to_pixels(at, R)) - src).max()
    assert err < 0.05, err


def test_flow_is_the_identity_for_equal_landmarks():
  src, _ = face_pairs(1)[0]
  flow = motion.landmark_flow(src[None], src[None], R)
  np.testing.assert_allclose(np.asarray(flow[0]), np.asarray(motion.pixel_grid(R)), atol=1e-6)
  image = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, R, R, 3)), jnp.float32)
  np.testing.assert_allclose(np.asarray(motion.warp(image, flow)), np.asarray(image), atol=1e-5)


@pytest.mark.parametrize("smoothing", [0.0, motion.DEFAULT_SMOOTHING])
def test_flow_equals_scipy_thin_plate_spline(smoothing):
  pairs = face_pairs(4, seed=1)
  with jax.enable_x64(True):  # the algorithm, without float32's rounding
    for src, drv in pairs:
      flow = motion.landmark_flow(jnp.asarray(src, jnp.float64)[None], jnp.asarray(drv, jnp.float64)[None], R,
                                  smoothing=smoothing)
      assert flow.dtype == jnp.float64
      err_px = np.abs(np.asarray(flow[0]) - scipy_flow(src, drv, smoothing)).max() * R / 2
      assert err_px < 1e-4, err_px
  for src, drv in pairs:  # what the model runs: float32
    flow = motion.landmark_flow(src[None], drv[None], R, smoothing=smoothing)
    err_px = np.abs(np.asarray(flow[0]) - scipy_flow(src, drv, smoothing)).max() * R / 2
    assert err_px < 1e-3, err_px


def test_gradients_are_finite_even_for_coincident_landmarks():
  src, drv = face_pairs(1, seed=2)[0]
  drv = drv.copy()
  drv[66] = drv[62]  # a closed mouth: inner lips on top of each other
  size = 32  # the landmarks scaled onto a 32 x 32 frame: the same spline, fewer pixels
  image = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (1, size, size, 3)), jnp.float32)

  def loss(image, src_lm, drv_lm):
    return jnp.sum(motion.warp(image, motion.landmark_flow(src_lm, drv_lm, size)) ** 2)

  grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(image, jnp.asarray(src / 4)[None], jnp.asarray(drv / 4)[None])
  for g in grads:
    assert np.isfinite(np.asarray(g)).all()
  assert float(jnp.abs(grads[1]).sum()) > 0 and float(jnp.abs(grads[2]).sum()) > 0


def test_flow_solved_at_half_size_and_upsampled_stays_close_to_the_full_size_flow():
  for src, drv in face_pairs(3, seed=8):
    full = motion.landmark_flow(src[None], drv[None], R)
    half = motion.landmark_flow(layout.rescale(src, 0.5)[None], layout.rescale(drv, 0.5)[None], R // 2)
    err = np.abs(np.asarray(motion.upsample_flow(half, R) - full)) * R / 2
    assert err.max() < 0.5 and err.mean() < 0.01, (err.max(), err.mean())
    coarse = np.abs(np.asarray(motion.downsample_flow(full, R // 4) - motion.downsample_flow(half, R // 4))) * R / 2
    assert coarse.max() < 0.1, coarse.max()  # block means of a slightly curved field


def test_warp_is_bilinear_with_edge_clamping():
  rng = np.random.default_rng(3)
  feats = rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  coords = rng.uniform(-1.3, 1.3, (2, 8, 8, 2)).astype(np.float32)
  out = np.asarray(motion.warp(jnp.asarray(feats), jnp.asarray(coords)))
  px = (coords + 1) * 8 - 0.5  # (x, y) pixels of the 16 x 16 map
  for b in range(2):
    for c in range(3):
      ref = scipy.ndimage.map_coordinates(feats[b, ..., c], [px[b, ..., 1], px[b, ..., 0]], order=1, mode="nearest")
      np.testing.assert_allclose(out[b, ..., c], ref, atol=1e-5)


S = 32  # generator tests: a 32 x 32 model with a 4 x 4 texture code


def _config(motion_kind: str, **model):
  c = base_config()
  c.resolution, c.model.bottleneck_size = S, 4
  c.model.base_features, c.model.max_features, c.model.hidden_features, c.model.motion_features = 8, 16, 8, 8
  c.model.motion = motion_kind
  for k, v in model.items():
    c.model[k] = v
  return c


def _init(config, shapes_only: bool = False):
  lm = jnp.asarray(face_pairs(1)[0][0] * (config.resolution / R))[None]
  r, m = config.resolution, factory.mask_channels(config)
  init = lambda: factory.build_generator(config).init(  # noqa: E731
      jax.random.PRNGKey(0), jnp.zeros((1, r, r, 3)), jnp.zeros((1, r, r, m)), lm, lm, train=False)
  return jax.eval_shape(init) if shapes_only else jax.jit(init)()


def test_motion_none_builds_the_motion_free_tree_and_motion_adds_only_its_network():
  tree = lambda v: jax.tree.map(lambda a: a.shape, v)  # noqa: E731
  none = tree(_init(_config("none"), shapes_only=True))
  tps = tree(_init(_config("landmark_tps"), shapes_only=True))
  assert set(tps["params"]) - set(none["params"]) == {"motion_net"}
  assert {k: v for k, v in tps["params"].items() if k != "motion_net"} == none["params"]
  assert tps["batch_stats"] == none["batch_stats"]
  bare = tree(_init(_config("landmark_tps", motion_refiner=False, motion_blend=False), shapes_only=True))
  assert bare == none


def _motion_case(pair_seed: int, image_seed: int):
  """A small generator with motion, its variables, a face pair's landmarks on its S crop, a random
  image and an empty mask."""
  config = _config("landmark_tps")
  src, drv = face_pairs(1, seed=pair_seed)[0]
  src_lm, drv_lm = jnp.asarray(src * (S / R))[None], jnp.asarray(drv * (S / R))[None]
  image = jnp.asarray(np.random.default_rng(image_seed).uniform(-1, 1, (1, S, S, 3)), jnp.float32)
  return factory.build_generator(config), _init(config), src_lm, drv_lm, image, jnp.zeros((1, S, S, 1))


def test_generator_with_motion_outputs_the_warp_and_blend_mask_and_learns_through_them():
  g, variables, src_lm, drv_lm, image, mask = _motion_case(4, 5)
  out = jax.jit(lambda v: g.apply(v, image, mask, src_lm, drv_lm, train=False))(variables)
  assert out["warped"].shape == (1, S, S, 3) and out["blend_mask"].shape == (1, S, S, 1)
  # At initialisation the residual flow is zero: the warp is the TPS warp (solved at half size).
  half = motion.landmark_flow(layout.rescale(src_lm, 0.5), layout.rescale(drv_lm, 0.5), S // 2)
  np.testing.assert_allclose(np.asarray(out["warped"]), np.asarray(motion.warp(image, motion.upsample_flow(half, S))),
                             atol=1e-5)
  m = np.asarray(out["blend_mask"])
  assert 0 < m.min() and m.max() < 1

  def loss(params):
    o, _ = g.apply({**variables, "params": params}, image, mask, src_lm, drv_lm, train=True, mutable=["batch_stats"])
    return jnp.mean(jnp.abs(o["generated"] - image))

  grads = jax.jit(jax.grad(loss))(variables["params"])
  for name in ("in_0", "blend", "occlusion"):
    assert float(jnp.abs(grads["motion_net"][name]["kernel"]).sum()) > 0, name
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(grads))


def test_residual_decoder_adds_its_image_to_the_warped_source_with_the_same_parameters():
  plain, residual = (_config("landmark_tps", motion_blend=False, motion_residual=r) for r in (False, True))
  variables = _init(plain)
  assert jax.tree.map(lambda a: a.shape, _init(residual, shapes_only=True)) == jax.tree.map(
      lambda a: a.shape, variables)
  src, drv = face_pairs(1, seed=6)[0]
  src_lm, drv_lm = jnp.asarray(src * (S / R))[None], jnp.asarray(drv * (S / R))[None]
  image = jnp.asarray(np.random.default_rng(7).uniform(-1, 1, (1, S, S, 3)), jnp.float32)
  mask = jnp.asarray(np.random.default_rng(8).uniform(0, 1, (1, S, S, 1)), jnp.float32)
  run = lambda c: factory.build_generator(c).apply(variables, image, mask, src_lm, drv_lm, train=False)  # noqa: E731
  a, b = run(plain), run(residual)
  np.testing.assert_allclose(np.asarray(b["warped"]), np.asarray(a["warped"]), atol=1e-6)
  expected = np.clip(np.asarray(a["warped"]) + np.asarray(a["generated"]), -1, 1)
  np.testing.assert_allclose(np.asarray(b["generated"]), expected, atol=1e-5)
  assert np.abs(np.asarray(b["generated"]) - np.asarray(a["generated"])).max() > 0.1


def test_unknown_motion_is_refused():
  with pytest.raises(ValueError, match="model.motion"):
    _init(_config("optical_flow"), shapes_only=True)


def test_bfloat16_generator_with_motion_runs_and_stays_close_to_float32():
  outs = {}
  for dtype in ("float32", "bfloat16"):
    config = _config("landmark_tps")
    config.compute_dtype = dtype
    g = factory.build_generator(config)
    variables = _init(_config("landmark_tps"))  # the same float32 parameters
    src, drv = face_pairs(1, seed=6)[0]
    image = jnp.asarray(np.random.default_rng(7).uniform(-1, 1, (2, S, S, 3)), jnp.float32)
    lm_s = jnp.asarray(np.stack([src, src]) * (S / R))
    lm_d = jnp.asarray(np.stack([drv, drv]) * (S / R))
    outs[dtype] = jax.jit(lambda v: g.apply(v, image, jnp.zeros((2, S, S, 1)), lm_s, lm_d, train=False))(variables)
  for key in ("generated", "warped", "blend_mask"):
    assert np.isfinite(np.asarray(outs["bfloat16"][key], np.float32)).all()
    np.testing.assert_allclose(np.asarray(outs["bfloat16"][key], np.float32), np.asarray(outs["float32"][key]),
                               atol=0.1)


@pytest.mark.parametrize("motion_kind,model", [("landmark_tps", {}),
                                              ("landmark_pwa", {"motion_blend": False, "motion_residual": True})])
def test_generator_only_step_trains_a_generator_with_motion(motion_kind, model):
  config = _config(motion_kind, **model)
  config.loss.identity_net = config.loss.perceptual_net = ""
  for group in ("first", "perturbed"):
    config.loss[group].identity = config.loss[group].perceptual = 0.0
  mesh = sharding.make_mesh()
  step = sharding.jit_train_step(finetune.make_generator_step(config), mesh)
  variables = jax.device_get(_init(config))
  state = sharding.replicate(finetune.create_generator_state(config, variables), mesh)
  batch = sharding.shard_batch(next(SyntheticFaces(S, 2, seed=0)), mesh)
  losses = []
  for _ in range(3):
    state, metrics, images = step(state, batch, {"identity": None, "perceptual": None})
    losses.append(float(metrics["g/pixel"]))
  assert np.isfinite(losses).all()
  head = "blend" if config.model.motion_blend else "residual"
  moved = jax.device_get(state.g_vars["params"]["motion_net"][head]["kernel"])
  assert np.abs(moved - variables["params"]["motion_net"][head]["kernel"]).max() > 0
  decoder = jax.device_get(state.g_vars["params"]["generation_decoder"])
  last = max((k for k in decoder if k.startswith("up_")), key=lambda k: int(k.split("_")[1]))
  if config.model.motion_residual:  # the residual decoder's last layer starts at zero, and learns
    assert not np.abs(variables["params"]["generation_decoder"][last]["kernel"]).any()
  assert np.abs(decoder[last]["kernel"]).max() > 0


def test_gan_step_with_the_blend_losses_reports_and_weights_them():
  config = _config("landmark_tps", motion_blend_bias=2.0)
  config.loss.identity_net = config.loss.perceptual_net = ""
  for group in ("first", "perturbed"):
    config.loss[group].identity = config.loss[group].perceptual = 0.0
  config.discriminator.num_scales, config.discriminator.base_features, config.discriminator.max_features = 1, 8, 16
  totals = {}
  for prior in (0.0, 2.0):
    config.loss.blend_prior, config.loss.decoder_pixel = prior, 25.0
    mesh = sharding.make_mesh()
    step = sharding.jit_train_step(step_lib.make_train_step(config), mesh)
    state = sharding.replicate(state_lib.create_train_state(config), mesh)
    batch = sharding.shard_batch(next(SyntheticFaces(S, 2, seed=0)), mesh)
    _, metrics, images = step(state, batch, {"identity": None, "perceptual": None})
    assert ("g/blend_prior" in metrics) == (prior > 0) and "g/decoder_pixel" in metrics
    m = np.asarray(images["blend_mask"])
    assert 0.85 < m.mean() < 0.91  # sigmoid(2) at initialisation
    totals[prior] = float(metrics["g/total"])
    if prior > 0:
      assert totals[prior] - totals[0.0] == pytest.approx(prior * float(metrics["g/blend_prior"]), rel=1e-3)


def _closed_mouth_pairs(n: int, seed: int):
  """Face pairs whose driving mouth is closed (inner lips a few hundredths of a pixel apart) while
  the source's is not: the spline's weights grow to thousands, as on real clips."""
  pairs = []
  for src, drv in face_pairs(n, seed=seed):
    drv = drv.copy()
    for upper, lower in ((61, 67), (62, 66), (63, 65)):
      drv[lower] = drv[upper] + np.float32(0.03)
    pairs.append((src, drv))
  return pairs


def test_host_flow_is_the_float64_spline_and_float32_loses_it_where_landmarks_nearly_coincide():
  pairs = _closed_mouth_pairs(3, seed=11)
  src = np.stack([p[0] for p in pairs])
  drv = np.stack([p[1] for p in pairs])
  host = tps.host_flow(src, drv, R)  # the half-size flow of a generator of resolution R
  assert host.shape == (3, R // 2, R // 2, 2) and host.dtype == np.float32
  half_src, half_drv = layout.rescale(src, 0.5), layout.rescale(drv, 0.5)
  px = R // 4  # pixels of the R/2 frame per normalized unit
  for k in range(3):
    exact = scipy_flow_at(half_src[k], half_drv[k], motion.DEFAULT_SMOOTHING, R // 2)
    assert np.abs(host[k] - exact).max() * px < 1e-4  # float32's rounding of the result only
  with jax.enable_x64(True):  # the JAX form of the same code, in float64: the same flow
    in_graph64 = motion.generator_flow(jnp.asarray(src, jnp.float64), jnp.asarray(drv, jnp.float64), R)
    assert np.abs(np.asarray(in_graph64) - host).max() * px < 1e-4
  # In float32 the solve and the sum of thousands-large weights round to a visible part of a pixel.
  in_graph32 = np.asarray(jax.jit(lambda s, d: motion.generator_flow(s, d, R))(src, drv))
  assert np.abs(in_graph32 - host).max() * px > 1e-2


def test_generator_takes_the_host_flow_in_place_of_its_own_spline():
  g, variables, src_lm, drv_lm, image, mask = _motion_case(6, 7)
  apply = jax.jit(lambda v, f: g.apply(v, image, mask, src_lm, drv_lm, train=False, tps_flow=f))
  own = jax.jit(lambda v: g.apply(v, image, mask, src_lm, drv_lm, train=False))(variables)
  given = apply(variables, tps.host_flow(src_lm, drv_lm, S))  # an ordinary face: float32 is close
  for k in own:
    np.testing.assert_allclose(np.asarray(given[k]), np.asarray(own[k]), atol=1e-4, err_msg=k)
  with pytest.raises(ValueError, match="tps_flow"):
    apply(variables, jnp.zeros((1, S, S, 2)))
