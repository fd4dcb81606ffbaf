"""Console progress, TensorBoard scalars and image grids (tensorboardX: no TensorFlow needed), the
in-training evaluations' `metrics.jsonl`, and the profiler window of `config.profile_steps`."""

import concurrent.futures
import io
import json
import logging as std_logging
import re
import shutil
import tempfile
import time

import jax
import numpy as np
from absl import logging
from etils import epath
from PIL import Image

from facegen_jax.io.images import to_uint8_image
from facegen_jax.train import sharding


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


class _UrlEventFile:
  """A TensorBoard event file at a URL (`gs://...`), written through epath: the records are kept
  in memory and the whole file is rewritten at each flush (object stores have no append), as
  tensorboardX's own GCS writer does."""

  def __init__(self, path: str):
    self._path, self._buffer = epath.Path(path), io.BytesIO()

  def write(self, data: bytes) -> None:
    self._buffer.write(data)

  def flush(self) -> None:
    self._path.write_bytes(self._buffer.getvalue())

  def close(self) -> None:
    self.flush()


class _UrlEventFiles:
  """tensorboardX's writer factory for one URL scheme."""

  def open(self, path: str) -> _UrlEventFile:
    return _UrlEventFile(path)

  def directory_check(self, path: str) -> None:
    epath.Path(path).mkdir(parents=True, exist_ok=True)


URL_SCHEMES = ("gs", "s3")


def _register_url_event_writers() -> None:
  """Event files under `gs://` and `s3://` go through epath (tensorboardX's own writers for them
  use other client libraries and credentials)."""
  from tensorboardX import record_writer  # pylint: disable=import-outside-toplevel
  for scheme in URL_SCHEMES:
    if not isinstance(record_writer.REGISTERED_FACTORIES.get(scheme), _UrlEventFiles):
      record_writer.register_writer_factory(scheme, _UrlEventFiles())


class Summaries:
  """Writes scalars and grids to `<workdir>/tensorboard` and prints progress with rate and ETA.

  Only process 0 writes. Image grids are copied from the device and written on one background
  thread, so the step after an image step is dispatched without waiting for them; `close()` waits
  for the last one and raises its error, if any.
  """

  def __init__(self, workdir: str, num_steps: int, enabled: bool = True):
    self.enabled, self.num_steps = enabled, num_steps
    self.workdir = workdir
    self._writer = None
    if enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      _register_url_event_writers()
      self._writer = SummaryWriter(str(epath.Path(workdir) / "tensorboard"))
    self._last_time, self._last_step = None, None
    self.last_rate = None  # steps/s between the last two `scalars` calls
    self._images = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="image_summaries")
    self._image_jobs = []

  def start(self, step: int) -> None:
    self._last_time, self._last_step = time.time(), step

  def scalars(self, step: int, metrics: dict) -> None:
    now = time.time()
    rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_time, self._last_step, self.last_rate = now, step, rate
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

  def images(self, step: int, batch: dict, images: dict) -> None:
    """Queues the grid of `image_grid(batch, images)` (`images`: the train step's batch-sharded
    outputs, still on the device) for TensorBoard and `<workdir>/samples/step_<step>.png`."""
    if not self.enabled:
      return
    for job in [j for j in self._image_jobs if j.done()]:
      self._image_jobs.remove(job)
      job.result()  # an error of an earlier grid surfaces here
    self._image_jobs.append(self._images.submit(self._write_images, step, batch, images))

  def _write_images(self, step: int, batch: dict, images: dict) -> None:
    grid = image_grid(batch, sharding.process_local(images))
    self._writer.add_image("samples/source_mask_generated_reconstructed_target", grid, step, dataformats="HWC")
    folder = epath.Path(self.workdir) / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.fromarray(grid).save(buffer, format="PNG")
    (folder / f"step_{step:08d}.png").write_bytes(buffer.getvalue())

  def add_scalars(self, step: int, scalars: dict) -> None:
    """TensorBoard scalars without console output."""
    if self.enabled:
      for k, v in scalars.items():
        self._writer.add_scalar(k, float(v), step)

  def close(self) -> None:
    self._images.shutdown(wait=True)
    jobs, self._image_jobs = self._image_jobs, []
    try:
      for job in jobs:
        job.result()
    finally:
      if self._writer is not None:
        self._writer.close()


class MetricsLog:
  """`<workdir>/metrics.jsonl`: the in-training evaluations, one JSON object a line, also written
  to TensorBoard (`eval/<name>`, `eval_reference/<method>/<name>`).

  - `{"kind": "reference", "method": ..., <scores>}`: a baseline's scores on the same samples,
    once per workdir;
  - `{"kind": "eval", "step": n, <scores>, "best_step": m, "best_<BEST>": x}`: the generator at
    step n and the best step so far (lowest `BEST`, the self-reenactment L1).

  A resumed run keeps the rows up to the step it resumes from and appends after them (rows of
  steps past that checkpoint, from a run that stopped before saving, are dropped: those steps run
  again). The file is rewritten whole at each row (object stores have no append). Only process 0
  writes.
  """

  FILE = "metrics.jsonl"
  BEST = "l1"

  def __init__(self, workdir: str, start_step: int, summaries: Summaries):
    self._summaries, self._path = summaries, epath.Path(workdir) / self.FILE
    self._rows = []
    if summaries.enabled and self._path.exists():
      for number, line in enumerate(self._path.read_text().splitlines(), 1):
        if not line.strip():
          continue
        try:
          row = json.loads(line)
        except json.JSONDecodeError as e:
          raise ValueError(f"{self._path}:{number} is not a JSON line ({e}); delete or fix that line to "
                           "resume") from e
        if row.get("kind") == "reference" or row.get("step", 0) <= start_step:
          self._rows.append(row)
    evals = self.evaluations()
    best = min(evals, key=lambda r: r[self.BEST]) if evals else None
    self.best_step = best["step"] if best else None
    self.best_value = best[self.BEST] if best else None

  def evaluations(self) -> list:
    return [r for r in self._rows if r.get("kind") == "eval"]

  def reference(self, compute) -> None:
    """Writes `compute()` (`{method: scores}`) unless this workdir already has reference rows."""
    if not self._summaries.enabled or any(r.get("kind") == "reference" for r in self._rows):
      return
    for method, scores in compute().items():
      self._rows.append({"kind": "reference", "method": method, **{k: float(v) for k, v in scores.items()}})
      logging.info("evaluation reference, %s: %s", method, _format_scores(scores))
      self._summaries.add_scalars(0, {f"eval_reference/{method}/{k}": v for k, v in scores.items()})
    self._write()

  def evaluation(self, step: int, scores: dict) -> None:
    """Records the generator's `scores` at `step` and updates the best step."""
    scores = {k: float(v) for k, v in scores.items()}
    if self.best_value is None or scores[self.BEST] < self.best_value:
      self.best_step, self.best_value = step, scores[self.BEST]
    if not self._summaries.enabled:
      return
    row = {"kind": "eval", "step": step, **scores, "best_step": self.best_step, f"best_{self.BEST}": self.best_value}
    self._rows.append(row)
    logging.info("evaluation at step %d: %s | best step %d (%s=%.4g)", step, _format_scores(scores), self.best_step,
                 self.BEST, self.best_value)
    self._summaries.add_scalars(step, {f"eval/{k}": v for k, v in scores.items()})
    self._summaries.add_scalars(step, {"eval/best_step": self.best_step})
    self._write()

  def _write(self) -> None:
    self._path.parent.mkdir(parents=True, exist_ok=True)
    tmp = self._path.parent / f".{self.FILE}.tmp"
    tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in self._rows))
    tmp.replace(self._path)


def _format_scores(scores: dict) -> str:
  return " ".join(f"{k}={float(v):.4g}" for k, v in sorted(scores.items()))


class ProfileWindow:
  """`config.profile_steps` = "FIRST-LAST" (e.g. "100-105"): a `jax.profiler` trace of train steps
  FIRST to LAST (step n is the update that makes `state.step` n) into `log_dir`; "" = none. Open
  it with TensorBoard's profile plugin (`--logdir=<log_dir>`) or xprof. A run resumed inside the
  window traces the rest of it. A URL `log_dir` (`gs://...`) gets the trace copied up through
  epath when it stops (the profiler writes local files)."""

  def __init__(self, spec: str, log_dir):
    self.log_dir, self._active, self.first, self.last = str(log_dir), False, None, None
    self._local = None
    spec = str(spec or "").strip()
    if spec:
      match = re.fullmatch(r"(\d+)-(\d+)", spec)
      if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise ValueError(f"config.profile_steps={spec!r}: expected 'FIRST-LAST' step numbers with "
                         "1 <= FIRST <= LAST (e.g. '100-105'), or '' for no trace")
      self.first, self.last = int(match.group(1)), int(match.group(2))

  def before(self, step: int) -> None:
    """Called before step `step` is dispatched: starts the trace at the window's first step."""
    if self.first is not None and not self._active and self.first <= step <= self.last:
      logging.info("profiling steps %d-%d into %s", step, self.last, self.log_dir)
      self._local = tempfile.mkdtemp(prefix="facegen_profile_") if "://" in self.log_dir else None
      jax.profiler.start_trace(self._local or self.log_dir)
      self._active = True

  def after(self, step: int, outputs) -> None:
    """Called after step `step` is dispatched: at the window's last step, waits for `outputs` and
    stops the trace."""
    if self._active and step >= self.last:
      jax.block_until_ready(outputs)
      self.close()

  def close(self) -> None:
    if self._active:
      jax.profiler.stop_trace()
      self._active = False
      self.first = None  # one window per run
      if self._local:
        for folder, _, names in epath.Path(self._local).walk():
          for name in names:
            target = epath.Path(self.log_dir) / (folder / name).relative_to(self._local)
            target.parent.mkdir(parents=True, exist_ok=True)
            (folder / name).copy(target, overwrite=True)
        shutil.rmtree(self._local)


class _QuietLibraries(std_logging.Filter):
  """Drops INFO chatter of orbax's checkpoint internals (dozens of lines per save)."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname.replace("\\", "/")


def quiet_library_logs() -> None:
  """Installs the filter on absl's logger (idempotent)."""
  logger = logging.get_absl_logger()
  if not any(isinstance(f, _QuietLibraries) for f in logger.filters):
    logger.addFilter(_QuietLibraries())
