r"""Steps/s of the training loop with metrics fetched every step (before) and every log interval (now).

  nice -n 19 python benchmarks/host_sync.py [--config=tiny] [--steps=20] [--rounds=4] [--out=BENCHMARKS.md]

Runs `facegen_jax.train.loop.train` on synthetic faces (experiments/configs/<config>.py, no image
grids, one checkpoint at the end) in alternating rounds in one process: "per-step fetch" adds what
the loop did before it kept metrics on the device (`jax.device_get` of every step's metrics and an
`isfinite` check, so the host waits for each step before dispatching the next), "every
log_every_steps" is the loop as it is. Each run trains 2 x --steps steps with
`log_every_steps=--steps`; the rate of the second interval (compiled, steady state, measured by
the loop's own `steps_per_sec`) counts; the best and the median round of each are reported (on a
loaded machine the per-step fetch, which idles the loop's thread every step, varies the most).
Prints a markdown table; with --out, writes it into that file between `<!-- host_sync:begin -->`
and `<!-- host_sync:end -->`.
"""

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "configs"))

import importlib  # pylint: disable=wrong-import-position

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
from absl import flags, logging  # pylint: disable=wrong-import-position

from benchmarks import common  # pylint: disable=wrong-import-position
from benchmarks.run import cpu_model  # pylint: disable=wrong-import-position
from facegen_jax import entry  # pylint: disable=wrong-import-position
from facegen_jax.train import loop, summaries  # pylint: disable=wrong-import-position

_CONFIG = flags.DEFINE_string("config", "tiny", "experiments/configs/<name>.py to train.")
_STEPS = flags.DEFINE_integer("steps", 20, "Steps per timed interval (the run trains twice as many).")
_ROUNDS = flags.DEFINE_integer("rounds", 4, "Alternating rounds of both variants.")
_OUT = flags.DEFINE_string("out", "", "Markdown file whose host_sync section is replaced (empty: print only).")
BEGIN, END = "<!-- host_sync:begin -->", "<!-- host_sync:end -->"
PER_STEP, DEFERRED = "per-step fetch (before)", "every log_every_steps (now)"


def run_once(config_name: str, steps: int, per_step_fetch: bool) -> float:
  """Steps/s of the second log interval of one training run."""
  config = importlib.import_module(config_name).get_config()
  config.num_train_steps, config.log_every_steps = 2 * steps, steps
  config.image_every_steps, config.checkpoint_every_steps = 0, 2 * steps
  rates = []
  scalars, add = summaries.Summaries.scalars, loop._PendingMetrics.add  # pylint: disable=protected-access

  def record(self, step, metrics):
    scalars(self, step, metrics)
    rates.append(self.last_rate)

  def add_and_fetch(self, step, metrics):  # the loop before: every step's metrics on the host, checked
    host = jax.device_get(metrics)
    assert all(np.isfinite(v) for v in host.values())
    add(self, step, metrics)

  summaries.Summaries.scalars = record
  if per_step_fetch:
    loop._PendingMetrics.add = add_and_fetch  # pylint: disable=protected-access
  try:
    with tempfile.TemporaryDirectory() as workdir:
      loop.train(config, workdir)
  finally:
    summaries.Summaries.scalars, loop._PendingMetrics.add = scalars, add  # pylint: disable=protected-access
  return rates[-1]


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  jax.config.update("jax_compilation_cache_dir", os.path.join(tempfile.gettempdir(), "facegen_host_sync_cache"))
  rates = {PER_STEP: [], DEFERRED: []}
  load_start = os.getloadavg()[0]
  for round_index in range(_ROUNDS.value):
    for name in (PER_STEP, DEFERRED) if round_index % 2 == 0 else (DEFERRED, PER_STEP):
      rates[name].append(run_once(_CONFIG.value, _STEPS.value, per_step_fetch=name == PER_STEP))
      print(f"round {round_index + 1}, {name}: {rates[name][-1]:.3f} steps/s", flush=True)
  best = {name: max(r) for name, r in rates.items()}
  median = {name: float(np.median(r)) for name, r in rates.items()}
  body = "\n".join([
      f"CPU: {cpu_model()}, {os.cpu_count()} cores; jax {jax.__version__}; backend {jax.default_backend()}; "
      f"config {_CONFIG.value}, synthetic faces; steps/s over steps {_STEPS.value + 1}-{2 * _STEPS.value} of a "
      f"run, {_ROUNDS.value} alternating rounds; 1-minute load average {load_start:.1f} at the start, "
      f"{os.getloadavg()[0]:.1f} at the end.", "",
      "| metrics fetched | steps/s, best | median | all rounds |", "|---|---|---|---|",
      *[f"| {name} | {best[name]:.3f} | {median[name]:.3f} | {', '.join(f'{r:.3f}' for r in rates[name])} |"
        for name in rates], "",
      f"now / before: {best[DEFERRED] / best[PER_STEP]:.3f}x (best), {median[DEFERRED] / median[PER_STEP]:.3f}x "
      "(median)"])
  print(body)
  if _OUT.value:
    common.write_section(_OUT.value, BEGIN, END, "Host sync of the training loop (`benchmarks/host_sync.py`)", body)


if __name__ == "__main__":
  entry.run(main)
