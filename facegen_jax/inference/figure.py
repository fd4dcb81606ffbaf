"""A picture of what reenactment did: the source face, then a few driving frames over the
outputs made from them (the README's picture is drawn by this, through `reenact.py --grid`).

    +--------+----------+----------+-----
    |        | driving1 | driving2 | ...
    | source +----------+----------+-----
    |        | output1  | output2  | ...
    +--------+----------+----------+-----
"""

import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

LABEL_HEIGHT = 14
GAP = 4


def sample_indices(num_frames: int, count: int) -> np.ndarray:
  """`count` frame indices spread evenly over `num_frames` (fewer if the clip is shorter)."""
  if num_frames <= 0:
    raise ValueError("the clip has no frames")
  count = max(1, min(int(count), num_frames))
  return np.unique(np.linspace(0, num_frames - 1, count).round().astype(int))


def _fit(image: np.ndarray, size: int) -> np.ndarray:
  image = np.asarray(image)
  if image.shape[:2] == (size, size):
    return image
  return np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))


def reenactment_grid(source: np.ndarray, driving: Sequence[np.ndarray], outputs: Sequence[np.ndarray],
                     size: int = 128) -> np.ndarray:
  """The figure above as uint8 `[H, W, 3]`: every face is resized to `size` x `size`.

  Args:
    source: the source face crop.
    driving: K driving face crops.
    outputs: the K outputs for them, in the same order.
  """
  if len(driving) != len(outputs) or not driving:
    raise ValueError(f"need as many outputs as driving frames (>= 1), got {len(driving)} and {len(outputs)}")
  k = len(driving)
  cell = size + GAP
  height = LABEL_HEIGHT + 2 * size + GAP
  width = cell * (k + 1) - GAP
  canvas = np.full((height, width, 3), 255, np.uint8)
  top = LABEL_HEIGHT
  canvas[top + (size + GAP) // 2: top + (size + GAP) // 2 + size, :size] = _fit(source, size)
  for i, (d, o) in enumerate(zip(driving, outputs)):
    x = cell * (i + 1)
    canvas[top:top + size, x:x + size] = _fit(d, size)
    canvas[top + size + GAP:top + 2 * size + GAP, x:x + size] = _fit(o, size)
  image = Image.fromarray(canvas)
  draw = ImageDraw.Draw(image)
  draw.text((4, 1), "source", fill=(0, 0, 0))
  draw.text((cell + 4, 1), "driving frames (top) -> output (bottom)", fill=(0, 0, 0))
  return np.asarray(image)


def save_png(image: np.ndarray, path: str) -> str:
  """Writes atomically (a partial file never replaces a good one)."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = path + ".partial.png"
  Image.fromarray(image).save(tmp)
  os.replace(tmp, path)
  return path
