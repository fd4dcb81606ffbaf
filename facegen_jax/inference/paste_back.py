"""Generated faces pasted back into the full frame they were cropped from.

The crop is the square `box = (x0, y0, x1, y1)` (pixel-edge coordinates, may reach outside the
frame) that `facegen_jax.landmarks.crop.crop_and_resize` cut out and resized to R x R.
`paste_back` resamples a generated R x R face back into that box and composites it through a
feathered mask, so the frame is unchanged outside the box and the seam is soft.
"""

import numpy as np
from PIL import Image


def feather_mask(size: int, feather: float = 0.12) -> np.ndarray:
  """`[size, size]` float mask: 1 in the middle, falling smoothly to 0 over the outer `feather`
  fraction of each side (a smoothstep ramp), 0 on the border."""
  t = (np.arange(size) + 0.5) / size
  ramp = np.clip(np.minimum(t, 1 - t) / max(feather, 1e-6), 0, 1)
  ramp = ramp * ramp * (3 - 2 * ramp)
  return np.outer(ramp, ramp).astype(np.float32)


def paste_back(frame: np.ndarray, face: np.ndarray, box: np.ndarray, feather: float = 0.12) -> np.ndarray:
  """Composites `face` (`[R, R, 3]` uint8, the crop of `box`) back into a copy of `frame`.

  Pixels outside `box` are returned unchanged, bit for bit.
  """
  h, w = frame.shape[:2]
  x0, y0, x1, y1 = box
  # Integer pixel range the box covers inside the frame.
  px0, py0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
  px1, py1 = min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
  out = frame.copy()
  if px1 <= px0 or py1 <= py0:
    return out
  r = face.shape[0]
  scale = r / (x1 - x0)
  # Map the covered frame pixels into face-crop coordinates (inverse of crop_face).
  extent = ((px0 - x0) * scale, (py0 - y0) * scale, (px1 - x0) * scale, (py1 - y0) * scale)
  size = (px1 - px0, py1 - py0)
  region = np.asarray(Image.fromarray(face).transform(size, Image.EXTENT, extent, resample=Image.BICUBIC),
                      np.float32)
  mask_img = Image.fromarray(feather_mask(r, feather))
  mask = np.asarray(mask_img.transform(size, Image.EXTENT, extent, resample=Image.BILINEAR), np.float32)[..., None]
  base = out[py0:py1, px0:px1].astype(np.float32)
  out[py0:py1, px0:px1] = np.clip(np.round(base * (1 - mask) + region * mask), 0, 255).astype(np.uint8)
  return out
