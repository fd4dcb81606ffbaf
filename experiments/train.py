"""Trains facegen-jax: `python experiments/train.py --config=experiments/configs/tiny.py --workdir=DIR`.

Everything (checkpoints, config.json, TensorBoard events, sample grids, the evaluations of
`--config.eval_every_steps` in metrics.jsonl) goes to --workdir; run the same command again to
resume. Override any config value with `--config.key=value`; an
unknown key is an error.
"""

import os
import re

from absl import app, flags, logging
from ml_collections import config_flags

from facegen_jax import entry

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory holding everything of this run; reused to resume.")
flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() first (multi-host GPU/TPU jobs).")
flags.DEFINE_string("coordinator_address", None, "--multihost: host:port of process 0 (default: "
                    "$JAX_COORDINATOR_ADDRESS, or found by jax on Cloud TPU, SLURM and Open MPI).")
flags.DEFINE_integer("num_processes", None, "--multihost: process count (default: $JAX_NUM_PROCESSES, or auto).")
flags.DEFINE_integer("process_id", None, "--multihost: this process's index (default: $JAX_PROCESS_ID, or auto).")
flags.mark_flags_as_required(["config", "workdir"])


def parse_flags(argv):
  """absl's flag parsing, with a one-line error (not a traceback) for a misspelt config key."""
  try:
    return FLAGS(argv)
  except (AttributeError, KeyError) as e:
    text = str(e).replace("\\n", "\n").replace("\\'", "'")
    key = re.search(r"'([^'\\]+)'", text)
    key = key.group(1) if key else text
    override = next((a for a in argv[1:] if a.startswith("--config.") and f".{key}" in a.split("=", 1)[0]),
                    "a --config.* override")
    hint = re.search(r'Did you mean "([^"]+)"', text)
    hint = f' (did you mean "{hint.group(1)}"?)' if hint else ""
    config_file = next((a.split("=", 1)[1] for a in argv[1:] if a.startswith("--config=")), "the config file")
    entry.fail(f"unknown config key '{key}' in {override}{hint}. Valid keys are the fields of {config_file} and "
               "facegen_jax/train/base_config.py; fix the spelling or drop the override.", entry.USAGE_EXIT)


def load_config():
  """FLAGS.config; a config file that cannot be loaded (config_flags reports it on first use) is a usage error."""
  try:
    config = FLAGS.config
    config.get("seed")  # the first use
    return config
  except OSError as e:
    reason = [line.strip() for line in str(e).splitlines() if line.strip()][-1]
    raise app.UsageError(f"--config={FLAGS['config'].config_filename} cannot be loaded: {reason}; the configs "
                         "are in experiments/configs/") from e


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = load_config()
  import jax  # pylint: disable=import-outside-toplevel
  if FLAGS.multihost:
    # CPU processes exchange gradients through gloo (XLA:GPU/TPU use their own collectives).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    env_int = lambda name: int(os.environ[name]) if os.environ.get(name) else None  # pylint: disable=unnecessary-lambda-assignment
    jax.distributed.initialize(
        coordinator_address=FLAGS.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None,
        num_processes=FLAGS.num_processes if FLAGS.num_processes is not None else env_int("JAX_NUM_PROCESSES"),
        process_id=FLAGS.process_id if FLAGS.process_id is not None else env_int("JAX_PROCESS_ID"))
  from facegen_jax.evaluation import during_training  # pylint: disable=import-outside-toplevel
  from facegen_jax.train import loop  # pylint: disable=import-outside-toplevel
  logging.set_verbosity(logging.INFO)
  loop.train(config, FLAGS.workdir, make_evaluator=during_training.Evaluator)


if __name__ == "__main__":
  entry.run(main, flags_parser=parse_flags)
