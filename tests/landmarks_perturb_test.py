"""Landmark perturbation: inside the image, magnitudes as configured, rigid groups, determinism."""

import numpy as np
import pytest

from facegen_jax.data.synthetic import MEAN_FACE
from facegen_jax.landmarks.perturb import CONTOUR_GROUP, FEATURE_GROUPS, face_size, perturb_landmarks


def _face(size=256, scale=0.5):
  return (MEAN_FACE * scale * size + size / 2).astype(np.float32)


def test_feature_groups_move_rigidly_by_up_to_the_magnitude():
  lm = _face()
  unit = face_size(lm)
  rng = np.random.default_rng(0)
  shifts = []
  for _ in range(300):
    out = perturb_landmarks(lm, rng, feature_shift=0.05, contour_shift=0.0, image_size=256)
    np.testing.assert_allclose(out[list(CONTOUR_GROUP)], lm[list(CONTOUR_GROUP)], atol=1e-4)
    for idx in FEATURE_GROUPS.values():
      d = out[list(idx)] - lm[list(idx)]
      np.testing.assert_allclose(d, np.broadcast_to(d[0], d.shape), atol=1e-3)  # one translation
      shifts.append(np.linalg.norm(d[0]))
  shifts = np.asarray(shifts) / unit
  assert shifts.max() <= 0.05 + 1e-6
  assert shifts.max() > 0.049  # the bound is reached
  assert abs(shifts.mean() - 2 / 3 * 0.05) < 0.003  # uniform on the disc: E|t| = 2R/3


def test_contour_moves_as_a_group_by_up_to_the_magnitude():
  lm = _face()
  unit = face_size(lm)
  rng = np.random.default_rng(1)
  shifts = []
  for _ in range(300):
    out = perturb_landmarks(lm, rng, feature_shift=0.0, contour_shift=0.08, image_size=(256, 256))
    np.testing.assert_allclose(out[17:], lm[17:], atol=1e-4)
    d = out[:17] - lm[:17]
    np.testing.assert_allclose(d, np.broadcast_to(d[0], d.shape), atol=1e-3)
    shifts.append(np.linalg.norm(d[0]) / unit)
  assert 0.078 < max(shifts) <= 0.08 + 1e-6


def test_feature_scale():
  lm = _face()
  rng = np.random.default_rng(2)
  ratios = []
  for _ in range(200):
    out = perturb_landmarks(lm, rng, feature_shift=0.0, contour_shift=0.0, feature_scale=0.2,
                            image_size=256)
    idx = list(FEATURE_GROUPS["mouth"])
    ratios.append(np.ptp(out[idx, 0]) / np.ptp(lm[idx, 0]))
  assert 0.8 - 1e-4 <= min(ratios) < 0.83 and 1.17 < max(ratios) <= 1.2 + 1e-4


@pytest.mark.parametrize("size", [(64, 64), (100, 160)])
def test_stays_inside_the_image(size):
  h, w = size
  rng = np.random.default_rng(3)
  for _ in range(100):
    # Faces near and beyond the border, large shifts.
    lm = (MEAN_FACE * rng.uniform(0.5, 1.2) * min(h, w) + rng.uniform(0, 1, 2) * [w, h]).astype(np.float32)
    out = perturb_landmarks(lm, rng, feature_shift=0.3, contour_shift=0.3, feature_scale=0.3,
                            image_size=size)
    assert out.shape == (68, 2) and out.dtype == np.float32
    assert out[:, 0].min() >= 0 and out[:, 0].max() <= w - 1
    assert out[:, 1].min() >= 0 and out[:, 1].max() <= h - 1


def test_deterministic_and_validated():
  lm = _face()
  kw = dict(feature_shift=0.05, contour_shift=0.03, feature_scale=0.1, image_size=256)
  a = perturb_landmarks(lm, np.random.default_rng(7), **kw)
  b = perturb_landmarks(lm, np.random.default_rng(7), **kw)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, perturb_landmarks(lm, np.random.default_rng(8), **kw))
  with pytest.raises(ValueError, match="fraction"):
    perturb_landmarks(lm, np.random.default_rng(0), feature_shift=5.0, contour_shift=0.0, image_size=256)
  with pytest.raises(ValueError, match=r"\[68, 2\]"):
    perturb_landmarks(lm[:10], np.random.default_rng(0), feature_shift=0.1, contour_shift=0.0, image_size=256)
