"""Exports a training workdir's EMA generator: `python experiments/export.py --workdir=W --output=DIR`.

DIR then holds config.json + generator.msgpack, loadable by `Reenactor.from_checkpoint(DIR)`.
"""

from absl import flags

from facegen_jax import entry

flags.DEFINE_string("workdir", None, "Training workdir.")
flags.DEFINE_string("output", None, "Export directory.")
flags.DEFINE_bool("ema", True, "Export the EMA weights (else the raw generator weights).")
flags.mark_flags_as_required(["workdir", "output"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from facegen_jax.inference.generator_model import GeneratorModel  # pylint: disable=import-outside-toplevel
  model = GeneratorModel.load(FLAGS.workdir, use_ema=FLAGS.ema)
  path = model.export(FLAGS.output)
  print(f"wrote {path} ({model.info})")


if __name__ == "__main__":
  entry.run(main)
