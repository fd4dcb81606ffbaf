"""Square face crops: per photo from its landmarks, per video one still box (FOMM-style).

Coordinates: landmarks are (x, y) with pixel centres at integer coordinates; boxes
`(x0, y0, x1, y1)` are continuous pixel-edge coordinates (pixel i spans [i - 0.5, i + 0.5] in
landmark coordinates, [i, i + 1] in box coordinates, as PIL's `resize(box=...)` has it).
`CropTransform` maps landmark coordinates between the original image and the crop, both ways.

Boxes may extend past the image: the missing part is padded (edge replication by default,
or a constant colour), never an error.
"""

import dataclasses
from typing import Optional, Sequence, Tuple

import numpy as np
from PIL import Image

Box = Tuple[float, float, float, float]

# The landmarks' bounding box misses the forehead: crops are centred this fraction of the
# landmark box height above its centre.
FOREHEAD_SHIFT = 0.1


@dataclasses.dataclass(frozen=True)
class CropTransform:
  """`crop = (original - offset) * scale` for landmark coordinates (pixel centres).

  Attributes:
    box: the crop box in the original image (pixel-edge coordinates).
    resolution: crop size `(H, W)`.
  """
  box: Box
  resolution: Tuple[int, int]

  @property
  def scale(self) -> np.ndarray:
    """Crop pixels per original pixel, `(sx, sy)`."""
    x0, y0, x1, y1 = self.box
    return np.array([self.resolution[1] / (x1 - x0), self.resolution[0] / (y1 - y0)])

  def apply(self, points: np.ndarray) -> np.ndarray:
    """Original-image coordinates `[..., 2]` -> crop coordinates (float32)."""
    offset = np.array(self.box[:2])
    return (((np.asarray(points, np.float64) + 0.5 - offset) * self.scale) - 0.5).astype(np.float32)

  def invert(self, points: np.ndarray) -> np.ndarray:
    """Crop coordinates `[..., 2]` -> original-image coordinates (float32)."""
    offset = np.array(self.box[:2])
    return (((np.asarray(points, np.float64) + 0.5) / self.scale) + offset - 0.5).astype(np.float32)


def _square(cx: float, cy: float, side: float) -> Box:
  return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def photo_crop_box(landmarks: np.ndarray, expand: float = 1.8, forehead_shift: float = FOREHEAD_SHIFT) -> Box:
  """Square crop box around one face.

  Args:
    landmarks: `[68, 2]` landmarks of the face.
    expand: side of the box / longer side of the landmarks' bounding box (1.8 shows the whole head
      with some hair and neck; 1.0 is the landmarks only).
    forehead_shift: move the centre up by this fraction of the landmark box height.
  """
  pts = np.asarray(landmarks, np.float64)
  if pts.ndim != 2 or pts.shape[1] != 2 or not np.all(np.isfinite(pts)):
    raise ValueError(f"landmarks must be finite [N, 2], got shape {pts.shape}")
  lo, hi = pts.min(0), pts.max(0)
  size = hi - lo
  side = expand * max(float(size.max()), 1.0)
  cx, cy = (lo + hi) / 2 - np.array([0.0, forehead_shift * size[1]])
  return _square(float(cx) + 0.5, float(cy) + 0.5, side + 1.0)  # pixel centres -> edges


def video_crop_box(landmarks: np.ndarray, found: Optional[np.ndarray] = None, expand: float = 1.8,
                   forehead_shift: float = FOREHEAD_SHIFT, quantile: float = 0.02) -> Box:
  """One still square box for a whole clip (FOMM's crop-video recipe): the union of the
  per-frame landmark boxes, robust to outliers (the `quantile` and `1 - quantile` of the
  per-frame extents), centred on that union, side `expand` times the face's largest size over
  the clip plus the range the face moves over, so the head moves inside a still frame.

  Args:
    landmarks: `[T, 68, 2]` track; frames with `found` False (or NaN landmarks) are ignored.
    found: `[T]` bool, default all frames.
    expand, forehead_shift: as for `photo_crop_box`.
    quantile: fraction of extreme frames ignored on each side (0: the exact union).

  Raises:
    ValueError: no frame has a face.
  """
  lm = np.asarray(landmarks, np.float64)
  ok = np.all(np.isfinite(lm), axis=(1, 2))
  if found is not None:
    ok &= np.asarray(found, bool)
  if not ok.any():
    raise ValueError("video_crop_box: no frame with a face")
  lm = lm[ok]
  lo = np.quantile(lm.min(1), quantile, axis=0)  # [2] robust union
  hi = np.quantile(lm.max(1), 1 - quantile, axis=0)
  face = np.median(lm.max(1) - lm.min(1), axis=0)  # [2] typical face size
  motion = (hi - lo) - face  # how far the face box travels
  side = expand * float(face.max()) + float(np.max(motion))
  cx, cy = (lo + hi) / 2 - np.array([0.0, forehead_shift * face[1]])
  return _square(float(cx) + 0.5, float(cy) + 0.5, side + 1.0)


def crop_and_resize(image: np.ndarray, box: Box, resolution, pad_mode: str = "edge",
                    pad_value: Sequence[int] = (0, 0, 0), resample: int = Image.BICUBIC,
                    reducing_gap: Optional[float] = None) -> Tuple[np.ndarray, CropTransform]:
  """Cuts `box` out of `image` and resizes it (anti-aliased bicubic).

  Args:
    image: uint8 `[H, W, C]`.
    box: `(x0, y0, x1, y1)` pixel-edge coordinates; may extend past the image.
    resolution: `R` or `(H, W)` of the crop.
    pad_mode: "edge" (replicate border pixels), "reflect" or "constant" (`pad_value`).
    resample, reducing_gap: PIL's resize filter and its fast-shrink option (None: exact).

  Returns:
    (crop uint8 `[H', W', C]`, CropTransform mapping original landmark coordinates into the crop).
  """
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3:
    raise ValueError(f"crop_and_resize takes uint8 [H, W, C] images, got {image.dtype} {image.shape}")
  out_h, out_w = (int(resolution), int(resolution)) if np.ndim(resolution) == 0 else map(int, resolution)
  x0, y0, x1, y1 = (float(v) for v in box)
  if not (np.isfinite([x0, y0, x1, y1]).all() and x1 > x0 and y1 > y0 and out_h > 0 and out_w > 0):
    raise ValueError(f"bad crop box {box} or resolution {resolution}")
  h, w = image.shape[:2]
  # Only the part of the image under the box is copied (and padded where the box leaves it).
  cx0, cy0 = min(max(int(np.floor(x0)), 0), w - 1), min(max(int(np.floor(y0)), 0), h - 1)
  cx1, cy1 = max(min(int(np.ceil(x1)), w), cx0 + 1), max(min(int(np.ceil(y1)), h), cy0 + 1)
  region = image[cy0:cy1, cx0:cx1]
  pad = [max(0, int(np.ceil(cy0 - y0))), max(0, int(np.ceil(y1 - cy1))),
         max(0, int(np.ceil(cx0 - x0))), max(0, int(np.ceil(x1 - cx1)))]
  if any(pad):
    rh, rw = region.shape[:2]
    widths = ((pad[0], pad[1]), (pad[2], pad[3]), (0, 0))
    if pad_mode == "constant":
      padded = np.empty((rh + pad[0] + pad[1], rw + pad[2] + pad[3], image.shape[2]), np.uint8)
      padded[:] = np.asarray(pad_value, np.uint8)[: image.shape[2]]
      padded[pad[0]:pad[0] + rh, pad[2]:pad[2] + rw] = region
    elif pad_mode == "reflect" and max(pad) < min(rh, rw):
      padded = np.pad(region, widths, mode="reflect")
    elif pad_mode in ("edge", "reflect"):
      padded = np.pad(region, widths, mode="edge")
    else:
      raise ValueError(f"pad_mode must be 'edge', 'reflect' or 'constant', got {pad_mode!r}")
  else:
    padded = region
  src = Image.fromarray(np.ascontiguousarray(padded[..., 0] if padded.shape[2] == 1 else padded))
  shifted = (x0 - cx0 + pad[2], y0 - cy0 + pad[0], x1 - cx0 + pad[2], y1 - cy0 + pad[0])
  crop = np.asarray(src.resize((out_w, out_h), resample, box=shifted, reducing_gap=reducing_gap), np.uint8)
  return crop.reshape(out_h, out_w, image.shape[2]), CropTransform((x0, y0, x1, y1), (out_h, out_w))


def crop_clip(frames: Sequence[np.ndarray], landmarks: np.ndarray, found: Optional[np.ndarray], resolution: int,
              expand: float = 1.8) -> Tuple[np.ndarray, np.ndarray, CropTransform]:
  """Per-clip crop, the recipe of training data and evaluation clips alike: every frame cut out
  with one still box (`video_crop_box`) and resized by `crop_and_resize`.

  Args:
    frames: T uint8 `[H, W, 3]` frames.
    landmarks: `[T, 68, 2]` track in frame coordinates (NaN where no face).
    found: `[T]` bool, default all frames.
    resolution, expand: crop size R; as for `photo_crop_box`.

  Returns:
    (crops uint8 `[T, R, R, 3]`, landmarks in crop coordinates `[T, 68, 2]` float32, the transform).
  """
  box = video_crop_box(landmarks, found, expand=expand)
  crops = [crop_and_resize(frame, box, resolution)[0] for frame in frames]
  transform = CropTransform(tuple(float(v) for v in box), (int(resolution), int(resolution)))
  return np.stack(crops), transform.apply(landmarks), transform


def crop_face(image: np.ndarray, landmarks: np.ndarray, resolution, expand: float = 1.8,
              pad_mode: str = "edge") -> Tuple[np.ndarray, np.ndarray, CropTransform]:
  """Per-photo crop: `(crop uint8 [R, R, 3], landmarks in crop coordinates [68, 2], transform)`."""
  crop, transform = crop_and_resize(image, photo_crop_box(landmarks, expand), resolution, pad_mode)
  return crop, transform.apply(landmarks), transform


@dataclasses.dataclass(frozen=True)
class Similarity:
  """`crop = matrix @ [x, y, 1]` for landmark coordinates (pixel centres): a scale, a rotation and a
  shift from an original image into a crop of `resolution` `(H, W)`, and back (`invert`).

  `Similarity.of(transform)` is the rotation-free similarity of a `CropTransform` (the square boxes
  of `photo_crop_box` / `video_crop_box` that data preparation and the generator use); a rotated
  one comes from `Similarity.about`. Paste-back takes either (facegen_jax/inference/paste_back.py).
  """
  matrix: Tuple[Tuple[float, float, float], Tuple[float, float, float]]
  resolution: Tuple[int, int]

  @classmethod
  def of(cls, transform: CropTransform) -> "Similarity":
    """The similarity of `transform.apply` (scale `(sx, sy)`, no rotation)."""
    (sx, sy), (x0, y0) = transform.scale, transform.box[:2]
    return cls(((float(sx), 0.0, float((0.5 - x0) * sx - 0.5)), (0.0, float(sy), float((0.5 - y0) * sy - 0.5))),
               tuple(int(v) for v in transform.resolution))

  @classmethod
  def about(cls, center, side: float, angle: float, resolution: int) -> "Similarity":
    """The square crop of side `side` original pixels centred on `center` (x, y) whose axes are the
    image's turned by `angle` radians: `crop = half + s * R(angle) @ (p - center)`, `s` =
    `resolution / side`, `R` the rotation matrix `[[cos, -sin], [sin, cos]]` in (x, y-down) axes."""
    s = resolution / side
    cos, sin = s * np.cos(angle), s * np.sin(angle)
    half = (resolution - 1) / 2
    cx, cy = (float(v) for v in center)
    row0 = (float(cos), float(-sin), float(half - cos * cx + sin * cy))
    row1 = (float(sin), float(cos), float(half - sin * cx - cos * cy))
    return cls((row0, row1), (int(resolution), int(resolution)))

  @property
  def linear(self) -> np.ndarray:
    """The `[2, 2]` scale-and-rotation part."""
    return np.asarray(self.matrix, np.float64)[:, :2]

  @property
  def scale(self) -> float:
    """Crop pixels per original pixel (the geometric mean of the two axes)."""
    return float(np.sqrt(abs(np.linalg.det(self.linear))))

  def apply(self, points: np.ndarray) -> np.ndarray:
    """Original-image coordinates `[..., 2]` -> crop coordinates (float32)."""
    m = np.asarray(self.matrix, np.float64)
    return (np.asarray(points, np.float64) @ m[:, :2].T + m[:, 2]).astype(np.float32)

  def invert(self, points: np.ndarray) -> np.ndarray:
    """Crop coordinates `[..., 2]` -> original-image coordinates (float32)."""
    m = np.asarray(self.matrix, np.float64)
    return ((np.asarray(points, np.float64) - m[:, 2]) @ np.linalg.inv(m[:, :2]).T).astype(np.float32)
