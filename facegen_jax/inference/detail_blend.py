"""The optional detail post-process (see docs/method.md, Detail blend) that blends source detail back.

Masks 2 and 3 are rendered from the landmarks of the reference (source) image and of the target
(generated) image. Their per-pixel mean `mu = (m2 + m3) / 2` and variance
`var = ((m2 - mu)^2 + (m3 - mu)^2) / 2 = ((m2 - m3) / 2)^2` form an affine transform
`A(m) = scale * m + shift`, with (scale, shift) = (mu, var) ("mean_scale", the default) or
(var, mu) ("variance_scale"). Applied to both masks, the two results differ exactly where the
reference and the target masks differ, so

    mask4 = |A(m2) - A(m3)| / max|A(m2) - A(m3)|        (in [0, 1]; 0 where they agree)

and the new target is `fused = target * (1 - mask4) + reference * mask4`. The normaliser is the
largest value the difference can take for masks in [0, 1] (1/2 for mean_scale, 1/8 for
variance_scale), so mask4 reaches 1 where one mask is fully on and the other fully off.
"""

import numpy as np

from facegen_jax.io import images
from facegen_jax.landmarks.masks import render_mask

AFFINE_MODES = {"mean_scale": 0.5, "variance_scale": 0.125}


def mask4_from_masks(mask2: np.ndarray, mask3: np.ndarray, mode: str = "mean_scale") -> np.ndarray:
  """Mask 4 from masks 2 and 3 (`[H, W]` or `[H, W, M]`, float in [0, 1]) -> `[H, W, 1]` in [0, 1]."""
  if mode not in AFFINE_MODES:
    raise ValueError(f"unknown detail-blend mode {mode!r}; choose one of {sorted(AFFINE_MODES)}")
  m2, m3 = np.asarray(mask2, np.float32), np.asarray(mask3, np.float32)
  if m2.shape != m3.shape:
    raise ValueError(f"masks 2 and 3 differ in shape: {m2.shape} vs {m3.shape}")
  if m2.ndim == 3:  # several part channels: blend where any part differs
    m2, m3 = m2.max(axis=-1), m3.max(axis=-1)
  mean = (m2 + m3) / 2
  var = ((m2 - mean) ** 2 + (m3 - mean) ** 2) / 2
  scale, shift = (mean, var) if mode == "mean_scale" else (var, mean)
  a2, a3 = scale * m2 + shift, scale * m3 + shift
  mask4 = np.abs(a2 - a3) / AFFINE_MODES[mode]
  return np.clip(mask4, 0.0, 1.0)[..., None]


def fuse(target: np.ndarray, reference: np.ndarray, mask4: np.ndarray) -> np.ndarray:
  """`target * (1 - mask4) + reference * mask4` on uint8 images `[H, W, 3]`; returns uint8."""
  t, r = np.asarray(target, np.float32), np.asarray(reference, np.float32)
  out = t * (1.0 - mask4) + r * mask4
  return np.clip(np.round(out), 0, 255).astype(np.uint8)


def detail_blend(target: np.ndarray, reference: np.ndarray, target_landmarks: np.ndarray,
                 reference_landmarks: np.ndarray, mode: str = "mean_scale", blur_sigma: float = 2.0) -> np.ndarray:
  """The whole post-process on face crops: render masks 2 (reference) and 3 (target) from their
  landmarks `[68, 2]`, soften them with a Gaussian of `blur_sigma` pixels, form mask 4, fuse."""
  from scipy import ndimage  # pylint: disable=import-outside-toplevel
  size = target.shape[:2]
  m2 = images.to_float_mask(render_mask(reference_landmarks, size))[..., 0]
  m3 = images.to_float_mask(render_mask(target_landmarks, size))[..., 0]
  if blur_sigma > 0:
    m2, m3 = ndimage.gaussian_filter(m2, blur_sigma), ndimage.gaussian_filter(m3, blur_sigma)
  return fuse(target, reference, mask4_from_masks(m2, m3, mode))
