"""Trains facegen-jax: `python experiments/train.py --config=experiments/configs/tiny.py --workdir=DIR`.

Everything (checkpoints, config.json, TensorBoard events, sample grids) goes to --workdir; run
the same command again to resume. Override any config value with `--config.key=value`; an
unknown key is an error.
"""

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory holding everything of this run; reused to resume.")
flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() first (multi-host GPU/TPU jobs).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import jax  # pylint: disable=import-outside-toplevel
  if FLAGS.multihost:
    jax.distributed.initialize()
  from facegen_jax.train import loop  # pylint: disable=import-outside-toplevel
  logging.set_verbosity(logging.INFO)
  loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
