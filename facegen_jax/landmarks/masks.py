"""Face masks from 68 landmarks (SPEC 1.2): the raster the generator is conditioned on.

The iBUG layout is drawn as lines: jaw, brows and the nose bridge/base as open polylines; eyes and
outer/inner lips as closed outlines, with the eyes and the inner mouth also filled (so an open or
closed mouth and eye are visible as areas, not just outlines). Anti-aliased by drawing at 4x and
averaging down. Line width scales with the image size by default (about 1/128 of it, at least 1
pixel), so masks look alike at every resolution. Points outside the image are clipped by the
drawing, never an error.
"""

from typing import Optional, Union

import numpy as np
from PIL import Image, ImageDraw

from facegen_jax.landmarks import layout

SUPERSAMPLE = 4
FILLED_PARTS = ("right_eye", "left_eye", "inner_lips")


def mask_channels(per_part: bool) -> int:
  """M: 1, or one channel per landmark part (layout.PART_NAMES)."""
  return len(layout.PART_NAMES) if per_part else 1


def _size_hw(size: Union[int, tuple]) -> tuple[int, int]:
  if isinstance(size, (int, np.integer)):
    return int(size), int(size)
  h, w = size
  return int(h), int(w)


def _draw_part(draw: ImageDraw.ImageDraw, pts: np.ndarray, closed: bool, filled: bool, width: int) -> None:
  xy = [tuple(p) for p in pts]
  if closed:
    if filled:
      draw.polygon(xy, fill=255)
    xy = xy + xy[:1]
  draw.line(xy, fill=255, width=width, joint="curve")


def render_mask(landmarks: np.ndarray, size: Union[int, tuple], per_part: bool = False,
                line_width: Optional[float] = None) -> np.ndarray:
  """Renders the face mask.

  Args:
    landmarks: `[68, 2]` float (x, y) pixels in an image of `size`.
    size: H (= W) or (H, W).
    per_part: one channel per part (jaw, brows, nose, eyes, lips) instead of one.
    line_width: line width in output pixels; default max(1, min(H, W) / 128).

  Returns: `[H, W, M]` uint8, 0..255.
  """
  lm = np.asarray(landmarks, np.float64)
  if lm.shape != (layout.NUM_LANDMARKS, 2):
    raise ValueError(f"landmarks must be [68, 2] (iBUG layout), got {lm.shape}")
  if not np.isfinite(lm).all():
    raise ValueError("landmarks contain NaN or inf")
  h, w = _size_hw(size)
  width = max(1.0, min(h, w) / 128.0) if line_width is None else float(line_width)
  ss_width = max(1, int(round(width * SUPERSAMPLE)))
  pts = (lm + 0.5) * SUPERSAMPLE - 0.5  # pixel centres map to supersampled pixel centres
  channels = []
  canvas = None
  for name in layout.PART_NAMES:
    if canvas is None or per_part:
      canvas = Image.new("L", (w * SUPERSAMPLE, h * SUPERSAMPLE), 0)
      draw = ImageDraw.Draw(canvas)
    start, stop, closed = layout.PARTS[name]
    _draw_part(draw, pts[start:stop], closed, name in FILLED_PARTS, ss_width)
    if per_part:
      channels.append(canvas)
  if not per_part:
    channels = [canvas]
  out = [np.asarray(c.resize((w, h), Image.BOX)) for c in channels]
  return np.stack(out, axis=-1)


def render_masks(landmarks: np.ndarray, size: Union[int, tuple], per_part: bool = False,
                 line_width: Optional[float] = None) -> np.ndarray:
  """Batched render_mask: `[B, 68, 2]` -> `[B, H, W, M]` uint8."""
  return np.stack([render_mask(l, size, per_part, line_width) for l in np.asarray(landmarks)])
