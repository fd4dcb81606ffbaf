"""dlib's face-chip alignment (`get_face_chip_details` + `extract_image_chip`) as JAX resampling.

Differentiable with respect to the image, so identity-loss gradients reach the generator.
It follows dlib/image_transforms/interpolation.h:

1. `get_face_chip_details(shape, size, padding)`: 33 of the 68 landmarks (nose, eyes, upper lip;
   brows and lower lip ignored) are matched to dlib's mean face, scaled into the padded chip, by a
   least-squares similarity transform; its angle and scale define a square `drectangle` of side
   `size * scale` centred at the image of the chip centre.
2. `extract_image_chips`: chip pixel `(0, 0)`, `(size-1, 0)`, `(0, size-1)` map to that rectangle's
   rotated corners (so the pixel spacing is `(size * scale - 1) / (size - 1)`); bilinear sampling,
   black where a sample's 2x2 neighbourhood leaves the image. When the rectangle is more than
   twice the chip, dlib first builds a `pyramid_down<2>` pyramid (5-tap [1 4 6 4]/16 binomial,
   drop every other pixel, `point_down(p) = p / 2 - (1.25, 0.75)`) and samples the level whose
   rectangle is the smallest one still larger than the chip. We build the same pyramid (on the
   whole image rather than dlib's crop around the face, so only the sampling phase of a level can
   differ by a pixel) and pick the level per face.
"""

import functools
from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np

# dlib's mean face shape for landmarks 17..67 (interpolation.h, get_face_chip_details).
_MEAN_FACE_X = (
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124,
    0.904991, 0.98004, 0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036,
    0.490127, 0.554217, 0.613373, 0.121737, 0.187122, 0.265825, 0.334606, 0.260918,
    0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335, 0.254149,
    0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
    0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874,
    0.553364, 0.490127, 0.42689)
_MEAN_FACE_Y = (
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891,
    0.0187482, 0.038915, 0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326,
    0.609345, 0.628106, 0.609345, 0.587326, 0.216423, 0.178758, 0.179852, 0.231733,
    0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099,
    0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
    0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746,
    0.784792, 0.824182, 0.831803, 0.824182)
# Landmarks used for the fit: 17..67 without the brows (17..26) and the lower lip (55..59, 65..67).
FIT_INDICES = tuple(i for i in range(17, 68) if not (17 <= i <= 26 or 55 <= i <= 59 or 65 <= i <= 67))
_PYRAMID_OFFSET = np.array([1.25, 0.75])  # pyramid_down<2>::point_down(p) = p / 2 - offset
_PYRAMID_KERNEL_1D = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def template_points(size: int = 150, padding: float = 0.25) -> np.ndarray:
  """dlib's mean-face points in chip pixels for `FIT_INDICES`: `[33, 2]`."""
  idx = np.array(FIT_INDICES) - 17
  mean = np.stack([np.array(_MEAN_FACE_X)[idx], np.array(_MEAN_FACE_Y)[idx]], axis=-1)
  return (padding + mean) / (2 * padding + 1) * size


def similarity_fit(src: jnp.ndarray, dst: jnp.ndarray) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """Least-squares similarity `dst ~ M src + t` (dlib's `find_similarity_transform`, Umeyama).

  Args: src `[N, 2]`, dst `[B, N, 2]`. Returns `(a, b)` `[B]` with `M = [[a, -b], [b, a]]`, and
  `t` `[B, 2]`.
  """
  src = jnp.asarray(src, jnp.float32)
  ms, md = src.mean(0), dst.mean(1)
  s, d = src - ms, dst - md[:, None]
  var = jnp.sum(s * s)
  a = jnp.einsum("nk,bnk->b", s, d) / var
  b = (jnp.einsum("n,bn->b", s[:, 0], d[..., 1]) - jnp.einsum("n,bn->b", s[:, 1], d[..., 0])) / var
  t = md - jnp.stack([a * ms[0] - b * ms[1], b * ms[0] + a * ms[1]], axis=-1)
  return (a, b), t


def chip_rectangles(landmarks: jnp.ndarray, size: int = 150, padding: float = 0.25):
  """dlib's `chip_details` of each face: centre `[B, 2]`, side `[B]` and angle `[B]`.

  The chip covers a `drectangle` of width `side` (dlib's inclusive width, so corner to corner is
  `side - 1`) centred at `centre`, rotated by `angle` radians.
  """
  points = jnp.asarray(landmarks, jnp.float32)[:, jnp.array(FIT_INDICES)]
  (a, b), t = similarity_fit(template_points(size, padding), points)
  half = size / 2.0
  centre = jnp.stack([a * half - b * half, b * half + a * half], axis=-1) + t
  return centre, size * jnp.sqrt(a * a + b * b), jnp.arctan2(b, a)


def _pyramid_down(image: jnp.ndarray) -> jnp.ndarray:
  """dlib's `pyramid_down<2>` on `[B, H, W, C]`: 5x5 binomial filter, keep every other pixel.

  Output `[B, (H-3)//2, (W-3)//2, C]`; output pixel (r, c) is centred on input (2r+2, 2c+2).
  """
  c = image.shape[-1]
  k = np.outer(_PYRAMID_KERNEL_1D, _PYRAMID_KERNEL_1D)[:, :, None, None] * np.ones((1, 1, 1, c))
  return jax.lax.conv_general_dilated(
      image, jnp.asarray(k, image.dtype), window_strides=(2, 2), padding="VALID",
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)


def num_pyramid_levels(height: int, width: int, max_levels: int = 8) -> int:
  """How many `pyramid_down<2>` levels an image of this size has (dlib stops at 8 pixels)."""
  n = 0
  while n < max_levels and min(height, width) > 8:
    height, width = (height - 3) // 2, (width - 3) // 2
    if min(height, width) <= 1:
      break
    n += 1
  return n


def _bilinear_dlib(image: jnp.ndarray, x: jnp.ndarray, y: jnp.ndarray, width: jnp.ndarray,
                   height: jnp.ndarray, fill: float) -> jnp.ndarray:
  """dlib's `interpolate_bilinear` on `image` `[H, W, C]` at coords `[h, w]`, as if the image were
  only `width` x `height` (its top-left part): `fill` where a sample's 2x2 neighbourhood leaves
  that area. Returns `[h, w, C]`."""
  h, w = image.shape[:2]
  x0, y0 = jnp.floor(x), jnp.floor(y)
  fx, fy = (x - x0)[..., None], (y - y0)[..., None]
  valid = (x0 >= 0) & (y0 >= 0) & (x0 + 1 <= width - 1) & (y0 + 1 <= height - 1)
  xi = jnp.clip(x0, 0, w - 2).astype(jnp.int32)
  yi = jnp.clip(y0, 0, h - 2).astype(jnp.int32)
  tl, tr = image[yi, xi], image[yi, xi + 1]
  bl, br = image[yi + 1, xi], image[yi + 1, xi + 1]
  out = (1 - fy) * ((1 - fx) * tl + fx * tr) + fy * ((1 - fx) * bl + fx * br)
  return jnp.where(valid[..., None], out, fill)


def _source_crop(centre, side, angle, n_down, height: int, width: int):
  """dlib's integer `bounding_box` around the rotated chip rectangle, grown by the margin its
  pyramid depth needs (2, 6, 14, ...) and clipped to the image: `(left, top, right, bottom)`."""
  grow = 2.0 * 2.0 ** n_down.astype(jnp.float32) + 2.0 * (2.0 ** n_down.astype(jnp.float32) - 1.0)
  half = (side - 1.0) / 2.0 * (jnp.abs(jnp.cos(angle)) + jnp.abs(jnp.sin(angle)))
  rnd = lambda v: jnp.floor(v + 0.5).astype(jnp.int32)
  left = rnd(jnp.maximum(centre[:, 0] - half - grow, 0.0))
  top = rnd(jnp.maximum(centre[:, 1] - half - grow, 0.0))
  right = rnd(jnp.minimum(centre[:, 0] + half + grow, width - 1.0))
  bottom = rnd(jnp.minimum(centre[:, 1] + half + grow, height - 1.0))
  return left, top, right, bottom


def _quantize_like_dlib(x: jnp.ndarray) -> jnp.ndarray:
  """dlib stores pyramid levels and chips as uint8 by truncation; straight-through gradient."""
  u = (x + 1.0) * 127.5
  q = jnp.clip(jnp.floor(u), 0.0, 255.0)
  return x + jax.lax.stop_gradient(q / 127.5 - 1.0 - x)


@functools.partial(jax.jit, static_argnames=("size", "padding", "max_levels", "quantize"))
def extract_face_chips(images: jnp.ndarray, landmarks: jnp.ndarray, size: int = 150, padding: float = 0.25,
                       max_levels: int = 8, quantize: bool = False) -> jnp.ndarray:
  """dlib's aligned face chips, differentiable with respect to `images`.

  Args:
    images: `[B, H, W, 3]` float in [-1, 1].
    landmarks: `[B, 68, 2]` (x, y) pixel coordinates of the iBUG 68 points in `images`.
    size: chip side in pixels (dlib's face recognition uses 150).
    padding: dlib's padding around the mean face (0.25 for face recognition).
    max_levels: most pyramid levels to build.
    quantize: truncate pyramid levels and the chip to uint8 steps as dlib does (values only;
      gradients pass straight through). Only needed to reproduce dlib's chips bit for bit.
  Returns:
    `[B, size, size, 3]` chips in [-1, 1]; black (-1) outside the image.
  """
  images = jnp.asarray(images, jnp.float32)
  centre, side, angle = jax.tree.map(jax.lax.stop_gradient, chip_rectangles(landmarks, size, padding))
  n_levels = num_pyramid_levels(images.shape[1], images.shape[2], max_levels)

  # dlib: while (rect_down(rect).area() > size*size) descend; rect_down maps width w to (w+1)/2.
  n_down, w = jnp.zeros(side.shape, jnp.int32), side
  for _ in range(n_levels):
    w = (w + 1.0) / 2.0
    n_down = n_down + (w > size).astype(jnp.int32)

  # dlib builds its pyramid on a crop around the face; move the crop's corner to the origin so our
  # whole-image pyramid samples the same pixels, and sample only inside the crop (and its levels).
  left, top, right, bottom = _source_crop(centre, side, angle, n_down, images.shape[1], images.shape[2])
  shifted = jax.vmap(lambda im, dy, dx: jnp.roll(im, (-dy, -dx), axis=(0, 1)))(images, top, left)
  levels, extents = [shifted], [(right - left + 1, bottom - top + 1)]
  for _ in range(n_levels):
    nxt = _pyramid_down(levels[-1])
    levels.append(_quantize_like_dlib(nxt) if quantize else nxt)
    extents.append(tuple((e - 3) // 2 for e in extents[-1]))

  # Chip grid relative to the rectangle centre (before rotation), in level-0 pixels.
  u = jnp.arange(size, dtype=jnp.float32) / (size - 1) - 0.5
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  centre = centre - jnp.stack([left, top], axis=-1).astype(jnp.float32)
  chips = None
  n_down = jnp.minimum(n_down, n_levels)  # faces needing more levels than the image has use the last
  for level, (image, (ew, eh)) in enumerate(zip(levels, extents)):
    # Rectangle after `level` point_downs: the centre moves, the side follows w -> (w+1)/2.
    c_l, s_l = centre, side
    for _ in range(level):
      c_l = c_l / 2.0 - jnp.asarray(_PYRAMID_OFFSET, jnp.float32)
      s_l = (s_l + 1.0) / 2.0
    span = (s_l - 1.0)[:, None, None]
    gx, gy = u[None, None, :] * span, u[None, :, None] * span  # [B, 1, size], [B, size, 1]
    x = c_l[:, 0, None, None] + cos[:, None, None] * gx - sin[:, None, None] * gy
    y = c_l[:, 1, None, None] + sin[:, None, None] * gx + cos[:, None, None] * gy
    chip = jax.vmap(_bilinear_dlib, in_axes=(0, 0, 0, 0, 0, None))(image, x, y, ew, eh, -1.0)
    chips = chip if chips is None else jnp.where((n_down == level)[:, None, None, None], chip, chips)
  return _quantize_like_dlib(chips) if quantize else chips
