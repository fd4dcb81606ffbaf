"""Generated faces pasted back into the full photo they were cropped from.

The crop is a similarity of the photo (`facegen_jax.landmarks.crop.Similarity`: scale, rotation,
shift): the square box of `crop_and_resize` (`CropTransform`, or the box itself), or any rotated
crop (`Similarity.about`). `paste_back` resamples the generated R x R face into the photo by the
inverse of that similarity (rotation included) and composites it through a mask:

- with the face's landmarks (crop pixels), the face-shaped mask of `face_mask`: the convex hull of
  the landmarks and a forehead above the brows, dilated by `grow` and feathered over `feather`
  (both fractions of the face's size), zero at the crop's border; optionally the colours of the
  face region are matched to the photo's (`match_colors`, Reinhard's mean and spread in Lab);
- without landmarks, the feathered square of `feather_mask` over the whole crop.

Photo pixels where the resampled mask is 0 (beyond the dilated hull and its feather) are returned
unchanged, bit for bit. `seam` is the mean absolute gradient of an image along a paste's border;
it counts the photo's own edges there as well as the paste's step (and a blurred border scores low).
"""

from typing import Optional, Sequence, Union

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage, spatial

from facegen_jax.landmarks.crop import CropTransform, Similarity

# Defaults of the face-shaped mask, in fractions of the face's size (the larger side of its landmarks' box).
GROW = 0.05
FEATHER = 0.15
FOREHEAD = 0.2


def feather_mask(size: int, feather: float = 0.12) -> np.ndarray:
  """`[size, size]` float mask: 1 in the middle, falling smoothly to 0 over the outer `feather`
  fraction of each side (a smoothstep ramp), 0 on the border."""
  t = (np.arange(size) + 0.5) / size
  ramp = np.clip(np.minimum(t, 1 - t) / max(feather, 1e-6), 0, 1)
  ramp = ramp * ramp * (3 - 2 * ramp)
  return np.outer(ramp, ramp).astype(np.float32)


def face_hull(landmarks: Sequence[np.ndarray], forehead: float = FOREHEAD) -> np.ndarray:
  """`[K, 2]` vertices of the convex hull around every face of `landmarks` (each `[68, 2]`), each
  with its brows (points 17-26) copied `forehead` times the chin-to-brows distance further up the
  face (along chin -> brows, so a tilted face gets a tilted forehead)."""
  points = []
  for lm in landmarks:
    lm = np.asarray(lm, np.float64)
    if lm.shape != (68, 2) or not np.all(np.isfinite(lm)):
      raise ValueError(f"face_hull takes finite [68, 2] landmarks, got shape {lm.shape}")
    brows = lm[17:27]
    points += [lm, brows + forehead * (brows.mean(0) - lm[8])]
  points = np.concatenate(points)
  return points[spatial.ConvexHull(points).vertices]


def _face_size(landmarks: Sequence[np.ndarray]) -> float:
  pts = np.concatenate([np.asarray(lm, np.float64) for lm in landmarks])
  return max(float(np.ptp(pts, axis=0).max()), 1.0)


def _smoothstep(t: np.ndarray) -> np.ndarray:
  t = np.clip(t, 0.0, 1.0)
  return t * t * (3 - 2 * t)


def face_mask(landmarks: Sequence[np.ndarray], shape, grow: float = GROW, feather: float = FEATHER,
              forehead: float = FOREHEAD) -> np.ndarray:
  """`[H, W]` float32 mask in [0, 1] of the face(s) in a crop of `shape` `(H, W)`: 1 on the hull of
  `face_hull` dilated by `grow` x face size (eroded for a negative `grow`), falling to 0 over a
  further `feather` x face size (a smoothstep of the distance from the dilated hull: its edge
  blurred), and over the same width towards the crop's border, so the crop's square never shows.
  `mask_reach` bounds where it is non-zero."""
  h, w = int(shape[0]), int(shape[1])
  size = _face_size(landmarks)
  img = Image.new("L", (w, h), 0)
  ImageDraw.Draw(img).polygon([tuple(p) for p in face_hull(landmarks, forehead)], fill=255)  # pixel centres
  inside = np.asarray(img) > 0
  # Signed distance from the hull's edge, positive outside.
  outside = ndimage.distance_transform_edt(~inside) if inside.any() else np.full((h, w), np.inf)
  signed = np.where(inside, -ndimage.distance_transform_edt(inside), outside)
  width = max(feather * size, 1.0)
  weight = _smoothstep((grow * size + width - signed) / width)
  yy, xx = np.mgrid[:h, :w]
  border = np.minimum(np.minimum(yy, h - 1 - yy), np.minimum(xx, w - 1 - xx))
  return (weight * _smoothstep(border / width)).astype(np.float32)


def mask_reach(landmarks: Sequence[np.ndarray], grow: float = GROW, feather: float = FEATHER) -> float:
  """Distance in crop pixels from `face_hull` beyond which `face_mask` is 0 (the dilation and the
  feather, plus a pixel for the hull's rasterisation)."""
  size = _face_size(landmarks)
  return grow * size + max(feather * size, 1.0) + 1.0


def as_similarity(crop: Union[Similarity, CropTransform, Sequence[float]], face_shape) -> Similarity:
  """The photo -> crop similarity of `crop`: a Similarity, a CropTransform or a box `(x0, y0, x1, y1)`
  cut into a face of `face_shape` `(H, W)`."""
  if isinstance(crop, Similarity):
    return crop
  if not isinstance(crop, CropTransform):
    crop = CropTransform(tuple(float(v) for v in crop), (int(face_shape[0]), int(face_shape[1])))
  return Similarity.of(crop)


def match_colors(image: np.ndarray, reference: np.ndarray, weights: np.ndarray) -> np.ndarray:
  """`image` (`[H, W, 3]`, 0..255) with the mean and spread of each Lab channel of `reference` over
  `weights` (`[H, W]`, >= 0): Reinhard et al.'s colour transfer, float32 0..255."""
  from skimage import color  # pylint: disable=import-outside-toplevel
  w = np.asarray(weights, np.float64)[..., None]
  total = max(float(w.sum()), 1e-6)
  lab_image, lab_ref = color.rgb2lab(np.asarray(image) / 255.0), color.rgb2lab(np.asarray(reference) / 255.0)

  def stats(lab):
    mean = (lab * w).sum((0, 1)) / total
    return mean, np.sqrt(((lab - mean) ** 2 * w).sum((0, 1)) / total)

  (mean_i, std_i), (mean_r, std_r) = stats(lab_image), stats(lab_ref)
  lab = (lab_image - mean_i) * (std_r / np.maximum(std_i, 1e-3)) + mean_r
  return np.clip(color.lab2rgb(lab) * 255.0, 0, 255).astype(np.float32)


def _mask(face_shape, landmarks, grow, feather, forehead) -> np.ndarray:
  if landmarks is None:
    return feather_mask(int(face_shape[0]), 0.12 if feather is None else feather)
  return face_mask(landmarks, face_shape, grow, FEATHER if feather is None else feather, forehead)


def _placement(frame_shape, mask: np.ndarray, sim: Similarity):
  """(photo pixel box `(x0, y0, x1, y1)` the mask's support reaches, PIL AFFINE data mapping that
  box's pixels into the crop), or None when the support misses the photo."""
  ys, xs = np.nonzero(mask > 0)
  if ys.size == 0:
    return None
  corners = sim.invert(np.array([[xs.min() - 1, ys.min() - 1], [xs.max() + 1, ys.min() - 1],
                                 [xs.min() - 1, ys.max() + 1], [xs.max() + 1, ys.max() + 1]], np.float64))
  h, w = frame_shape[:2]
  px0, py0 = max(0, int(np.floor(corners[:, 0].min()))), max(0, int(np.floor(corners[:, 1].min())))
  px1, py1 = min(w, int(np.ceil(corners[:, 0].max())) + 1), min(h, int(np.ceil(corners[:, 1].max())) + 1)
  if px1 <= px0 or py1 <= py0:
    return None
  # PIL's AFFINE maps output to input in pixel-edge coordinates; the similarity is in pixel centres.
  linear, shift = sim.linear, np.asarray(sim.matrix, np.float64)[:, 2]
  offset = linear @ (np.array([px0, py0], np.float64) - 0.5) + shift + 0.5
  return (px0, py0, px1, py1), (linear[0, 0], linear[0, 1], offset[0], linear[1, 0], linear[1, 1], offset[1])


def _warp_mask(mask: np.ndarray, size, data) -> np.ndarray:
  warped = Image.fromarray(mask.astype(np.float32), "F").transform(size, Image.AFFINE, data, resample=Image.BILINEAR)
  return np.clip(np.asarray(warped, np.float32), 0.0, 1.0)


def photo_mask(frame_shape, face_shape, crop, landmarks: Optional[Sequence[np.ndarray]] = None, *,
               grow: float = GROW, feather: Optional[float] = None, forehead: float = FOREHEAD) -> np.ndarray:
  """`[H, W]` float32: the weight `paste_back` gives the face at each photo pixel (same arguments)."""
  sim = as_similarity(crop, face_shape)
  mask = _mask(face_shape, landmarks, grow, feather, forehead)
  out = np.zeros(frame_shape[:2], np.float32)
  placed = _placement(frame_shape, mask, sim)
  if placed is not None:
    (px0, py0, px1, py1), data = placed
    out[py0:py1, px0:px1] = _warp_mask(mask, (px1 - px0, py1 - py0), data)
  return out


def paste_back(frame: np.ndarray, face: np.ndarray, crop, landmarks: Optional[Sequence[np.ndarray]] = None, *,
               grow: float = GROW, feather: Optional[float] = None, forehead: float = FOREHEAD,
               color_match: bool = False) -> np.ndarray:
  """Composites `face` (`[R, R, 3]` uint8, generated in the crop `crop` of `frame`) into a copy of `frame`.

  Args:
    frame: the photo `[H, W, 3]` uint8.
    face: the generated face crop.
    crop: where the crop came from: a Similarity (rotated or not), a CropTransform or a box.
    landmarks: faces in crop pixels (`[68, 2]` each; the source's and the generated pose's, so the
      mask covers both): the face-shaped mask of `face_mask`. None: the feathered square.
    grow, feather, forehead: of `face_mask` (feather default FEATHER), or with no landmarks the
      square's feather fraction (default 0.12).
    color_match: match the face region's colours to the photo's (`match_colors`).

  Returns:
    `[H, W, 3]` uint8; pixels where `photo_mask` is 0 are `frame`'s, unchanged.
  """
  frame, face = np.asarray(frame), np.asarray(face)
  mask = _mask(face.shape[:2], landmarks, grow, feather, forehead)
  out = frame.copy()
  placed = _placement(frame.shape, mask, as_similarity(crop, face.shape[:2]))
  if placed is None:
    return out
  (px0, py0, px1, py1), data = placed
  size = (px1 - px0, py1 - py0)
  region = np.asarray(Image.fromarray(face).transform(size, Image.AFFINE, data, resample=Image.BICUBIC), np.float32)
  alpha = _warp_mask(mask, size, data)[..., None]
  base = out[py0:py1, px0:px1].astype(np.float32)
  if color_match:
    region = match_colors(region, base, alpha[..., 0])
  out[py0:py1, px0:px1] = np.clip(np.round(base * (1 - alpha) + region * alpha), 0, 255).astype(np.uint8)
  return out


def seam(image: np.ndarray, mask: np.ndarray) -> float:
  """How visible a paste's border is: the mean absolute gradient of `image` (`[H, W, C]`, central
  differences, mean of |d/dx| and |d/dy| over the channels) along the border of `mask` (`[H, W]`,
  the paste's weights in the same pixels): the pixels at or above 0.5 with a 4-neighbour below."""
  m = np.asarray(mask, np.float32) >= 0.5
  border = m & ~ndimage.binary_erosion(m, structure=ndimage.generate_binary_structure(2, 1), border_value=1)
  if not border.any():
    raise ValueError("seam: the mask has no border in the image")
  img = np.asarray(image, np.float64)
  dy, dx = np.gradient(img, axis=(0, 1))
  grad = (np.abs(dx) + np.abs(dy)).mean(-1) / 2
  return float(grad[border].mean())
