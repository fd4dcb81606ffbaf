"""Face masks: channels, where they light up, line width, anti-aliasing, clipping, determinism."""

import numpy as np
import pytest
from skimage import measure

from facegen_jax.data.synthetic import MEAN_FACE  # mean dlib landmarks of 20 real photos
from facegen_jax.landmarks import layout
from facegen_jax.landmarks.masks import default_line_width, mask_channels, render_mask, render_masks


def _face(size, scale=0.6):
  return (MEAN_FACE * scale * size + size / 2).astype(np.float32)


def _segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Distance of each of `points` [N, 2] to the segment a-b."""
  ab = b - a
  t = np.clip(((points - a) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
  return np.linalg.norm(points - (a + t[:, None] * ab), axis=1)


def _part_distance(points: np.ndarray, lm: np.ndarray, name: str) -> np.ndarray:
  start, stop, closed = layout.PARTS[name]
  poly = lm[start:stop]
  if closed:
    poly = np.concatenate([poly, poly[:1]])
  return np.min([_segment_distance(points, poly[i], poly[i + 1]) for i in range(len(poly) - 1)], axis=0)


def _inside_polygon(points: np.ndarray, poly: np.ndarray) -> np.ndarray:
  return measure.points_in_poly(points, poly)


@pytest.mark.parametrize("size", [64, 256])
def test_channels_dtype_and_range(size):
  lm = _face(size)
  single, parts = render_mask(lm, size), render_mask(lm, size, per_part=True)
  assert single.shape == (size, size, mask_channels(False)) == (size, size, 1)
  assert parts.shape == (size, size, mask_channels(True)) == (size, size, 9)
  assert single.dtype == parts.dtype == np.uint8
  assert single.max() == 255 and parts.max() == 255
  # The single mask is the union of the parts (at sub-pixel level, so where parts overlap within a
  # pixel it can be brighter than each part alone).
  np.testing.assert_array_equal(single[..., 0] > 0, parts.max(-1) > 0)
  assert np.all(single[..., 0] >= parts.max(-1))


@pytest.mark.parametrize("size", [64, 256])
def test_lit_only_near_the_landmark_lines(size):
  lm = _face(size)
  mask = render_mask(lm, size)[..., 0]
  half = default_line_width(size) / 2
  ys, xs = np.nonzero(mask)
  pix = np.stack([xs, ys], 1).astype(np.float64)
  dist = np.min([_part_distance(pix, lm, n) for n in layout.PART_NAMES], axis=0)
  filled = np.zeros(len(pix), bool)
  for name in ("right_eye", "left_eye", "inner_lips"):
    start, stop, _ = layout.PARTS[name]
    filled |= _inside_polygon(pix, lm[start:stop])
  # Every lit pixel is on a line (within half a width plus one pixel of AA) or inside a filled part.
  assert np.all(filled | (dist <= half + 1.0)), dist[~filled].max()
  # ... and every landmark is lit.
  for x, y in np.round(lm).astype(int):
    assert mask[y, x] > 0


@pytest.mark.parametrize("size", [64, 256])
def test_each_part_channel_covers_its_own_part(size):
  lm = _face(size)
  parts = render_mask(lm, size, per_part=True)
  half = default_line_width(size) / 2
  for k, name in enumerate(layout.PART_NAMES):
    channel = parts[..., k]
    start, stop, closed = layout.PARTS[name]
    for x, y in np.round(lm[start:stop]).astype(int):
      assert channel[y, x] > 0, (name, x, y)
    ys, xs = np.nonzero(channel)
    pix = np.stack([xs, ys], 1).astype(np.float64)
    near = _part_distance(pix, lm, name) <= half + 1.0
    if closed:
      near |= _inside_polygon(pix, lm[start:stop])
    assert near.all(), name
  # Filled parts are filled, the outer-lip outline is not.
  eye = layout.PART_NAMES.index("right_eye")
  cx, cy = np.round(lm[36:42].mean(0)).astype(int)
  assert parts[cy, cx, eye] == 255
  lips = layout.PART_NAMES.index("outer_lips")
  mid_upper_lip = np.round((lm[51] + lm[62]) / 2).astype(int)
  if size >= 256:
    assert parts[mid_upper_lip[1], mid_upper_lip[0], lips] == 0


@pytest.mark.parametrize("size", [64, 256, 1024])
def test_line_width_scales_with_size(size):
  """The jaw channel's ink equals its length times the line width (plus two round caps)."""
  lm = _face(size)
  jaw = render_mask(lm, size, per_part=True)[..., 0].astype(np.float64) / 255
  width = default_line_width(size)
  length = np.linalg.norm(np.diff(lm[0:17], axis=0), axis=1).sum()
  expected = length * width + np.pi * (width / 2) ** 2
  assert abs(jaw.sum() / expected - 1) < 0.12, (jaw.sum(), expected)
  thick = render_mask(lm, size, per_part=True, line_width=3 * width)[..., 0].astype(np.float64) / 255
  assert 2.5 < thick.sum() / jaw.sum() < 3.2


def test_anti_aliased():
  lm = _face(256)
  mask = render_mask(lm, 256)
  partial = np.count_nonzero((mask > 0) & (mask < 255))
  assert partial > 0.2 * np.count_nonzero(mask)
  # Sub-pixel motion changes the mask (no snapping to the pixel grid).
  moved = render_mask(lm + np.float32(0.25), 256)
  assert np.abs(moved.astype(int) - mask).sum() > 0


def test_translation_invariant_and_deterministic():
  """Rendering only the points' box is exact: a shifted face in a larger image is the same mask."""
  lm = _face(128)
  a = render_mask(lm, 128, per_part=True)
  b = render_mask(lm + 40, (208, 200), per_part=True, line_width=default_line_width(128))
  np.testing.assert_array_equal(a, b[40:168, 40:168])
  np.testing.assert_array_equal(a, render_mask(lm.copy(), 128, per_part=True))


def test_points_outside_are_clipped():
  lm = _face(64)
  half_out = lm + np.float32([40, 0])  # right half of the face beyond the right edge
  mask = render_mask(half_out, 64)
  assert mask.shape == (64, 64, 1) and mask.max() == 255
  assert mask[:, :int(half_out[:, 0].min()) - 2].max() == 0
  assert render_mask(lm + 1000, 64).max() == 0  # entirely outside: empty
  far = lm.copy()
  far[8] = [1e9, -1e9]  # absurd coordinates do not crash the rasteriser
  assert render_mask(far, 64, per_part=True).shape == (64, 64, 9)


def test_rectangular_and_batched():
  lm = _face(64)
  batch = render_masks(np.stack([lm, lm + 3]), (64, 96), per_part=True)
  assert batch.shape == (2, 64, 96, 9)
  np.testing.assert_array_equal(batch[1], render_mask(lm + 3, (64, 96), per_part=True))


def test_bad_input():
  with pytest.raises(ValueError, match=r"\[68, 2\]"):
    render_mask(np.zeros((67, 2)), 64)
  with pytest.raises(ValueError, match="NaN"):
    render_mask(np.full((68, 2), np.nan), 64)
  with pytest.raises(ValueError, match="positive"):
    render_mask(_face(64), 0)
