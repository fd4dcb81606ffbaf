"""Generated faces pasted back into the full photo they were cropped from.

The crop is a similarity of the photo (`facegen_jax.landmarks.crop.Similarity`: scale, rotation,
shift): the square box of `crop_and_resize` (`CropTransform`, or the box itself), or any rotated
crop (`Similarity.about`). `paste_back` resamples the generated R x R face into the photo by the
inverse of that similarity (rotation included) and composites it through a mask:

- with the face's landmarks (crop pixels), a face-shaped mask (`face_mask`): the convex hull of the
  landmarks and a forehead above the brows, dilated by `grow` and further into where the generated
  crop differs from the photo's own crop (`photo_crop`, `disagreement`: a moved jaw, ear or strand
  of hair), at most `reach` from the hull, then feathered over `feather` (fractions of the face's
  size) and zero at the crop's border, so its border runs where the two agree. Where they agree,
  the photo's detail finer than the crop's pixels is put back into the pasted face (`photo_detail`):
  a 128-pixel generator blurs hair and background that it did not change. Optionally the face's
  colours are matched to the photo's (`match_colors`, Reinhard's mean and spread in Lab);
- without landmarks, the feathered square of `feather_mask` over the whole crop (the paste of
  before, kept for comparison and for `benchmarks/reenact.py`).

Photo pixels where the resampled mask is 0 (beyond `mask_reach` of the hull) are returned
unchanged, bit for bit. `seam` measures how visible a paste's border is, on the change it made.
"""

from typing import Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage, spatial

from facegen_jax.landmarks.crop import CropTransform, Similarity

# Defaults of the face-shaped mask, in fractions of the face's size (the larger side of its landmarks' box).
GROW = 0.05
FEATHER = 0.2
FOREHEAD = 0.2
REACH = 0.3
# Mean absolute difference (0..255, blurred over 0.02 of the face's size) between the generated crop
# and the photo's: above CHANGED the mask grows over it; the photo's detail is put back fully below
# AGREE[0], fading out by AGREE[1].
CHANGED = 16.0
AGREE = (8.0, 24.0)


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


def _disk(radius: float) -> np.ndarray:
  r = max(int(round(radius)), 1)
  yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
  return np.hypot(yy, xx) <= r


def face_mask(landmarks: Sequence[np.ndarray], shape, grow: float = GROW, feather: float = FEATHER,
              forehead: float = FOREHEAD, changed: Optional[np.ndarray] = None, reach: float = REACH) -> np.ndarray:
  """`[H, W]` float32 mask in [0, 1] of the face(s) in a crop of `shape` `(H, W)`.

  1 on the hull of `face_hull` dilated by `grow` x face size (eroded for a negative `grow`) and, with
  `changed` (`[H, W]` bool: where the generated crop differs from the photo's), on the parts of
  `changed` connected to it within `reach` x face size of the hull (closed over 0.04 of the face's
  size, holes filled); falling to 0 over a further `feather` x face size (a smoothstep of the
  distance from that region), and over the same width towards the crop's border, so the crop's
  square never shows. `mask_reach` bounds where it is non-zero.
  """
  h, w = int(shape[0]), int(shape[1])
  size = _face_size(landmarks)
  img = Image.new("L", (w, h), 0)
  ImageDraw.Draw(img).polygon([tuple(p) for p in face_hull(landmarks, forehead)], fill=255)  # pixel centres
  inside = np.asarray(img) > 0
  # Signed distance from the hull's edge, positive outside.
  outside = ndimage.distance_transform_edt(~inside) if inside.any() else np.full((h, w), np.inf)
  signed = np.where(inside, -ndimage.distance_transform_edt(inside), outside)
  region = signed <= grow * size
  if changed is not None and region.any():
    within = signed <= max(reach, grow) * size
    labels, _ = ndimage.label(region | (np.asarray(changed, bool) & within))
    touching = np.unique(labels[region])
    grown = np.isin(labels, touching[touching > 0])
    grown = ndimage.binary_fill_holes(ndimage.binary_closing(grown, _disk(0.04 * size)))
    region |= grown & within
  width = max(feather * size, 1.0)
  distance = ndimage.distance_transform_edt(~region) if region.any() else np.full((h, w), np.inf)
  weight = _smoothstep((width - distance) / width)
  yy, xx = np.mgrid[:h, :w]
  border = np.minimum(np.minimum(yy, h - 1 - yy), np.minimum(xx, w - 1 - xx))
  return (weight * _smoothstep(border / width)).astype(np.float32)


def mask_reach(landmarks: Sequence[np.ndarray], grow: float = GROW, feather: float = FEATHER,
               reach: float = REACH) -> float:
  """Distance in crop pixels from `face_hull` beyond which `face_mask` is 0 (the dilation or the
  reach, whichever is larger, and the feather, plus a pixel for the hull's rasterisation)."""
  size = _face_size(landmarks)
  return max(grow, reach) * size + max(feather * size, 1.0) + 1.0


def as_similarity(crop: Union[Similarity, CropTransform, Sequence[float]], face_shape) -> Similarity:
  """The photo -> crop similarity of `crop`: a Similarity, a CropTransform or a box `(x0, y0, x1, y1)`
  cut into a face of `face_shape` `(H, W)`."""
  if isinstance(crop, Similarity):
    return crop
  if not isinstance(crop, CropTransform):
    crop = CropTransform(tuple(float(v) for v in crop), (int(face_shape[0]), int(face_shape[1])))
  return Similarity.of(crop)


def photo_crop(frame: np.ndarray, crop, shape) -> np.ndarray:
  """The photo as the crop `crop` (see `as_similarity`) of `shape` `(H, W)` sees it: `[H, W, C]`
  uint8, sampled at the crop's pixel centres (bilinear) after a Gaussian blur of the photo
  matching the crop's pixel size (none when the crop enlarges); edges replicated past the photo."""
  h, w = int(shape[0]), int(shape[1])
  sim = as_similarity(crop, (h, w))
  yy, xx = np.mgrid[:h, :w]
  points = sim.invert(np.stack([xx.ravel(), yy.ravel()], -1)).astype(np.float64)
  frame = np.asarray(frame)
  height, width = frame.shape[:2]
  sigma = max(0.5 / sim.scale - 0.5, 0.0)
  pad = int(np.ceil(3 * sigma)) + 2
  x0 = min(max(int(np.floor(points[:, 0].min())) - pad, 0), width - 1)
  y0 = min(max(int(np.floor(points[:, 1].min())) - pad, 0), height - 1)
  x1 = max(min(int(np.ceil(points[:, 0].max())) + pad + 1, width), x0 + 1)
  y1 = max(min(int(np.ceil(points[:, 1].max())) + pad + 1, height), y0 + 1)
  sub = frame[y0:y1, x0:x1].astype(np.float32)
  if sigma > 0:
    sub = ndimage.gaussian_filter(sub, (sigma, sigma, 0), mode="nearest")
  coords = [points[:, 1] - y0, points[:, 0] - x0]
  out = [ndimage.map_coordinates(sub[..., c], coords, order=1, mode="nearest") for c in range(sub.shape[2])]
  return np.clip(np.round(np.stack(out, -1)), 0, 255).astype(np.uint8).reshape(h, w, sub.shape[2])


def disagreement(face: np.ndarray, reference: np.ndarray, size: float) -> np.ndarray:
  """`[H, W]` float32: the mean absolute difference over the channels (0..255) of two crops,
  Gaussian-blurred over 0.02 x `size` pixels (a face's size: where they differ, not pixel noise)."""
  diff = np.abs(np.asarray(face, np.float32) - np.asarray(reference, np.float32)).mean(-1)
  return ndimage.gaussian_filter(diff, 0.02 * size, mode="nearest").astype(np.float32)


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


def _warp_image(image: np.ndarray, size, data) -> np.ndarray:
  return np.asarray(Image.fromarray(image).transform(size, Image.AFFINE, data, resample=Image.BICUBIC), np.float32)


def _layers(frame, face, crop, landmarks, grow, feather, forehead, reach, color_match, follow_changes,
            photo_detail) -> Tuple[Optional[tuple], Optional[np.ndarray], Optional[np.ndarray]]:
  """(photo box, the face's weight `[h, w, 1]` there, what is pasted `[h, w, 3]` float32 there) of
  `paste_back`, or (None, None, None) when the mask misses the photo."""
  frame, face = np.asarray(frame), np.asarray(face)
  if face.dtype != np.uint8 or face.ndim != 3:
    raise ValueError(f"paste_back takes a uint8 [R, R, 3] face, got {face.dtype} {face.shape}")
  sim = as_similarity(crop, face.shape[:2])
  keep = reference = None
  if landmarks is None:
    mask = feather_mask(int(face.shape[0]), 0.12 if feather is None else feather)
  else:
    feather = FEATHER if feather is None else feather
    reference = photo_crop(frame, sim, face.shape[:2])
    if color_match:
      weights = face_mask(landmarks, face.shape[:2], grow, feather, forehead)
      face = np.clip(np.round(match_colors(face, reference, weights)), 0, 255).astype(np.uint8)
    differs = disagreement(face, reference, _face_size(landmarks))
    mask = face_mask(landmarks, face.shape[:2], grow, feather, forehead,
                     changed=differs > CHANGED if follow_changes else None, reach=reach if follow_changes else grow)
    if photo_detail:
      keep = (1.0 - _smoothstep((differs - AGREE[0]) / (AGREE[1] - AGREE[0]))).astype(np.float32)
  placed = _placement(frame.shape, mask, sim)
  if placed is None:
    return None, None, None
  (px0, py0, px1, py1), data = placed
  size = (px1 - px0, py1 - py0)
  content = _warp_image(face, size, data)
  if keep is not None:  # the photo's detail beyond what the crop holds, where the face agrees with it
    base = frame[py0:py1, px0:px1].astype(np.float32)
    content += _warp_mask(keep, size, data)[..., None] * (base - _warp_image(reference, size, data))
  return (px0, py0, px1, py1), _warp_mask(mask, size, data)[..., None], content


def paste_back(frame: np.ndarray, face: np.ndarray, crop, landmarks: Optional[Sequence[np.ndarray]] = None, *,
               grow: float = GROW, feather: Optional[float] = None, forehead: float = FOREHEAD,
               reach: float = REACH, color_match: bool = False, follow_changes: bool = True,
               photo_detail: bool = True) -> np.ndarray:
  """Composites `face` (`[R, R, 3]` uint8, generated in the crop `crop` of `frame`) into a copy of `frame`.

  Args:
    frame: the photo `[H, W, 3]` uint8.
    face: the generated face crop.
    crop: where the crop came from: a Similarity (rotated or not), a CropTransform or a box.
    landmarks: faces in crop pixels (`[68, 2]` each; the source's and the generated pose's, so the
      mask covers both): the face-shaped mask of `face_mask`. None: the feathered square.
    grow, feather, forehead, reach: of `face_mask` (feather default FEATHER), or with no landmarks
      the square's feather fraction (default 0.12).
    color_match: match the face's colours to the photo's over the face (`match_colors`).
    follow_changes: grow the mask over where the face differs from `photo_crop` (`disagreement`
      above CHANGED), up to `reach`; off: the dilated hull only.
    photo_detail: put the photo's detail finer than the crop's pixels back where the face agrees
      with `photo_crop` (fully below AGREE[0], none above AGREE[1]).

  Returns:
    `[H, W, 3]` uint8; pixels where `photo_mask` is 0 are `frame`'s, unchanged.
  """
  out = np.asarray(frame).copy()
  box, alpha, content = _layers(frame, face, crop, landmarks, grow, feather, forehead, reach, color_match,
                                follow_changes, photo_detail)
  if box is not None:
    px0, py0, px1, py1 = box
    base = out[py0:py1, px0:px1].astype(np.float32)
    out[py0:py1, px0:px1] = np.clip(np.round(base + alpha * (content - base)), 0, 255).astype(np.uint8)
  return out


def photo_mask(frame: np.ndarray, face: np.ndarray, crop, landmarks: Optional[Sequence[np.ndarray]] = None, *,
               grow: float = GROW, feather: Optional[float] = None, forehead: float = FOREHEAD,
               reach: float = REACH, color_match: bool = False, follow_changes: bool = True) -> np.ndarray:
  """`[H, W]` float32: the weight `paste_back` gives the face at each photo pixel (same arguments)."""
  frame = np.asarray(frame)
  out = np.zeros(frame.shape[:2], np.float32)
  box, alpha, _ = _layers(frame, face, crop, landmarks, grow, feather, forehead, reach, color_match,
                          follow_changes, photo_detail=False)
  if box is not None:
    px0, py0, px1, py1 = box
    out[py0:py1, px0:px1] = alpha[..., 0]
  return out


def seam(pasted: np.ndarray, photo: np.ndarray, weights: np.ndarray) -> float:
  """How visible a paste's border is: the mean absolute gradient of the change it made,
  `pasted - photo` (`[H, W, C]`; central differences, the mean of |d/dx| and |d/dy| over the
  channels), along the border of `weights` (`[H, W]`, the paste's weight of the face in the same
  pixels, `photo_mask`): the pixels at or above 0.5 with a 4-neighbour below. The photo's own edges
  cancel; what counts is a step in the change (a colour or brightness jump, a weight falling too
  steeply where the two differ) and content that differs across the border (a moved ear half shown,
  blur against sharp texture). 0 when the paste changed nothing there."""
  m = np.asarray(weights, np.float32) >= 0.5
  border = m & ~ndimage.binary_erosion(m, structure=ndimage.generate_binary_structure(2, 1), border_value=1)
  if not border.any():
    raise ValueError("seam: the mask has no border in the image")
  change = np.asarray(pasted, np.float64) - np.asarray(photo, np.float64)
  dy, dx = np.gradient(change, axis=(0, 1))
  return float(((np.abs(dx) + np.abs(dy)).mean(-1) / 2)[border].mean())
