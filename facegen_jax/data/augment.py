"""Pair-consistent augmentations of a training sample: horizontal flip and colour jitter.

A sample's images, masks and landmarks are augmented with the same draw so they stay aligned: a
flip mirrors every image and mask and every landmark set (x -> W - 1 - x, pixel centres at
integer coordinates as in `landmarks.masks`), swaps left/right landmark indices with
`layout.FLIP_PERMUTATION` and left/right mask channels with `PART_FLIP_PERMUTATION`. Colour
jitter changes the source and the target by the same amount (the target is the source person's
ground truth; a colour gap between them would be a loss the generator cannot close).
"""

import numpy as np

from facegen_jax.landmarks import layout

FLIP_PERMUTATION = np.asarray(layout.FLIP_PERMUTATION)


def _part_flip_permutation() -> tuple:
  names = list(layout.PART_NAMES)
  swap = lambda n: n.replace("right", "\0").replace("left", "right").replace("\0", "left")
  return tuple(names.index(swap(n)) for n in names)


# Mask channel k of a flipped per-part mask is channel PART_FLIP_PERMUTATION[k] of the original.
PART_FLIP_PERMUTATION = _part_flip_permutation()


def flip_landmarks(landmarks: np.ndarray, width: int) -> np.ndarray:
  """Mirrors `[..., 68, 2]` landmarks of an image `width` pixels wide (re-indexed)."""
  out = np.asarray(landmarks, np.float32)[..., FLIP_PERMUTATION, :].copy()
  out[..., 0] = (width - 1) - out[..., 0]
  return out


def flip_image(image: np.ndarray) -> np.ndarray:
  """Mirrors a `[H, W, C]` image."""
  return np.ascontiguousarray(image[:, ::-1])


def flip_mask(mask: np.ndarray) -> np.ndarray:
  """Mirrors a `[H, W, M]` mask; M = len(PART_NAMES) channels are swapped left <-> right."""
  mask = mask[:, ::-1]
  if mask.shape[-1] == len(layout.PART_NAMES):
    mask = mask[..., PART_FLIP_PERMUTATION]
  return np.ascontiguousarray(mask)


def draw_color_jitter(rng: np.random.Generator, brightness: float, contrast: float, saturation: float) -> tuple:
  """Random jitter parameters (brightness offset, contrast factor, saturation factor)."""
  return (rng.uniform(-brightness, brightness) * 255.0,
          1.0 + rng.uniform(-contrast, contrast),
          1.0 + rng.uniform(-saturation, saturation))


def color_jitter(image: np.ndarray, params: tuple) -> np.ndarray:
  """Applies `draw_color_jitter` params to a `[H, W, 3]` uint8 image.

  Contrast scales about the image's mean grey, saturation mixes each pixel with its grey value
  (ITU-R 601 luma), brightness adds an offset; the result is rounded and clipped to uint8.
  """
  offset, contrast, saturation = params
  x = image.astype(np.float32)
  grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
  mean = float(grey.mean())
  # ((grey + s (x - grey)) - mean) c + mean + offset, as one affine map of x and grey.
  x *= saturation * contrast
  x += ((1.0 - saturation) * contrast * grey)[..., None]
  x += mean * (1.0 - contrast) + offset + 0.5
  return np.clip(x, 0, 255).astype(np.uint8)
