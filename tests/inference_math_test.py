"""The detail post-process and relative motion transfer (docs/method.md) on constructed cases."""

import numpy as np
import pytest

from facegen_jax.inference import detail_blend, motion
from facegen_jax.data.synthetic import MEAN_FACE


def test_mask4_follows_spec_formula():
  m2 = np.zeros((4, 4), np.float32)
  m3 = np.zeros((4, 4), np.float32)
  m2[0, 0] = 1.0  # only the reference mask is on
  m3[1, 1] = 1.0  # only the target mask is on
  m2[2, 2] = m3[2, 2] = 1.0  # both on: they agree
  m2[3, 3], m3[3, 3] = 0.75, 0.25
  for mode, norm in (("mean_scale", 0.5), ("variance_scale", 0.125)):
    mask4 = detail_blend.mask4_from_masks(m2, m3, mode)[..., 0]
    mean = (m2 + m3) / 2
    var = ((m2 - mean) ** 2 + (m3 - mean) ** 2) / 2
    scale, shift = (mean, var) if mode == "mean_scale" else (var, mean)
    np.testing.assert_allclose(mask4, np.clip(np.abs((scale * m2 + shift) - (scale * m3 + shift)) / norm, 0, 1))
    assert mask4[0, 0] == mask4[1, 1] == 1.0  # they differ fully
    assert mask4[2, 2] == 0.0 and mask4[3, 0] == 0.0  # they agree
    assert 0.0 < mask4[3, 3] < 1.0
    assert mask4.min() >= 0 and mask4.max() <= 1


def test_fuse_takes_source_pixel_where_mask4_is_one():
  rng = np.random.default_rng(0)
  target = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
  reference = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
  mask4 = np.zeros((4, 4, 1), np.float32)
  mask4[0, 0] = 1.0
  mask4[1, 1] = 0.5
  out = detail_blend.fuse(target, reference, mask4)
  np.testing.assert_array_equal(out[0, 0], reference[0, 0])
  np.testing.assert_array_equal(out[2:], target[2:])
  np.testing.assert_allclose(out[1, 1], np.round((target[1, 1].astype(float) + reference[1, 1]) / 2), atol=1)


def test_unknown_blend_mode():
  with pytest.raises(ValueError, match="mean_scale"):
    detail_blend.mask4_from_masks(np.zeros((2, 2)), np.zeros((2, 2)), "median")


def _face(scale, centre):
  return (MEAN_FACE * scale + np.asarray(centre, np.float32)).astype(np.float32)


def test_relative_motion_shift_gives_same_shift():
  source = _face(100, (128, 128))
  reference = _face(100, (90, 140))  # same face size as the source
  shift = np.array([7.0, -3.0], np.float32)
  for adapt in (False, True):
    out = motion.transfer(source, reference + shift, reference, "relative", adapt_scale=adapt)
    np.testing.assert_allclose(out, source + shift, atol=1e-3)


def test_relative_motion_scales_with_face_size_and_keeps_source_shape():
  source = _face(200, (128, 128))
  reference = _face(100, (60, 60))
  driving = reference.copy()
  driving[48:68, 1] += 4.0  # the driver opens the mouth by 4 px
  out = motion.transfer(source, driving, reference, "relative", adapt_scale=True)
  np.testing.assert_allclose(out[:48], source[:48], atol=1e-3)  # shape kept
  np.testing.assert_allclose(out[48:68, 1] - source[48:68, 1], 8.0, atol=1e-3)  # motion scaled x2
  np.testing.assert_array_equal(motion.transfer(source, driving, reference, "absolute"), driving)
  with pytest.raises(ValueError, match="relative"):
    motion.transfer(source, driving, reference, "sideways")
