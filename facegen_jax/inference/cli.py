"""`facegen-reenact` / `python experiments/reenact.py`: reenact photos with photos or videos.

One pair:
  facegen-reenact --checkpoint=weights/demo_128 --source=face.jpg --driving=clip.mp4 --output=out.mp4
Many (one progress bar; OUT/report.csv gets a line per pair; outputs that exist are kept unless
--overwrite; a bad pair is skipped with its reason; the exit status is 1 only when every pair failed):
  facegen-reenact --checkpoint=... --source_dir=photos --driving_dir=clips --output_dir=out
  facegen-reenact --checkpoint=... --source=face.jpg --driving_dir=clips --output_dir=out
  facegen-reenact --checkpoint=... --pairs=pairs.csv --source_dir=photos --driving_dir=clips --output_dir=out

The output kind follows its extension: an image (.png/.jpg) for a driving photo, a video
(.mp4/.mov/.mkv/.avi/.webm) for a driving video (same frame rate and audio as the driving clip).
"""

import os

from absl import app, flags, logging

from facegen_jax import entry
from facegen_jax.inference import batch
from facegen_jax.inference.reenactor import Reenactor
from facegen_jax.landmarks import load_image

flags.DEFINE_string("checkpoint", None, "Training workdir or export directory of the generator.")
flags.DEFINE_string("source", None, "Photo of the person to animate (with --driving_dir: against every driver).")
flags.DEFINE_string("driving", None, "Photo or video giving the pose and expression.")
flags.DEFINE_string("output", None, "Output image or video (by extension).")
flags.DEFINE_string("source_dir", None, "Batch: folder of source photos (every one against every driver, or "
                    "the folder --pairs' source column is relative to).")
flags.DEFINE_string("driving_dir", None, "Batch: folder of driving photos and videos (or the folder --pairs' "
                    "driving column is relative to).")
flags.DEFINE_string("pairs", None, "Batch: CSV with a header and columns source,driving[,output]; one pair per row.")
flags.DEFINE_string("output_dir", None, "Batch: folder of the outputs (SOURCE__DRIVING.png/.mp4) and report.csv.")
flags.DEFINE_enum("motion", "relative", ["relative", "absolute"],
                  "Video: relative (source shape + driving motion; for another person) or absolute. "
                  "A driving photo is always transferred directly (aligned onto the source face box).")
flags.DEFINE_bool("blend", False, "Detail post-process (docs/method.md): blend source detail back.")
flags.DEFINE_bool("paste_back", True, "Paste the face back into the full source photo (else the crop).")
flags.DEFINE_bool("color_match", False, "Paste-back: match the face region's colours to the source photo's.")
flags.DEFINE_bool("side_by_side", False, "Write source | driving | output.")
flags.DEFINE_integer("finetune_steps", 0, "One-shot personalization: fine-tune on the source photo first.")
flags.DEFINE_integer("max_frames", None, "Only the first N driving frames.")
flags.DEFINE_integer("detect_every", 5, "Video: run the face detector every N frames, track in between.")
flags.DEFINE_bool("smoothing", True, "Video: temporal smoothing of the driving landmarks.")
flags.DEFINE_bool("overwrite", False, "Replace existing outputs.")
flags.DEFINE_string("grid", None, "One driving video: also write a PNG of the source, a few driving frames and "
                    "their outputs.")
flags.DEFINE_integer("grid_frames", 5, "Video: how many driving frames --grid shows.")
for _name in ("paste_back", "color_match", "side_by_side", "finetune_steps", "max_frames", "detect_every",
              "grid_frames", "source_dir", "driving_dir", "output_dir"):
  flags.DEFINE_alias(_name.replace("_", "-"), _name)  # --paste-back, --side-by-side, ... also work
flags.mark_flag_as_required("checkpoint")
FLAGS = flags.FLAGS


def main(argv):
  """Runs `reenact`; a problem with the user's files (missing, unreadable, no face, an existing
  output, weights that do not fit) is one `error: ...` line and exit status 1, not a traceback."""
  try:
    reenact(argv)
  except (FileNotFoundError, FileExistsError, ValueError) as e:  # NoFaceError is a ValueError
    raise SystemExit(f"error: {e}") from e


def options() -> batch.Options:
  """The reenactment options of the flags."""
  return batch.Options(motion=FLAGS.motion, blend=FLAGS.blend, paste_back=FLAGS.paste_back,
                       color_match=FLAGS.color_match, side_by_side=FLAGS.side_by_side,
                       finetune_steps=FLAGS.finetune_steps, max_frames=FLAGS.max_frames,
                       detect_every=FLAGS.detect_every, smoothing=FLAGS.smoothing, grid_frames=FLAGS.grid_frames)


def reenact(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  if FLAGS.output_dir or FLAGS.source_dir or FLAGS.driving_dir or FLAGS.pairs:
    return reenact_batch()
  missing = [f"--{name}" for name in ("source", "driving", "output") if not FLAGS[name].value]
  if missing:
    raise app.UsageError(f"give {', '.join(missing)} (one pair), or --output_dir with --driving_dir or --pairs "
                         "(a batch)")
  try:
    driving_kind, output_kind = batch.file_kind(FLAGS.driving), batch.file_kind(FLAGS.output)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  if driving_kind != output_kind:
    raise app.UsageError(f"a driving {driving_kind} makes an output {driving_kind}: give --output a "
                         f"{'video' if driving_kind == 'video' else 'image'} extension")
  if FLAGS.grid and driving_kind != "video":
    raise app.UsageError("--grid draws driving frames over their outputs: it needs a driving video")
  if os.path.exists(FLAGS.output) and not FLAGS.overwrite:
    raise app.UsageError(f"{FLAGS.output} exists; add --overwrite to replace it")
  if driving_kind == "image" and FLAGS["motion"].present:
    logging.warning("--motion applies to driving videos (motion relative to their first frame); a driving photo "
                    "gives its pose and expression directly, aligned onto the source face box")
  source_image = load_image(FLAGS.source)
  reenactor = batch.for_source(Reenactor.from_checkpoint(FLAGS.checkpoint), source_image, options())
  result = batch.reenact_file(reenactor, source_image, FLAGS.driving, FLAGS.output, options(),
                              overwrite=FLAGS.overwrite, grid_path=FLAGS.grid)
  if result.kind == "image":
    print(f"wrote {result.output}")
    return None
  print(f"wrote {result.output}: {result.frames} frames at {result.fps:g} fps, audio "
        f"{'kept' if result.has_audio else 'none in the driving clip'}, {result.frames_without_face} frames "
        "without a face reused the last good landmarks" + (f"; picture: {result.grid}" if result.grid else ""))
  return None


def reenact_batch():
  """--source_dir / --source, --driving_dir and/or --pairs, --output_dir: every pair, one report."""
  if not FLAGS.output_dir:
    raise app.UsageError("a batch (--source_dir, --driving_dir, --pairs) writes into --output_dir; give it")
  if FLAGS.output or FLAGS.driving or FLAGS.grid:
    raise app.UsageError("--output, --driving and --grid are for one pair; a batch names its outputs in --output_dir")
  if not FLAGS.pairs and not (FLAGS.driving_dir and (FLAGS.source_dir or FLAGS.source)):
    raise app.UsageError("a batch needs --pairs, or --driving_dir with --source_dir (every photo with every "
                         "driver) or --source (one photo with every driver)")
  pairs = batch.plan_pairs(FLAGS.source_dir, FLAGS.driving_dir, FLAGS.output_dir, FLAGS.pairs, FLAGS.source)
  report = os.path.join(FLAGS.output_dir, "report.csv")
  rows = batch.run_batch(Reenactor.from_checkpoint(FLAGS.checkpoint), pairs, options(), report,
                         overwrite=FLAGS.overwrite)
  counts = {status: sum(r.status == status for r in rows) for status in ("done", "exists", "skipped")}
  print(f"{counts['done']} done, {counts['exists']} kept (they exist), {counts['skipped']} skipped; report: {report}")
  if counts["skipped"] == len(rows):
    raise SystemExit(f"error: every pair failed; the reasons are in {report}")


def run():
  """Entry point of `facegen-reenact` and experiments/reenact.py (whose --help lists this module's flags)."""
  entry.run(main, flag_modules=[__name__])
