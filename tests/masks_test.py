"""Face-mask rendering: channels, locality, anti-aliasing, determinism, bad input."""

import numpy as np
import pytest

from facegen_jax.data.synthetic import MEAN_FACE
from facegen_jax.landmarks import layout
from facegen_jax.landmarks.masks import mask_channels, render_mask, render_masks


def _face(size):
  return (MEAN_FACE * 0.6 * size + size / 2).astype(np.float32)


@pytest.mark.parametrize("size", [64, 256])
def test_channels_and_locality(size):
  lm = _face(size)
  m = render_mask(lm, size)
  assert m.shape == (size, size, 1) and m.dtype == np.uint8 and mask_channels(False) == 1
  parts = render_mask(lm, size, per_part=True)
  assert parts.shape == (size, size, len(layout.PART_NAMES)) == (size, size, mask_channels(True))
  on = np.argwhere(m[..., 0] > 0)
  # Every lit pixel is within a few line widths of a landmark segment: check against the points' box.
  lo, hi = lm.min(0) - 3, lm.max(0) + 3
  assert (on[:, 1] >= lo[0]).all() and (on[:, 1] <= hi[0]).all()
  assert (on[:, 0] >= lo[1]).all() and (on[:, 0] <= hi[1]).all()
  # Anti-aliased: intermediate values exist.
  assert ((m > 0) & (m < 255)).any()
  # Each part channel lights up around its own points, e.g. the jaw channel near the jaw.
  jaw = parts[..., layout.PART_NAMES.index("jaw")]
  for x, y in lm[0:17].astype(int):
    assert jaw[max(0, y - 2):y + 3, max(0, x - 2):x + 3].max() > 0
  mouth = parts[..., layout.PART_NAMES.index("inner_lips")]
  assert mouth[: int(lm[17:27, 1].max())].max() == 0  # nothing above the brows
  np.testing.assert_array_equal(parts.max(-1) > 0, render_mask(lm, size)[..., 0] > 0)


def test_deterministic_clipped_and_batched():
  lm = _face(64)
  np.testing.assert_array_equal(render_mask(lm, 64), render_mask(lm, 64))
  outside = lm + 50  # partly outside the image: clipped, not an error
  assert render_mask(outside, 64).shape == (64, 64, 1)
  batch = render_masks(np.stack([lm, lm + 1]), (64, 48))
  assert batch.shape == (2, 64, 48, 1)


def test_bad_landmarks():
  with pytest.raises(ValueError, match=r"\[68, 2\]"):
    render_mask(np.zeros((5, 2)), 64)
  bad = _face(64)
  bad[3, 0] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    render_mask(bad, 64)
