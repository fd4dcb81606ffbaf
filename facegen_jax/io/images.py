"""Image files -> uint8 RGB arrays (`load_image`, the one loader), and uint8 <-> float conversions.

`load_image` reads the size from the file's header and refuses an image over `max_pixels`
(default `DEFAULT_MAX_PIXELS`, about 40 megapixels; `$FACEGEN_MAX_IMAGE_PIXELS` changes it)
before decoding anything, so a decompression bomb never reaches memory; a JPEG over the limit is
decoded at 1/2, 1/4 or 1/8 size instead (PIL's `draft`: the decoder skips the detail).

Images: uint8 [0, 255] <-> float32 [-1, 1]; masks: uint8 [0, 255] -> float32 [0, 1]. The
conversions take numpy or jax arrays (traced ones too) and return the same kind. This module does
not import jax (a program on numpy alone, examples/onnx_reenact.py, loads images through it).
"""

import math
import os
import sys
import warnings
from typing import Optional

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 40_000_000
MAX_PIXELS_ENV = "FACEGEN_MAX_IMAGE_PIXELS"
JPEG_SCALES = (2, 4, 8)  # the reductions a JPEG decoder offers


class ImageTooLargeError(ValueError):
  """An image over the pixel limit of `load_image`."""


def pixel_limit() -> int:
  """The pixel limit of `load_image`: `$FACEGEN_MAX_IMAGE_PIXELS`, else `DEFAULT_MAX_PIXELS`."""
  value = os.environ.get(MAX_PIXELS_ENV, "")
  try:
    limit = int(value) if value else DEFAULT_MAX_PIXELS
  except ValueError:
    limit = 0
  if limit <= 0:
    raise ValueError(f"${MAX_PIXELS_ENV}={value!r}: must be a positive number of pixels (unset: {DEFAULT_MAX_PIXELS})")
  return limit


def _too_large(path: str, width: int, height: int, limit: int, jpeg: bool) -> ImageTooLargeError:
  why = " even at 1/8 size" if jpeg else ""
  return ImageTooLargeError(f"image {path} is {width}x{height} ({width * height / 1e6:.0f} megapixels), over the limit of "
                    f"{limit / 1e6:g} megapixels{why}; downscale it, or raise ${MAX_PIXELS_ENV} if it is trusted")


def _bounded(im: Image.Image, path: str, limit: int) -> Image.Image:
  """`im` (opened, not decoded) set to decode at most `limit` pixels, or ValueError."""
  width, height = im.size
  if width * height <= limit:
    return im
  if im.format == "JPEG":
    for k in JPEG_SCALES:
      if math.ceil(width / k) * math.ceil(height / k) <= limit:  # the decoded size at 1/k
        im.draft("RGB", (max(1, width // k), max(1, height // k)))  # PIL picks 1/k for these
        return im
  raise _too_large(path, width, height, limit, im.format == "JPEG")


def load_image(path: str, max_pixels: Optional[int] = None) -> np.ndarray:
  """Reads an image file as uint8 RGB `[H, W, 3]`, decoding at most `max_pixels` pixels
  (default `pixel_limit()`; see the module docstring).

  EXIF orientation is applied; RGBA / palette images with transparency are composited onto white;
  grayscale (8 or 16 bit) is replicated to 3 channels.

  Raises:
    FileNotFoundError: `path` does not exist.
    ValueError: the file is not a readable image (corrupt, truncated, unknown format);
      ImageTooLargeError (a ValueError): it is over the pixel limit.
  """
  path = os.fspath(path)
  limit = pixel_limit() if max_pixels is None else int(max_pixels)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"image {path} does not exist")
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit above is lower
      with Image.open(path) as im:
        im = _bounded(im, path, limit)
        im.load()
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
          arr = np.asarray(im, np.float64)
          im = Image.fromarray(np.clip(arr * (255.0 / max(arr.max(), 1.0)), 0, 255).astype(np.uint8))
        if im.mode == "P" or im.mode == "LA" or im.mode == "PA":
          im = im.convert("RGBA")
        if im.mode == "RGBA":
          white = Image.new("RGBA", im.size, (255, 255, 255, 255))
          im = Image.alpha_composite(white, im)
        rgb = np.asarray(im.convert("RGB"), np.uint8)
  except ImageTooLargeError:
    raise
  except Image.DecompressionBombError as e:  # PIL's own limit, far above ours: refused from the header too
    raise ImageTooLargeError(f"image {path} is far over the limit of {limit / 1e6:g} megapixels ({e}); "
                             "downscale it") from e
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    raise ValueError(f"cannot read image {path}: {e}. Is it a complete JPEG/PNG/BMP/WebP file?") from e
  return np.ascontiguousarray(rgb)


def _array_module(x):
  """jax.numpy for a jax array, numpy for anything else (a jax array exists only once jax is
  imported, so nothing here imports it)."""
  jax = sys.modules.get("jax")
  if jax is not None and isinstance(x, jax.Array):
    return jax.numpy
  return np


def to_float_image(x):
  """uint8 [0, 255] -> float32 [-1, 1]."""
  return x.astype(np.float32) / 127.5 - 1.0


def to_float_mask(x):
  """uint8 [0, 255] -> float32 [0, 1]."""
  return x.astype(np.float32) / 255.0


def to_uint8_image(x):
  """float [-1, 1] -> uint8 [0, 255]: `(x + 1) * 127.5`, rounded half to even, clipped."""
  xp = _array_module(x)
  return xp.clip(xp.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)
