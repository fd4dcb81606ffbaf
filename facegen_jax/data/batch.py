"""The training batch: the one dictionary every data source yields and the train step reads.

All arrays are numpy on the host (jax arrays once sharded), leading axis = batch `B`:

| key                 | shape           | dtype   | meaning                                            |
|---------------------|-----------------|---------|----------------------------------------------------|
| `source`            | `[B, H, W, 3]`  | uint8   | reference face (texture / identity)                 |
| `source_landmarks`  | `[B, 68, 2]`    | float32 | its landmarks, (x, y) pixels                        |
| `driving_mask`      | `[B, H, W, M]`  | uint8   | face mask rendered from the pose landmarks (0..255) |
| `driving_landmarks` | `[B, 68, 2]`    | float32 | the pose landmarks the mask was rendered from       |
| `target`            | `[B, H, W, 3]`  | uint8   | ground truth for the pixel loss (driving frame of   |
|                     |                 |         | the same video, else the source itself)             |
| `target_mask`       | `[B, H, W, M]`  | uint8   | mask of the target's own landmarks (the "real"      |
|                     |                 |         | pair for the conditional discriminator)             |
| `target_landmarks`  | `[B, 68, 2]`    | float32 | the target's own landmarks (the driving landmarks   |
|                     |                 |         | for a video pair, else the source landmarks)        |
| `sample_kind`       | `[B]`           | int32   | 0: first-kind sample, weights a1..a5; 1: perturbed- |
|                     |                 |         | landmark sample (SPEC claim 7), weights a6..a10     |

`M` is 1 or the number of landmark parts (`facegen_jax.landmarks.layout.PART_NAMES`).
uint8 keeps host->device traffic small; the train step converts images to [-1, 1] and masks to
[0, 1].
"""

import numpy as np

KIND_FIRST = 0
KIND_PERTURBED = 1

IMAGE_KEYS = ("source", "target")
MASK_KEYS = ("driving_mask", "target_mask")
LANDMARK_KEYS = ("source_landmarks", "driving_landmarks", "target_landmarks")
KEYS = IMAGE_KEYS + MASK_KEYS + LANDMARK_KEYS + ("sample_kind",)


def validate_batch(batch, resolution: int, mask_channels: int) -> None:
  """Raises ValueError naming the key when `batch` does not follow the format above."""
  missing = [k for k in KEYS if k not in batch]
  if missing:
    raise ValueError(f"batch is missing keys {missing}; expected {list(KEYS)}")
  b = np.shape(batch["source"])[0]
  expect = {
      "source": ((b, resolution, resolution, 3), np.uint8),
      "target": ((b, resolution, resolution, 3), np.uint8),
      "driving_mask": ((b, resolution, resolution, mask_channels), np.uint8),
      "target_mask": ((b, resolution, resolution, mask_channels), np.uint8),
      "source_landmarks": ((b, 68, 2), np.float32),
      "driving_landmarks": ((b, 68, 2), np.float32),
      "target_landmarks": ((b, 68, 2), np.float32),
      "sample_kind": ((b,), np.int32),
  }
  for key, (shape, dtype) in expect.items():
    arr = batch[key]
    if tuple(np.shape(arr)) != shape or np.dtype(arr.dtype) != np.dtype(dtype):
      raise ValueError(
          f"batch[{key!r}] has shape {tuple(np.shape(arr))} dtype {arr.dtype}; "
          f"expected {shape} {np.dtype(dtype).name}")
