"""`facegen-reenact` / `python experiments/reenact.py`: reenact a photo with a photo or a video.

  facegen-reenact --checkpoint=workdirs/demo --source=face.jpg --driving=clip.mp4 --output=out.mp4

The output kind follows its extension: an image (.png/.jpg) for a driving photo, a video
(.mp4/.mov/.mkv/.avi/.webm) for a driving video (same frame rate and audio as the driving clip).
"""

import os

from absl import app, flags, logging
from PIL import Image

from facegen_jax import entry
from facegen_jax.inference.personalize import personalize
from facegen_jax.inference.reenactor import Reenactor, side_by_side_frame
from facegen_jax.io.video import VIDEO_EXTENSIONS
from facegen_jax.landmarks import load_image

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

flags.DEFINE_string("checkpoint", None, "Training workdir or export directory of the generator.")
flags.DEFINE_string("source", None, "Photo of the person to animate.")
flags.DEFINE_string("driving", None, "Photo or video giving the pose and expression.")
flags.DEFINE_string("output", None, "Output image or video (by extension).")
flags.DEFINE_enum("motion", "relative", ["relative", "absolute"],
                  "Video: relative (source shape + driving motion; for another person) or absolute. "
                  "A driving photo is always transferred directly (aligned onto the source face box).")
flags.DEFINE_bool("blend", False, "Detail post-process (docs/method.md): blend source detail back.")
flags.DEFINE_bool("paste_back", True, "Paste the face back into the full source photo (else the crop).")
flags.DEFINE_bool("side_by_side", False, "Write source | driving | output.")
flags.DEFINE_integer("finetune_steps", 0, "One-shot personalization: fine-tune on the source photo first.")
flags.DEFINE_integer("max_frames", None, "Only the first N driving frames.")
flags.DEFINE_integer("detect_every", 5, "Video: run the face detector every N frames, track in between.")
flags.DEFINE_bool("smoothing", True, "Video: temporal smoothing of the driving landmarks.")
flags.DEFINE_bool("overwrite", False, "Replace an existing output.")
flags.DEFINE_string("grid", None, "Video: also write a PNG of the source, a few driving frames and their outputs.")
flags.DEFINE_integer("grid_frames", 5, "Video: how many driving frames --grid shows.")
for _name in ("paste_back", "side_by_side", "finetune_steps", "max_frames", "detect_every", "grid_frames"):
  flags.DEFINE_alias(_name.replace("_", "-"), _name)  # --paste-back, --side-by-side, ... also work
flags.mark_flags_as_required(["checkpoint", "source", "driving", "output"])
FLAGS = flags.FLAGS


def _kind(path: str, what: str) -> str:
  ext = os.path.splitext(path)[1].lower()
  if ext in VIDEO_EXTENSIONS:
    return "video"
  if ext in IMAGE_EXTS:
    return "image"
  raise app.UsageError(f"--{what}={path}: unknown extension {ext!r}; images: {IMAGE_EXTS}, videos: {VIDEO_EXTENSIONS}")


def main(argv):
  """Runs `reenact`; a problem with the user's files (missing, unreadable, no face, an existing
  output, weights that do not fit) is one `error: ...` line and exit status 1, not a traceback."""
  try:
    reenact(argv)
  except (FileNotFoundError, FileExistsError, ValueError) as e:  # NoFaceError is a ValueError
    raise SystemExit(f"error: {e}") from e


def reenact(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  driving_kind, output_kind = _kind(FLAGS.driving, "driving"), _kind(FLAGS.output, "output")
  if driving_kind != output_kind:
    raise app.UsageError(f"a driving {driving_kind} makes an output {driving_kind}: give --output a "
                         f"{'video' if driving_kind == 'video' else 'image'} extension")
  if FLAGS.grid and driving_kind != "video":
    raise app.UsageError("--grid draws driving frames over their outputs: it needs a driving video")
  if os.path.exists(FLAGS.output) and not FLAGS.overwrite:
    raise app.UsageError(f"{FLAGS.output} exists; add --overwrite to replace it")
  source_image = load_image(FLAGS.source)
  reenactor = Reenactor.from_checkpoint(FLAGS.checkpoint)
  if FLAGS.finetune_steps > 0:
    reenactor = personalize(reenactor, source_image, FLAGS.finetune_steps)
  if driving_kind == "image":
    if FLAGS["motion"].present:
      logging.warning("--motion applies to driving videos (motion relative to their first frame); a driving photo "
                      "gives its pose and expression directly, aligned onto the source face box")
    driving_image = load_image(FLAGS.driving)
    out = reenactor.reenact_image(source_image, driving_image, blend=FLAGS.blend, paste_back=FLAGS.paste_back)
    if FLAGS.side_by_side:
      out = side_by_side_frame([source_image, driving_image, out])
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    tmp = FLAGS.output + ".partial" + os.path.splitext(FLAGS.output)[1]
    Image.fromarray(out).save(tmp)
    os.replace(tmp, FLAGS.output)
    print(f"wrote {FLAGS.output} ({out.shape[1]}x{out.shape[0]})")
    return
  report = reenactor.reenact_video(
      source_image, FLAGS.driving, FLAGS.output, motion=FLAGS.motion, blend=FLAGS.blend,
      paste_back=FLAGS.paste_back, side_by_side=FLAGS.side_by_side, detect_every=FLAGS.detect_every,
      smoothing=FLAGS.smoothing, max_frames=FLAGS.max_frames, overwrite=FLAGS.overwrite, grid_path=FLAGS.grid,
      grid_frames=FLAGS.grid_frames)
  print(f"wrote {report.output}: {report.frames} frames at {report.fps:g} fps, audio "
        f"{'kept' if report.has_audio else 'none in the driving clip'}, {report.frames_without_face} frames "
        "without a face reused the last good landmarks" + (f"; picture: {report.grid}" if report.grid else ""))


def run():
  """Entry point of `facegen-reenact` and experiments/reenact.py (whose --help lists this module's flags)."""
  entry.run(main, flag_modules=[__name__])
