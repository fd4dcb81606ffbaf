"""Console progress, TensorBoard scalars and image grids (tensorboardX: no TensorFlow needed)."""

import logging as std_logging
import os
import time

import numpy as np
from absl import logging
from PIL import Image

from facegen_jax.io.images import to_uint8_image


def _to_uint8(x) -> np.ndarray:
  """[-1, 1] float (device or host) -> uint8 on the host."""
  return to_uint8_image(np.asarray(x, np.float32))


def mask_to_rgb(mask: np.ndarray) -> np.ndarray:
  """A face mask `[H, W, M]` uint8 -> `[H, W, 3]` uint8 (max over channels, grey)."""
  m = np.asarray(mask).max(axis=-1)
  return np.repeat(m[..., None], 3, axis=-1).astype(np.uint8)


def image_grid(batch: dict, images: dict, max_rows: int = 4) -> np.ndarray:
  """Rows of source | driving mask | generated | reconstructed | target, then, for a generator with
  motion, | warped source | blend mask: `[rows*R, 5*R (or 6*R, 7*R), 3]` uint8."""
  rows = []
  for i in range(min(max_rows, batch["source"].shape[0])):
    cells = [np.asarray(batch["source"][i]), mask_to_rgb(batch["driving_mask"][i]),
             _to_uint8(images["generated"][i]), _to_uint8(images["reconstructed"][i]), np.asarray(batch["target"][i])]
    if "warped" in images:
      cells.append(_to_uint8(images["warped"][i]))
    if "blend_mask" in images:
      cells.append(mask_to_rgb(np.round(np.asarray(images["blend_mask"][i], np.float32) * 255).astype(np.uint8)))
    rows.append(np.concatenate(cells, axis=1))
  return np.concatenate(rows, axis=0)


def _format_duration(seconds: float) -> str:
  seconds = int(max(0, seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Summaries:
  """Writes scalars and grids to `<workdir>/tensorboard` and prints progress with rate and ETA.

  Only process 0 writes.
  """

  def __init__(self, workdir: str, num_steps: int, enabled: bool = True):
    self.enabled, self.num_steps = enabled, num_steps
    self.workdir = workdir
    self._writer = None
    if enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self._writer = SummaryWriter(os.path.join(workdir, "tensorboard"))
    self._last_time, self._last_step = None, None

  def start(self, step: int) -> None:
    self._last_time, self._last_step = time.time(), step

  def scalars(self, step: int, metrics: dict) -> None:
    now = time.time()
    rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_time, self._last_step = now, step
    eta = (self.num_steps - step) / rate if rate > 0 else float("inf")
    metrics = {k: float(v) for k, v in metrics.items()}
    metrics["steps_per_sec"] = rate
    if not self.enabled:
      return
    for k, v in metrics.items():
      self._writer.add_scalar(k, v, step)
    losses = " ".join(f"{k.split('/')[-1]}={v:.4g}" for k, v in sorted(metrics.items())
                      if k.startswith("g/") and "norm" not in k)
    logging.info("step %d/%d | d=%.4g %s | %.2f steps/s | ETA %s", step, self.num_steps,
                 metrics.get("d/loss", float("nan")), losses, rate, _format_duration(eta))

  def images(self, step: int, grid: np.ndarray) -> None:
    if not self.enabled:
      return
    self._writer.add_image("samples/source_mask_generated_reconstructed_target", grid, step, dataformats="HWC")
    os.makedirs(os.path.join(self.workdir, "samples"), exist_ok=True)
    Image.fromarray(grid).save(os.path.join(self.workdir, "samples", f"step_{step:08d}.png"))

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


class _QuietLibraries(std_logging.Filter):
  """Drops INFO chatter of orbax's checkpoint internals (dozens of lines per save)."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname.replace("\\", "/")


def quiet_library_logs() -> None:
  """Installs the filter on absl's logger (idempotent)."""
  logger = logging.get_absl_logger()
  if not any(isinstance(f, _QuietLibraries) for f in logger.filters):
    logger.addFilter(_QuietLibraries())
