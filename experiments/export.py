"""Exports a generator: `python experiments/export.py --workdir=W --output=DIR [--format=msgpack,jax,onnx]`.

W is a training workdir (its newest checkpoint's EMA generator, or the raw one with --noema) or an
export folder (weights/demo_128). DIR then holds config.json + export.json and, per format
(inference/export_formats.py):
  msgpack  generator.msgpack: the weights, for this package (`Reenactor.from_checkpoint(DIR)`);
  jax      generator.jax: a serialized jax.export (StableHLO) program, symbolic batch, CPU and CUDA;
  onnx     generator.onnx: an ONNX graph with a dynamic batch axis, checked by onnx.checker
           (needs the onnx extra: pip install -e '.[onnx]').
Each program has its input contract beside it (generator.jax.json, generator.onnx.json). A
generator with motion takes a fifth input, `tps_flow`, the landmarks' spline flow, which the caller
computes with facegen_jax.landmarks.tps.host_flow (numpy only; examples/onnx_reenact.py shows how).
`Reenactor.from_checkpoint` and facegen-reenact --checkpoint take DIR or a program file.
"""

import os

from absl import flags

from facegen_jax import entry

flags.DEFINE_string("workdir", None, "Training workdir, or an export folder to convert.")
flags.DEFINE_string("output", None, "Export directory.")
flags.DEFINE_bool("ema", True, "Export the EMA weights (else the raw generator weights).")
flags.DEFINE_string("format", "msgpack", "Comma-separated formats to write: msgpack, jax, onnx.")
flags.mark_flags_as_required(["workdir", "output"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from facegen_jax.inference import export_formats  # pylint: disable=import-outside-toplevel
  from facegen_jax.inference.generator_model import GeneratorModel  # pylint: disable=import-outside-toplevel
  from facegen_jax.io import paths  # pylint: disable=import-outside-toplevel
  formats = export_formats.parse_formats(FLAGS.format)
  with paths.local_checkpoint(FLAGS.workdir) as workdir:  # a URL: read from a local copy
    model = GeneratorModel.load(workdir, use_ema=FLAGS.ema)
  with paths.writing_to(FLAGS.output) as output:  # a URL: written locally, then copied there
    written = [os.path.relpath(path, output) for path in export_formats.export(model, output, formats)]
  for name in written:
    print(f"wrote {paths.as_path(FLAGS.output) / name} ({model.info})")


if __name__ == "__main__":
  entry.run(main)
