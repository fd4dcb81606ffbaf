"""`train(config, workdir)`: the training job, resumable from its workdir.

The host never waits for the device on a step that does not log: each step's metrics stay on
the device (`_PendingMetrics`) and are fetched together every `config.log_every_steps`, and
before a checkpoint, an evaluation or a SIGTERM save, where the NaN stop checks every step of
the window (so a checkpoint is only written once every step before it was finite). Image grids
are copied and written on a background thread (`summaries.Summaries.images`).
"""

import json
import queue
import signal
import threading

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from facegen_jax.data import batch as batch_lib
from facegen_jax.data.synthetic import SyntheticFaces
from facegen_jax.io import checkpoints
from facegen_jax.models import factory
from facegen_jax.nets import load_frozen_net
from facegen_jax.train import checkpointing, config_check, sharding, summaries
from facegen_jax.train.state import create_train_state
from facegen_jax.train.step import LossNets, make_train_step


class NonFiniteLossError(RuntimeError):
  """A loss became NaN or infinite; the last checkpoint on disk is the last good state."""


class _PendingMetrics:
  """The metrics of the steps since the last fetch, still on the device."""

  def __init__(self):
    self._steps, self._metrics = [], []

  def add(self, step: int, metrics: dict) -> None:
    self._steps.append(step)
    self._metrics.append(metrics)

  def fetch(self, checkpoint_dir, latest_checkpoint) -> dict:
    """One device-to-host transfer of every pending step's metrics; the newest step's as floats.

    Raises NonFiniteLossError naming the first step with a non-finite value.
    """
    host = jax.device_get(self._metrics)
    steps = self._steps
    self._steps, self._metrics = [], []
    for step, metrics in zip(steps, host):
      bad = sorted(k for k, v in metrics.items() if not np.isfinite(v))
      if bad:
        raise NonFiniteLossError(
            f"non-finite {bad} at step {step}; stopped. The newest checkpoint in {checkpoint_dir} "
            f"(step {latest_checkpoint()}) is the last good state. Lower the learning rates or check the data.")
    return {k: float(v) for k, v in host[-1].items()} if host else {}


def create_data_iterator(config: ml_collections.ConfigDict):
  """This process's iterator of training batches (see facegen_jax/data/batch.py)."""
  per_process = config.global_batch_size // jax.process_count()
  if config.data.source == "synthetic":
    return SyntheticFaces(config.resolution, per_process, mask_per_part=config.mask_per_part, seed=config.seed,
                          kind_ratios=tuple(config.data.kind_ratios), perturb=config.data.perturb.to_dict(),
                          num_identities=config.data.synthetic_identities, process_index=jax.process_index(),
                          process_count=jax.process_count())
  if config.data.source == "tfds":
    from facegen_jax.data.pipeline import create_train_iterator  # grain, TFDS: heavy imports, tfds source only
    return create_train_iterator(config.data, global_batch_size=config.global_batch_size,
                                 resolution=config.resolution, mask_per_part=config.mask_per_part, seed=config.seed)
  raise ValueError(f"config.data.source must be 'synthetic' or 'tfds', got {config.data.source!r}")


def load_loss_nets(config: ml_collections.ConfigDict) -> LossNets:
  """Loads the identity / perceptual networks whose loss weights are non-zero."""
  def weighted(term):
    return any(float(config.loss[g][term]) != 0 for g in ("first", "perturbed"))

  cache = {}

  def load(name):
    if not name:
      return None
    if name not in cache:
      kwargs = {"weights_path": config.loss.vgg19_weights} if name == "vgg19" else {}
      cache[name] = load_frozen_net(name, **kwargs)
    return cache[name]

  return LossNets(identity=load(config.loss.identity_net) if weighted("identity") else None,
                  perceptual=load(config.loss.perceptual_net) if weighted("perceptual") else None)


class _Prefetch:
  """Produces batches on a background thread, each with the iterator state after it."""

  def __init__(self, iterator, size: int = 2):
    self._it, self._queue = iterator, queue.Queue(maxsize=size)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()

  def _run(self):
    try:
      while not self._stop.is_set():
        item = next(self._it)
        self._queue.put((item, self._it.get_state()))
    except BaseException as e:  # pylint: disable=broad-except
      self._queue.put(e)

  def next(self):
    item = self._queue.get()
    if isinstance(item, BaseException):
      raise item
    return item

  def close(self):
    self._stop.set()
    try:
      while True:
        self._queue.get_nowait()
    except queue.Empty:
      pass


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  if jax.process_index() == 0:
    (epath.Path(workdir) / "config.json").write_text(config.to_json_best_effort(indent=2))


def train(config: ml_collections.ConfigDict, workdir: str, make_evaluator=None) -> dict:
  """Trains `config` in `workdir` (resuming from its newest checkpoint) for config.num_train_steps.

  `make_evaluator(config, mesh)` builds the evaluation run every `config.eval_every_steps` and at
  the last step (experiments/train.py passes `facegen_jax.evaluation.during_training.Evaluator`):
  an object with `reference() -> dict` (numbers written once for comparison) and
  `__call__(variables) -> dict` (the scores of the EMA generator `{"params", "batch_stats"}`).
  Its rows go to TensorBoard and `<workdir>/metrics.jsonl` (`summaries.MetricsLog`).

  Returns the metrics of the last step (floats).
  """
  if int(config.get("eval_every_steps", 0)) > 0 and make_evaluator is None:
    raise ValueError(f"config.eval_every_steps={config.eval_every_steps} but no evaluator was given: call "
                     "train(config, workdir, make_evaluator=facegen_jax.evaluation.during_training.Evaluator) "
                     "(experiments/train.py does), or set config.eval_every_steps=0")
  profile = summaries.ProfileWindow(config.get("profile_steps", ""), epath.Path(workdir) / "profile")
  summaries.quiet_library_logs()
  config_check.validate(config, jax.device_count(), jax.process_count())  # before anything compiles
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)

  # Mesh.
  mesh = sharding.make_mesh()
  sharding.check_batch_size(config.global_batch_size, mesh)
  logging.info("devices: %d (%s), processes: %d", mesh.devices.size, jax.devices()[0].platform, jax.process_count())

  # Model.
  loss_nets = load_loss_nets(config)
  train_step = sharding.jit_train_step(make_train_step(config, loss_nets), mesh)
  state = sharding.replicate(create_train_state(config), mesh)
  frozen = sharding.replicate(loss_nets.frozen_params(), mesh)

  # Input.
  data_iter = create_data_iterator(config)

  # Checkpoint.
  manager = checkpoints.make_manager(workdir, config.keep_checkpoints)
  restored = checkpointing.restore_latest(manager, state)
  if restored is not None:
    state, data_state = restored
    data_iter.set_state(data_state)
    logging.info("resumed from %s at step %d", manager.directory, int(state.step))
  write_config(config, workdir)  # only once the checkpoints are known to fit this config
  start_step = int(jax.device_get(state.step))
  data_state = data_iter.get_state()

  stop_requested = threading.Event()
  previous_handler = None
  if threading.current_thread() is threading.main_thread():
    previous_handler = signal.signal(signal.SIGTERM, lambda *_: stop_requested.set())

  summ = summaries.Summaries(workdir, config.num_train_steps, enabled=jax.process_index() == 0)
  summ.start(start_step)
  evaluator, eval_every = None, int(config.get("eval_every_steps", 0))
  if eval_every > 0:
    evaluator = make_evaluator(config, mesh)
    eval_log = summaries.MetricsLog(workdir, start_step, summ)
    eval_log.reference(evaluator.reference)
  pending = _PendingMetrics()
  prefetch = _Prefetch(data_iter)
  last = {}
  step = start_step
  try:
    # Loop.
    first = True
    while step < config.num_train_steps:
      host_batch, next_data_state = prefetch.next()
      if first:
        batch_lib.validate_batch(host_batch, config.resolution, factory.mask_channels(config))
        first = False
      profile.before(step + 1)
      state, metrics, images = train_step(state, sharding.shard_batch(host_batch, mesh), frozen)
      data_state, step = next_data_state, step + 1
      pending.add(step, metrics)
      profile.after(step, metrics)
      final = step == config.num_train_steps
      log = step % config.log_every_steps == 0 or final
      save = step % config.checkpoint_every_steps == 0 or final
      evaluate = evaluator is not None and (step % eval_every == 0 or final)
      stop = stop_requested.is_set()
      if log or save or evaluate or stop:  # the only steps that wait for the device
        last = pending.fetch(manager.directory, manager.latest_step)
      if log:
        summ.scalars(step, last)
      if config.image_every_steps and (step % config.image_every_steps == 0 or final):
        summ.images(step, host_batch, images)
      if evaluate:
        eval_log.evaluation(step, evaluator({"params": state.ema_params,
                                             "batch_stats": state.g_vars["batch_stats"]}))
      if save:
        checkpointing.save(manager, state, data_state)
      if stop:
        logging.warning("SIGTERM: saving step %d and exiting", step)
        checkpointing.save(manager, state, data_state)
        break
  finally:
    prefetch.close()
    profile.close()
    manager.wait_until_finished()
    summ.close()
    if previous_handler is not None:
      signal.signal(signal.SIGTERM, previous_handler)
  return {k: float(v) for k, v in last.items()}
