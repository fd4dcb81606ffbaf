"""Reenactment metrics of the field: L1, PSNR, SSIM, AKD, AED, CSIM, FID and LPIPS.

Images are uint8 `[H, W, 3]` RGB (or `[B, H, W, 3]` where noted); pixel metrics work on [0, 1].
Landmarks are float `[68, 2]` (x, y) pixels, as everywhere in facegen-jax.

Conventions follow the literature so the numbers compare:
- SSIM is scikit-image's `structural_similarity` with its defaults (7x7 uniform window, sample
  covariance, K1=0.01, K2=0.03, borders cropped, channels averaged).
- AKD (average keypoint distance) is the mean Euclidean distance of the 68 landmarks, measured at
  256x256 as FOMM's pose-evaluation does; frames where no face is found on the output are counted
  and skipped.
- AED is computed as pose-evaluation's `cmp.py` does: per frame, the mean over embedding
  dimensions of |e_out - e_ref|, then the mean over frames. Because the write-ups of the field
  describe AED as an L2 distance, the squared L2 distance `sum((e_out - e_ref)^2)` is reported
  beside it (`aed_sq_l2`).
- CSIM is the cosine similarity of the two embeddings.
- FID is the Frechet distance between Gaussians fitted to Inception features; the features come
  from a function the caller supplies (no weights ship with facegen-jax).
"""

import warnings
from typing import Callable, Optional, Sequence

import numpy as np
import scipy.linalg
import scipy.ndimage

NOT_COMPUTED = "not computed"
AKD_RESOLUTION = 256


def _to_unit(image: np.ndarray) -> np.ndarray:
  image = np.asarray(image)
  if image.dtype == np.uint8:
    return image.astype(np.float64) / 255.0
  return image.astype(np.float64)


def _check_pair(a: np.ndarray, b: np.ndarray):
  if np.shape(a) != np.shape(b):
    raise ValueError(f"images must have the same shape, got {np.shape(a)} and {np.shape(b)}")


def l1(a: np.ndarray, b: np.ndarray) -> float:
  """Mean absolute error on [0, 1] (uint8 inputs are divided by 255)."""
  _check_pair(a, b)
  return float(np.mean(np.abs(_to_unit(a) - _to_unit(b))))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
  """Peak signal-to-noise ratio in dB on [0, 1]; inf for identical images (as scikit-image)."""
  _check_pair(a, b)
  mse = np.mean((_to_unit(a) - _to_unit(b)) ** 2)
  if mse == 0:
    return float("inf")
  return float(10.0 * np.log10(1.0 / mse))


def ssim(a: np.ndarray, b: np.ndarray, win_size: int = 7, k1: float = 0.01, k2: float = 0.03) -> float:
  """Mean structural similarity of `[H, W]` or `[H, W, C]` images on [0, 1].

  Equals `skimage.metrics.structural_similarity(a, b, data_range=1, channel_axis=-1)` (uint8
  inputs: data_range=255 on the raw values, the same number).
  """
  _check_pair(a, b)
  x, y = _to_unit(a), _to_unit(b)
  if x.ndim == 2:
    x, y = x[..., None], y[..., None]
  if min(x.shape[:2]) < win_size:
    raise ValueError(f"SSIM needs images of at least {win_size}x{win_size}, got {x.shape[:2]}")
  size = (win_size, win_size, 1)  # filter spatially, channel by channel
  n = win_size * win_size
  cov_norm = n / (n - 1.0)
  mx = scipy.ndimage.uniform_filter(x, size)
  my = scipy.ndimage.uniform_filter(y, size)
  vx = cov_norm * (scipy.ndimage.uniform_filter(x * x, size) - mx * mx)
  vy = cov_norm * (scipy.ndimage.uniform_filter(y * y, size) - my * my)
  vxy = cov_norm * (scipy.ndimage.uniform_filter(x * y, size) - mx * my)
  c1, c2 = (k1 * 1.0) ** 2, (k2 * 1.0) ** 2
  s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
  pad = (win_size - 1) // 2
  return float(np.mean(s[pad:-pad, pad:-pad]))


def keypoint_distance(pred: np.ndarray, ref: np.ndarray, resolution: Optional[int] = None) -> float:
  """Mean Euclidean distance of corresponding landmarks `[K, 2]`.

  With `resolution` (the image size the landmarks live in), the distance is rescaled to pixels of
  a 256x256 image, the scale at which the field reports AKD.
  """
  pred, ref = np.asarray(pred, np.float64), np.asarray(ref, np.float64)
  if pred.shape != ref.shape or pred.ndim != 2 or pred.shape[1] != 2:
    raise ValueError(f"landmarks must both be [K, 2], got {pred.shape} and {ref.shape}")
  distance = float(np.mean(np.linalg.norm(pred - ref, axis=-1)))
  if resolution is not None:
    distance *= AKD_RESOLUTION / float(resolution)
  return distance


def akd(pred: Sequence[Optional[np.ndarray]], ref: Sequence[np.ndarray],
        resolution: Optional[int] = None) -> dict:
  """AKD over frames: `pred[i]` is None where detection failed on output frame i.

  Returns {"akd": mean distance over detected frames (NaN if none), "akd_failed": frames
  skipped, "akd_frames": frames scored}.
  """
  if len(pred) != len(ref):
    raise ValueError(f"{len(pred)} predicted and {len(ref)} reference landmark sets")
  distances = [keypoint_distance(p, r, resolution) for p, r in zip(pred, ref) if p is not None]
  return {"akd": float(np.mean(distances)) if distances else float("nan"),
          "akd_failed": len(pred) - len(distances), "akd_frames": len(distances)}


def aed(emb_out: np.ndarray, emb_ref: np.ndarray) -> float:
  """Average embedding distance as pose-evaluation's cmp.py: mean over frames of the mean
  absolute difference over embedding dimensions. Inputs `[B, D]` (or `[D]`)."""
  diff = np.abs(np.atleast_2d(np.asarray(emb_out, np.float64)) - np.atleast_2d(np.asarray(emb_ref, np.float64)))
  return float(np.mean(np.mean(diff, axis=-1)))


def aed_sq_l2(emb_out: np.ndarray, emb_ref: np.ndarray) -> float:
  """Mean over frames of the squared L2 distance `sum_d (e_out - e_ref)^2`. Inputs `[B, D]`."""
  diff = np.atleast_2d(np.asarray(emb_out, np.float64)) - np.atleast_2d(np.asarray(emb_ref, np.float64))
  return float(np.mean(np.sum(diff * diff, axis=-1)))


def csim(emb_out: np.ndarray, emb_ref: np.ndarray) -> float:
  """Mean over frames of the cosine similarity of two embeddings. Inputs `[B, D]`."""
  a = np.atleast_2d(np.asarray(emb_out, np.float64))
  b = np.atleast_2d(np.asarray(emb_ref, np.float64))
  cos = np.sum(a * b, -1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)
  return float(np.mean(cos))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
  """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2):
  |mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)).

  A singular product (few samples, many features) is regularised by adding `eps` to the
  diagonals, as the reference FID implementations do.
  """
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
    raise ValueError(f"mismatched Gaussians: {mu1.shape}, {sigma1.shape} vs {mu2.shape}, {sigma2.shape}")
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error", scipy.linalg.LinAlgWarning)
      covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    singular = not np.isfinite(covmean).all()
  except scipy.linalg.LinAlgWarning:
    singular = True
  if singular:
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  covmean = np.real(covmean)  # rounding leaves a tiny imaginary part
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def gaussian_stats(features: np.ndarray):
  """Mean `[D]` and covariance `[D, D]` of features `[N, D]` (N >= 2)."""
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or features.shape[0] < 2:
    raise ValueError(f"FID needs features [N >= 2, D], got {features.shape}")
  return features.mean(0), np.cov(features, rowvar=False)


def fid(real_images: np.ndarray, fake_images: np.ndarray,
        feature_fn: Callable[[np.ndarray], np.ndarray]) -> float:
  """FID between two image sets `[N, H, W, 3]` uint8 with `feature_fn(images) -> [N, D]`."""
  return frechet_distance(*gaussian_stats(feature_fn(real_images)), *gaussian_stats(feature_fn(fake_images)))
