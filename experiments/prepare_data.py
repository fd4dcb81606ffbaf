r"""Builds the FaceFrames TFDS dataset from a folder of clips and photos.

  python experiments/prepare_data.py --input=DIR --output=DIR --resolution=256

Input: VoxCeleb-style `identity/video/clip.mp4`, or a flat folder of clips and photos where the
identity is the file name's prefix before `__` (`anne__interview.mp4`), else the folder name.
Output: `DIR/face_frames/r256/1.0.0/` (array_record shards, read with `tfds.builder_from_directory`
or `facegen_jax.data.pipeline`), `DIR/summary.json` (counts, skipped files with reasons, notes such
as "several faces: took the largest"; skipped files and notes are also logged) and
`DIR/cache/` (per-file results: a rerun processes only new or changed files).

Train on it: `--config.data.source=tfds --config.data.data_dir=DIR` (see experiments/configs/demo.py).
The bundled sample (about a minute on 2 CPU cores):
  python experiments/prepare_data.py --input=sample_data --output=/tmp/facegen_sample --resolution=64

Scale-out: `--beam` runs the per-file work and the writing as an Apache Beam pipeline
(`pip install apache-beam`); locally on the DirectRunner, on a cluster with `--beam_options`, e.g.
  --beam --beam_options="--runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp"
  --beam --beam_options="--runner=SparkRunner --spark_master_url=spark://HOST:7077"
  --beam --beam_options="--runner=FlinkRunner --flink_master=HOST:8081"
(input, output and cache on storage every worker can read; see facegen_jax/data/prepare.py).

--input and --output may be bucket URLs (`gs://B/videos`, `gs://B/data`; install the `gcs` extra):
the files are read and written there through etils.epath (BUILD.md, "Buckets").
"""

import json
import shlex

from absl import flags

from facegen_jax import entry
from facegen_jax.data import prepare
from facegen_jax.io import paths

FLAGS = flags.FLAGS
_DEFAULTS = prepare.PrepareOptions()
flags.DEFINE_string("input", None, "Folder of clips and photos.", required=True)
flags.DEFINE_string("output", None, "Dataset folder (created).", required=True)
flags.DEFINE_integer("resolution", _DEFAULTS.resolution, "Crop size in pixels.")
flags.DEFINE_integer("frame_step", _DEFAULTS.frame_step, "Keep every k-th frame of a clip.")
flags.DEFINE_integer("max_frames", _DEFAULTS.max_frames, "Keep at most this many frames per clip.")
flags.DEFINE_integer("min_face_size", _DEFAULTS.min_face_size, "Skip faces smaller than this (pixels).")
flags.DEFINE_float("crop_scale", _DEFAULTS.crop_scale, "Crop side / face size.")
flags.DEFINE_string("detector", _DEFAULTS.detector, "Landmark backend: dlib | face_alignment.")
flags.DEFINE_integer("detect_every", _DEFAULTS.detect_every, "In clips, detect every N frames, track between.")
flags.DEFINE_bool("smoothing", _DEFAULTS.smoothing, "Smooth clip landmarks over time.")
flags.DEFINE_enum("image_format", _DEFAULTS.image_format, ["png", "jpeg"],
                  "Face crops as PNG (lossless) or JPEG (about 3x faster to decode in training).")
flags.DEFINE_integer("jpeg_quality", _DEFAULTS.jpeg_quality, "JPEG quality (with --image_format=jpeg).")
flags.DEFINE_float("test_fraction", 0.1, "Fraction of identities in the test split.")
flags.DEFINE_list("test_identities", [], "Exactly these identities form the test split (overrides the fraction).")
flags.DEFINE_integer("workers", 0, "Worker processes (0: one per CPU core).")
flags.DEFINE_bool("retry_skipped", False, "Reprocess files a previous run skipped.")
flags.DEFINE_bool("beam", False, "Build with Apache Beam (see the module docstring).")
flags.DEFINE_string("beam_options", "", "Beam pipeline flags (default: the local DirectRunner).")


def main(argv):
  del argv
  options = prepare.PrepareOptions(
      resolution=FLAGS.resolution, frame_step=FLAGS.frame_step, max_frames=FLAGS.max_frames,
      min_face_size=FLAGS.min_face_size, crop_scale=FLAGS.crop_scale, detector=FLAGS.detector,
      detect_every=FLAGS.detect_every, smoothing=FLAGS.smoothing, image_format=FLAGS.image_format,
      jpeg_quality=FLAGS.jpeg_quality)
  summary = prepare.prepare_dataset(
      FLAGS.input, FLAGS.output, options, test_fraction=FLAGS.test_fraction, test_identities=FLAGS.test_identities,
      workers=FLAGS.workers, retry_skipped=FLAGS.retry_skipped, beam=FLAGS.beam,
      beam_options=shlex.split(FLAGS.beam_options))
  prepare.log_skipped_and_notes(summary, paths.as_path(FLAGS.output) / prepare.SUMMARY_FILE)
  brief = {k: summary[k] for k in ("dataset_dir", "files", "frames", "identities", "splits", "dataset_rebuilt")}
  print(json.dumps(brief, indent=1))


if __name__ == "__main__":
  entry.run(main)
