r"""Evaluates reenactment methods on test clips with the field's metrics.

  python experiments/evaluate.py --checkpoint=WORKDIR --videos=CLIPS_DIR|VIDEO|DATA_DIR --output=OUT \
      [--protocol=self|cross] [--method=model,copy-source,landmark-warp] [--max_frames=N] [--resolution=256] \
      [--split=test] [--dataset_landmarks=detect|stored] [--finetune_steps=N] \
      [--sources=PHOTO|CLIP|DIR,...] [--pairs=CSV | --num_pairs=N] [--motion=absolute|relative] [--readme=FILE,...]

--videos is a folder of test clips, one video file, or a dataset made by experiments/prepare_data.py
(its --output folder): then the clips are the videos of its --split (default: test, the held-out
identities), read from the stored face crops.

Every path but --readme's may be a bucket URL (gs://...; BUILD.md, "Buckets"): the report is
uploaded there, a checkpoint and the clips are read from local copies.

--protocol=self drives each clip's first face frame with the clip's own later frames. --protocol=cross
drives a source with another person's clip: with --sources, every source (a photo's face, or a clip's
first face frame; a folder gives every photo and clip in it) with every --videos clip of another
person (the person: the file name's part before "__"); else the --pairs CSV, else --num_pairs random
pairs of --videos clips.

--finetune_steps=N adds, after the model's row, the row "model + personalization (N steps)": the
--checkpoint model fine-tuned for N steps on each clip's (each pair's) source frame alone, from the
checkpoint every time, then scored like the model (--compare models are not fine-tuned). Its
fine-tuning time is reported per clip and on average.

Writes into OUT:
- metrics.json: per method, the mean over all scored frames of each metric and the frames without a
  face left out, plus per-video rows, the settings and the frames skipped;
- metrics.md: the same summary as a Markdown table (arrows say which direction is better);
- per_video.csv: one row per (clip, method);
- grid.png: one row per clip (its middle frame): source | driving | each method.
--readme=FILE,... also writes the table into each FILE between the markers of its protocol
(self: "<!-- evaluate.py table: begin ... -->" ... "<!-- evaluate.py table: end -->"; cross:
"<!-- evaluate.py cross table: begin ... -->" ... "<!-- evaluate.py cross table: end -->"), so one
README holds both tables.

Every report carries the copy-source and landmark-warp baselines beside the model: a model that
does not beat copy-source on AKD ignores the pose; one that does not beat landmark-warp on
L1/SSIM adds nothing to classical warping. FID and LPIPS read "not computed" unless
--fid_weights / --lpips_weights give serialized jax.export networks (see
facegen_jax/evaluation/exported_nets.py). Expect ~0.3 s per frame per method on one CPU core.
"""
import shlex
import sys

from absl import flags

from facegen_jax import entry
from facegen_jax.evaluation import harness, report
from facegen_jax.io import paths as paths_lib

flags.DEFINE_string("checkpoint", None, "Training workdir or export directory (needed for --method=model).")
flags.DEFINE_string("videos", None, "Folder of test clips (mp4, mov, avi, mkv, webm, m4v), one video file, or a "
                    "dataset prepared by experiments/prepare_data.py (its --output folder).")
flags.DEFINE_string("output", None, "Folder for metrics.json, metrics.md, per_video.csv and grid.png.")
flags.DEFINE_enum("protocol", "self", ["self", "cross"], "self- or cross-identity reenactment.")
flags.DEFINE_list("method", ["model", "copy-source", "landmark-warp"],
                  "Methods to evaluate; the baselines are always added.")
flags.DEFINE_integer("max_frames", None, "Read at most this many frames per clip (all if unset).")
flags.DEFINE_integer("resolution", 256, "Evaluation crop size.")
flags.DEFINE_string("split", "test", "Prepared dataset only: the split whose videos are the test clips.")
flags.DEFINE_enum("dataset_landmarks", "detect", ["detect", "stored"],
                  "Landmarks found on each crop by the evaluation's detector (AKD comparable), or prepare_data.py's "
                  "tracked ones (a dataset's stored ones; a video's, mapped into its crop; tracking error adds to AKD).")
flags.DEFINE_list("sources", [], "cross: photos and/or clips (or folders of them) whose face (a clip's first face "
                  "frame) is driven by every --videos clip of another person (the file name's part before '__'); "
                  "instead of --pairs / --num_pairs.")
flags.DEFINE_string("pairs", None, "cross without --sources: CSV with a source,driving header naming clips of "
                    "--videos (file names, or a dataset's video ids).")
flags.DEFINE_integer("num_pairs", 10, "cross without --sources or --pairs: how many random (source, driving) pairs.")
flags.DEFINE_integer("seed", 0, "cross without --sources or --pairs: seed of the random pairs.")
flags.DEFINE_enum("motion", "absolute", ["absolute", "relative"], "cross: landmarks the output must take: the "
                  "driver's, or the source's moved as the driver moves from its first face frame.")
flags.DEFINE_integer("finetune_steps", 0, "Also score the --checkpoint model fine-tuned for this many steps on each "
                     "source frame alone (one-shot personalization; the row 'model + personalization (N steps)'); "
                     "0: off.")
flags.DEFINE_string("fid_weights", None, "jax.export file of an Inception feature function (enables FID).")
flags.DEFINE_string("lpips_weights", None, "jax.export file of an LPIPS function (enables LPIPS).")
flags.DEFINE_list("compare", [], "Other models evaluated beside --checkpoint, each its own row: NAME=DIR,... "
                  "(a training workdir or export per name).")
flags.DEFINE_list("readme", [], "Also write the table into these Markdown files, between the markers "
                  "<!-- evaluate.py table: begin ... --> and <!-- evaluate.py table: end --> (--protocol=cross: "
                  "<!-- evaluate.py cross table: begin ... --> and <!-- evaluate.py cross table: end -->).")
flags.mark_flags_as_required(["videos", "output"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  paths = harness.evaluate(
      videos=FLAGS.videos, output=FLAGS.output, methods=FLAGS.method, checkpoint=FLAGS.checkpoint,
      protocol=FLAGS.protocol, resolution=FLAGS.resolution, max_frames=FLAGS.max_frames, pairs_csv=FLAGS.pairs,
      num_pairs=FLAGS.num_pairs, seed=FLAGS.seed, motion=FLAGS.motion, fid_weights=FLAGS.fid_weights,
      lpips_weights=FLAGS.lpips_weights, split=FLAGS.split, dataset_landmarks=FLAGS.dataset_landmarks,
      compare=harness.parse_compare(FLAGS.compare), finetune_steps=FLAGS.finetune_steps, sources=FLAGS.sources)
  markdown = paths_lib.as_path(paths["metrics.md"]).read_text()
  print(markdown)
  command = shlex.join(["python", "experiments/evaluate.py", *sys.argv[1:]])
  for readme in FLAGS.readme:
    print(f"updated {report.update_readme(readme, report.readme_block(markdown, command), FLAGS.protocol)}")
  print("wrote " + ", ".join(paths.values()))


if __name__ == "__main__":
  entry.run(main)
