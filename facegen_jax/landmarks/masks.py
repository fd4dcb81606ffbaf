"""Face masks rendered from 68 iBUG landmarks (the conditioning map of the generator).

The mask is a line drawing of the face: the jaw, both brows, the nose bridge and the nose base
as open polylines; both eyes and the outer and inner lips as closed outlines. The eyes and the
mouth opening (inner lips) are also filled, so their opening is visible at low resolution.

`render_mask` draws with PIL at `supersample`x the output size, only over the bounding box of the
points (clipped to the image), and box-downsamples: edges are anti-aliased (values between 0 and
255) and the cost scales with the face, not the image. Line width defaults to
`default_line_width(size)` = max(1, min(H, W) / 128) output pixels (1 px at 64-128, 2 px at 256,
8 px at 1024), so a mask looks the same at every resolution. Points outside the image are drawn
as far as they reach into it; they are not an error.

Output: uint8 `[H, W, M]`, 0 (background) .. 255 (on a line / inside a filled part); M = 1, or
`len(layout.PART_NAMES)` with `per_part=True` (channel k = part `layout.PART_NAMES[k]`).
"""

from typing import Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw

from facegen_jax.landmarks import layout

Size = Union[int, Tuple[int, int], Sequence[int]]

# Closed parts that are also filled (not only outlined).
FILLED_PARTS = ("right_eye", "left_eye", "inner_lips")
SUPERSAMPLE = 4


def mask_channels(per_part: bool) -> int:
  """Number of mask channels M: 1, or one per landmark part."""
  return len(layout.PART_NAMES) if per_part else 1


def default_line_width(size: Size) -> float:
  """Default line width in output pixels for an image of `size`: max(1, min(H, W) / 128)."""
  h, w = _hw(size)
  return max(1.0, min(h, w) / 128.0)


def _hw(size: Size) -> Tuple[int, int]:
  if np.ndim(size) == 0:
    h = w = int(size)
  else:
    if len(size) != 2:
      raise ValueError(f"size must be an int or (H, W), got {size!r}")
    h, w = int(size[0]), int(size[1])
  if h <= 0 or w <= 0:
    raise ValueError(f"mask size must be positive, got {(h, w)}")
  return h, w


def _check_landmarks(landmarks: np.ndarray) -> np.ndarray:
  pts = np.asarray(landmarks, np.float64)
  if pts.shape != (layout.NUM_LANDMARKS, 2):
    raise ValueError(f"landmarks must be [{layout.NUM_LANDMARKS}, 2] (x, y), got shape {pts.shape}")
  if not np.all(np.isfinite(pts)):
    raise ValueError("landmarks contain NaN or inf; cannot render a mask")
  return pts


def _draw_parts(out: np.ndarray, pts: np.ndarray, parts: Sequence[str], width: float, ss: int) -> None:
  """Draws `parts` of `pts` ([68, 2] output pixels) into the 2-D uint8 `out` (max-composited).

  Only the bounding box of the parts' points (plus the line width) is rasterised.
  """
  h, w = out.shape
  idx = np.concatenate([np.arange(*layout.PARTS[p][:2]) for p in parts])
  margin = width / 2.0 + 2.0
  lo = np.floor(pts[idx].min(0) - margin).astype(np.int64)
  hi = np.ceil(pts[idx].max(0) + margin).astype(np.int64) + 1
  x0, y0 = max(int(lo[0]), 0), max(int(lo[1]), 0)
  x1, y1 = min(int(hi[0]), w), min(int(hi[1]), h)
  if x1 <= x0 or y1 <= y0:  # entirely outside the image
    return
  canvas = Image.new("L", ((x1 - x0) * ss, (y1 - y0) * ss), 0)
  draw = ImageDraw.Draw(canvas)
  # Output pixel i spans sub-pixels [ss*i, ss*i + ss - 1]; its centre is ss*i + (ss - 1) / 2.
  # Far-away points are clamped to keep PIL's integer rasteriser in range (the visible part of a
  # line through them changes only for points further than 8 image sizes outside).
  sub = (pts - np.array([x0, y0])) * ss + (ss - 1) / 2.0
  limit = 8.0 * ss * max(h, w)
  sub = np.clip(sub, -limit, limit)
  line_px = max(1, int(round(width * ss)))
  for name in parts:
    start, stop, closed = layout.PARTS[name]
    poly = [tuple(p) for p in sub[start:stop]]
    if name in FILLED_PARTS:
      draw.polygon(poly, fill=255)
    if closed:
      poly = poly + poly[:1]
    draw.line(poly, fill=255, width=line_px, joint="curve")
    # Round caps at the ends of open lines (and at the seam of closed ones).
    r = line_px / 2.0
    for x, y in (poly[0], poly[-1]):
      draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
  small = np.asarray(canvas.reduce(ss)) if ss > 1 else np.asarray(canvas)
  np.maximum(out[y0:y1, x0:x1], small, out=out[y0:y1, x0:x1])


def render_mask(landmarks: np.ndarray, size: Size, per_part: bool = False,
                line_width: Optional[float] = None, supersample: int = SUPERSAMPLE) -> np.ndarray:
  """Renders the face mask of one face.

  Args:
    landmarks: `[68, 2]` float (x, y) pixel coordinates in the iBUG order (pixel centres at
      integer coordinates, as dlib reports them).
    size: output size, `S` for S x S or `(H, W)`.
    per_part: one channel per part of `layout.PART_NAMES` instead of one channel.
    line_width: line width in output pixels; default `default_line_width(size)`.
    supersample: anti-aliasing factor (drawn at this many times the size, then box-averaged).

  Returns:
    uint8 `[H, W, M]` (M = `mask_channels(per_part)`).
  """
  h, w = _hw(size)
  pts = _check_landmarks(landmarks)
  width = default_line_width((h, w)) if line_width is None else float(line_width)
  if width <= 0:
    raise ValueError(f"line_width must be positive, got {line_width}")
  ss = int(supersample)
  if ss < 1:
    raise ValueError(f"supersample must be >= 1, got {supersample}")
  out = np.zeros((mask_channels(per_part), h, w), np.uint8)
  if per_part:
    for k, name in enumerate(layout.PART_NAMES):
      _draw_parts(out[k], pts, (name,), width, ss)
  else:
    _draw_parts(out[0], pts, layout.PART_NAMES, width, ss)
  return np.ascontiguousarray(out.transpose(1, 2, 0))


def render_masks(landmarks: np.ndarray, size: Size, per_part: bool = False,
                 line_width: Optional[float] = None) -> np.ndarray:
  """`render_mask` over a batch: landmarks `[B, 68, 2]` -> uint8 `[B, H, W, M]`."""
  landmarks = np.asarray(landmarks)
  if landmarks.ndim != 3:
    raise ValueError(f"render_masks takes landmarks [B, 68, 2], got shape {landmarks.shape}")
  h, w = _hw(size)
  out = np.empty((landmarks.shape[0], h, w, mask_channels(per_part)), np.uint8)
  for i, lm in enumerate(landmarks):
    out[i] = render_mask(lm, (h, w), per_part=per_part, line_width=line_width)
  return out
