r"""Samples/s of the training input pipeline (facegen_jax.data.pipeline) at 128x128 and 256x256.

  python benchmarks/data_pipeline.py [--workers=0,2] [--resolutions=128,256] [--image_formats=png,jpeg]
      [--batches=30]

Prepares the bundled sample data (sample_data/: 3 clips, 4 photos of real faces) at each
resolution into --data_root once (reused afterwards), then times `--batches` batches of
`--batch_size` with the default sample-kind mix and augmentations, after a warm-up (grain worker
start-up is not counted), with the face crops stored as PNG and as JPEG (prepare_data.py
--image_format). Goal on a 2-core CPU: >= 1000 samples/s at 128, >= 400 at 256.
"""

import json
import os
import pathlib
import time

from absl import flags

from facegen_jax import entry
from facegen_jax.data import config as data_config, pipeline, prepare

FLAGS = flags.FLAGS
flags.DEFINE_string("data_root", "/tmp/facegen_bench_data", "Where the benchmark datasets are prepared.")
flags.DEFINE_list("resolutions", ["128", "256"], "Image sizes.")
flags.DEFINE_list("workers", ["0", "2"], "grain worker process counts to try.")
flags.DEFINE_list("image_formats", ["png", "jpeg"], "How the face crops are stored (prepare_data.py --image_format).")
flags.DEFINE_integer("batch_size", 32, "Samples per batch.")
flags.DEFINE_integer("batches", 30, "Timed batches.")
flags.DEFINE_integer("warmup", 3, "Untimed batches first.")
flags.DEFINE_bool("per_part", False, "Masks with one channel per part.")

SAMPLE_DATA = pathlib.Path(__file__).resolve().parent.parent / "sample_data"


def main(argv):
  del argv
  results = []
  for resolution, image_format in ((int(r), f) for r in FLAGS.resolutions for f in FLAGS.image_formats):
    out = pathlib.Path(FLAGS.data_root) / (f"r{resolution}" + ("" if image_format == "png" else f"-{image_format}"))
    options = prepare.PrepareOptions(resolution=resolution, image_format=image_format)
    summary = prepare.prepare_dataset(SAMPLE_DATA, out, options, test_fraction=0.0, progress=False)
    for workers in (int(w) for w in FLAGS.workers):
      cfg = data_config.default_data_config()
      cfg.data_dir, cfg.num_workers = str(out), workers
      it = pipeline.create_train_iterator(cfg, global_batch_size=FLAGS.batch_size, resolution=resolution,
                                          mask_per_part=FLAGS.per_part, seed=0, process_index=0, process_count=1)
      for _ in range(FLAGS.warmup):
        next(it)
      start = time.perf_counter()
      for _ in range(FLAGS.batches):
        next(it)
      rate = FLAGS.batches * FLAGS.batch_size / (time.perf_counter() - start)
      it.close()
      # The machine may be shared: the load average says how many cores others were using.
      results.append({"resolution": resolution, "image_format": image_format, "workers": workers,
                      "samples_per_s": round(rate, 1),
                      "frames_in_dataset": summary["frames"], "load_avg_1min": round(os.getloadavg()[0], 2)})
      print(f"{resolution}x{resolution}  {image_format:4s}  workers={workers}  {rate:8.1f} samples/s  "
            f"(batch {FLAGS.batch_size}, load average {os.getloadavg()[0]:.1f})", flush=True)
  print(json.dumps(results, indent=1))


if __name__ == "__main__":
  entry.run(main)
