"""The piecewise-affine landmark flow (landmarks/pwa.py, `model.motion="landmark_pwa"`): landmark
transport, the identity, the classical per-triangle map, numpy against JAX, and a generator that
starts as its warp."""

import jax
import jax.numpy as jnp
import numpy as np

from facegen_jax.evaluation import baselines
from facegen_jax.landmarks import pwa, tps
from facegen_jax.models import factory, motion

from tests.motion_test import R, S, _config, _init, face_pairs

ANCHORS = tps.to_pixels(tps.border_anchors(tps.ANCHORS_PER_SIDE, np.float64), R)


def _orientations(landmarks: np.ndarray) -> np.ndarray:
  p = np.concatenate([np.asarray(landmarks, np.float64), ANCHORS])
  tri = pwa.triangles()
  e1, e2 = p[tri[:, 1]] - p[tri[:, 0]], p[tri[:, 2]] - p[tri[:, 0]]
  return np.sign(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])


def unfolded_pairs(n: int, seed: int):
  """The pairs of `face_pairs(n, seed)` on which neither mesh folds (every triangle keeps the
  orientation it has on the first pair's source): there each pixel lies in exactly one triangle."""
  pairs = face_pairs(n, seed)
  ref = _orientations(pairs[0][0])
  kept = [(s, d) for s, d in pairs if (_orientations(s) == ref).all() and (_orientations(d) == ref).all()]
  assert len(kept) >= n // 2, "too few unfolded pairs: pick another seed"
  return kept


def test_flow_carries_every_driving_landmark_onto_its_source_landmark():
  pairs = [(src, np.round(drv)) for src, drv in face_pairs(16, seed=0)]  # driving on pixel centres
  ref = _orientations(pairs[0][0])
  tested = 0
  for src, drv in pairs:
    if not ((_orientations(src) == ref).all() and (_orientations(drv) == ref).all()):
      continue  # a folded mesh: overlapping triangles compete (see landmarks/pwa.py)
    flow = pwa.landmark_flow(src[None].astype(np.float64), drv[None].astype(np.float64), R)[0]
    cols, rows = drv[:, 0].astype(int), drv[:, 1].astype(int)
    err = np.abs(tps.to_pixels(flow[rows, cols], R) - src).max()
    assert err < 0.05, err
    tested += 1
  assert tested >= 4, tested


def test_flow_is_the_identity_for_equal_landmarks():
  for src, _ in face_pairs(3, seed=2):
    flow = pwa.host_flow(src[None], src[None], R)[0]
    assert np.abs(flow - tps.pixel_grid(R // 2)).max() * (R // 4) < 1e-4


def test_flow_is_the_classical_piecewise_affine_map_of_the_same_mesh():
  """Where the driving mesh does not fold, each pixel lies in one triangle: the flow is that
  triangle's affine map, as baselines.piecewise_affine_coords computes it triangle by triangle."""
  tri = pwa.triangles()
  for src, drv in unfolded_pairs(8, seed=3):
    s = np.concatenate([src.astype(np.float64), ANCHORS])
    d = np.concatenate([drv.astype(np.float64), ANCHORS])
    classical = baselines.piecewise_affine_coords(s, d, R, R, tri)  # (y, x) source pixels
    flow = tps.to_pixels(pwa.landmark_flow(src[None].astype(np.float64), drv[None].astype(np.float64), R)[0], R)
    np.testing.assert_allclose(flow[..., 0], classical[1], atol=1e-6)
    np.testing.assert_allclose(flow[..., 1], classical[0], atol=1e-6)


def test_jax_float32_flow_equals_the_float64_host_flow():
  pairs = face_pairs(4, seed=4)
  src = np.stack([p[0] for p in pairs])
  drv = np.stack([p[1] for p in pairs])
  in_graph = np.asarray(jax.jit(lambda s, d: motion.generator_flow(s, d, R, motion="landmark_pwa"))(src, drv))
  host = motion.host_flow(src, drv, R, motion="landmark_pwa")
  assert np.abs(in_graph - host).max() * tps.flow_size(R) / 2 < 1e-3


def test_pwa_generator_has_the_spline_generator_tree_and_starts_as_its_warp():
  shapes = lambda c: jax.tree.map(lambda a: a.shape, _init(c, shapes_only=True))  # noqa: E731
  assert shapes(_config("landmark_pwa")) == shapes(_config("landmark_tps"))
  config = _config("landmark_pwa", motion_blend=False, motion_residual=True)
  src, drv = face_pairs(1, seed=5)[0]
  src_lm, drv_lm = jnp.asarray(src * (S / R))[None], jnp.asarray(drv * (S / R))[None]
  image = jnp.asarray(np.random.default_rng(6).uniform(-1, 1, (1, S, S, 3)), jnp.float32)
  mask = jnp.asarray(np.random.default_rng(7).uniform(0, 1, (1, S, S, 1)), jnp.float32)
  out = factory.build_generator(config).apply(_init(config), image, mask, src_lm, drv_lm, train=False)
  half = pwa.host_flow(np.asarray(src_lm), np.asarray(drv_lm), S)
  np.testing.assert_allclose(np.asarray(out["warped"]),
                             np.asarray(motion.warp(image, motion.upsample_flow(jnp.asarray(half), S))), atol=1e-4)
  # The residual decoder's last layer starts at zero: the untrained generator outputs the warp.
  np.testing.assert_array_equal(np.asarray(out["generated"]), np.clip(np.asarray(out["warped"]), -1, 1))


def test_host_flow_rasterized_by_triangle_boxes_equals_the_all_triangles_flow_even_where_the_mesh_folds():
  rng = np.random.default_rng(8)
  pairs = face_pairs(6, seed=8)
  src = np.stack([p[0] for p in pairs]).astype(np.float64)
  drv = np.stack([p[1] for p in pairs]).astype(np.float64)
  drv[3:] += rng.normal(0, 3, drv[3:].shape)  # folds, and holes no triangle covers
  assert any(not (_orientations(d) == _orientations(src[0])).all() for d in drv[3:])
  host = pwa.host_flow(src, drv, R)
  everywhere = pwa.generator_flow(src, drv, R).astype(np.float32)
  np.testing.assert_array_equal(host, everywhere)


def test_host_flow_reads_pixels_no_usable_triangle_holds_through_the_nearest_triangle(monkeypatch):
  """With small triangles left out as degenerate, holes open in the mesh: the rasterized flow's
  fallback reads them as the all-triangles flow does."""
  monkeypatch.setattr(pwa, "_MIN_AREA", 5e-3)
  src, drv = face_pairs(1, seed=9)[0]
  src, drv = src.astype(np.float64), drv.astype(np.float64)
  size = R // 2
  covered = np.zeros((size, size), bool)
  tri, d = pwa.triangles(), pwa.mesh_points(drv[None] / 2, size)[0]
  grid = tps.pixel_grid(size, np.float64)
  for i0, i1, i2 in tri:
    e1, e2 = d[i1] - d[i0], d[i2] - d[i0]
    det = e1[0] * e2[1] - e1[1] * e2[0]
    if abs(det) > 5e-3:
      rel = grid - d[i0]
      b1 = (rel[..., 0] * e2[1] - rel[..., 1] * e2[0]) / det
      b2 = (e1[0] * rel[..., 1] - e1[1] * rel[..., 0]) / det
      covered |= (b1 >= 0) & (b2 >= 0) & (b1 + b2 <= 1)
  assert (~covered).sum() > 0  # the case has holes
  np.testing.assert_array_equal(pwa.host_flow(src[None], drv[None], R),
                                pwa.generator_flow(src[None], drv[None], R).astype(np.float32))
