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
| `sample_kind`       | `[B]`           | int32   | the sample's `LossGroup`: 0 weights a1..a5, 1 (own  |
|                     |                 |         | landmarks perturbed) weights a6..a10                |

`M` is 1 or the number of landmark parts (`facegen_jax.landmarks.layout.PART_NAMES`).
uint8 keeps host->device traffic small; the train step converts images to [-1, 1] and masks to
[0, 1].

Every data source (the TFDS pipeline, the synthetic faces, personalization) chooses a
`SampleKind` and the frames and landmarks for it, and builds the sample with `make_sample` (see
docs/method.md, Sample kinds).
"""

import enum
from typing import Optional

import numpy as np

from facegen_jax.landmarks.masks import render_mask


class SampleKind(enum.IntEnum):
  """How a sample's pose was chosen (the order of `config.data.kind_ratios`)."""

  SAME_VIDEO = 0  # (a) another frame of the source's video; that frame is the target
  OTHER_PERSON = 1  # (b) a frame of another person; no ground truth, the target is the source
  PERTURBED = 2  # (c) the source's own landmarks randomly perturbed; the target is the source


class LossGroup(enum.IntEnum):
  """The batch's `sample_kind` field: which loss weights a sample gets."""

  FIRST = 0  # config.loss.first, a1..a5: kinds (a) and (b)
  PERTURBED = 1  # config.loss.perturbed, a6..a10: kind (c)


def loss_group(kind: SampleKind) -> LossGroup:
  return LossGroup.PERTURBED if kind == SampleKind.PERTURBED else LossGroup.FIRST


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


def make_sample(kind: SampleKind, source: np.ndarray, source_landmarks: np.ndarray, driving_landmarks: np.ndarray,
                *, mask_per_part: bool, target: Optional[np.ndarray] = None, driving_mask: Optional[np.ndarray] = None,
                target_mask: Optional[np.ndarray] = None) -> dict:
  """One unbatched sample in the format above.

  Args:
    kind: how the pose was chosen. SAME_VIDEO: `target` is the frame the `driving_landmarks`
      were found on (the ground truth). OTHER_PERSON, PERTURBED: no `target`; it is the source.
    source: the reference face `[R, R, 3]` uint8; source_landmarks its `[68, 2]` landmarks.
    driving_landmarks: the pose `[68, 2]`.
    mask_per_part: masks with one channel per landmark part instead of one.
    driving_mask, target_mask: the masks `[R, R, M]` uint8 of the driving and the target
      landmarks when the caller has them (a prepared dataset stores them); else rendered here.
      A SAME_VIDEO target's mask is the driving mask.
  """
  if (kind == SampleKind.SAME_VIDEO) != (target is not None):
    raise ValueError(f"a {kind.name} sample {'needs' if target is None else 'takes no'} target frame")
  src_lm, drv_lm = np.asarray(source_landmarks, np.float32), np.asarray(driving_landmarks, np.float32)
  if target is None:
    target, tgt_lm = source, src_lm
  else:
    tgt_lm = drv_lm
  size = source.shape[0]
  if driving_mask is None:
    driving_mask = render_mask(drv_lm, size, per_part=mask_per_part)
  if target_mask is None:
    target_mask = driving_mask if tgt_lm is drv_lm else render_mask(tgt_lm, size, per_part=mask_per_part)
  return {
      "source": source, "source_landmarks": src_lm,
      "driving_mask": driving_mask, "driving_landmarks": drv_lm,
      "target": target, "target_mask": target_mask, "target_landmarks": tgt_lm,
      "sample_kind": np.int32(loss_group(kind)),
  }
