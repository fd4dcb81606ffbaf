"""End-to-end reenactment speed at 256x256: frames/s and time per stage.

  python benchmarks/reenact.py [--checkpoint=DIR] [--frames=60]

Without --checkpoint the generator is the default config's (256x256) with freshly initialised
weights: the speed is the same as a trained one's. Stages, each timed alone over the same frames:
decode (PyAV), landmarks (detect every 5th frame + tracking + smoothing), generate (jitted
generator, batches of 8, compile excluded), blend (landmarks of the output + the detail
post-process of docs/method.md), paste-back, encode (H.264 + audio copy). Then the whole `Reenactor.reenact_video` call end to end.
"""

import os
import sys
import tempfile
import time

import jax
import numpy as np
from absl import flags

from facegen_jax import entry

flags.DEFINE_string("checkpoint", None, "Workdir or export; default: untrained default-config generator.")
flags.DEFINE_string("source", "sample_data/jianzhu_guo__3ddfa_v2__JianzhuGuo.jpg", "Source photo.")
flags.DEFINE_string("driving", "sample_data/lp_d12_man__liveportrait__d12.mp4", "Driving clip.")
flags.DEFINE_integer("frames", 60, "Driving frames to use.")
FLAGS = flags.FLAGS


def _model():
  from facegen_jax.inference.generator_model import GeneratorModel, init_generator_variables  # pylint: disable=import-outside-toplevel
  if FLAGS.checkpoint:
    return GeneratorModel.load(FLAGS.checkpoint)
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "experiments", "configs"))
  import default  # pylint: disable=import-outside-toplevel
  config = default.get_config()
  return GeneratorModel(config, init_generator_variables(config, jax.random.PRNGKey(0)))


def _timed(fn):
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


def main(argv):
  del argv
  from facegen_jax.inference import paste_back  # pylint: disable=import-outside-toplevel
  from facegen_jax.io import video as video_io  # pylint: disable=import-outside-toplevel
  from facegen_jax.inference.reenactor import Reenactor, fill_missing  # pylint: disable=import-outside-toplevel
  from facegen_jax.landmarks import load_image  # pylint: disable=import-outside-toplevel
  from facegen_jax.landmarks.video import track_frames  # pylint: disable=import-outside-toplevel

  reenactor = Reenactor(_model())
  r = reenactor.resolution
  source = reenactor.prepare_source(load_image(FLAGS.source))
  info = video_io.probe(FLAGS.driving)
  n = FLAGS.frames
  frames, t_decode = _timed(lambda: list(video_io.read_frames(FLAGS.driving, n)))
  n = len(frames)
  track, t_landmarks = _timed(lambda: track_frames(frames, fps=float(info.fps), detect_every=5))
  lms = reenactor.transfer_motion(source, fill_missing(track.landmarks, track.found), track.found, "relative")
  reenactor.generate(np.repeat(source.crop[None], 8, 0), source.landmarks, lms[:8])  # compile

  def generate():
    return np.concatenate([reenactor.generate(np.repeat(source.crop[None], len(lms[i:i + 8]), 0), source.landmarks, lms[i:i + 8])
                           for i in range(0, n, 8)])

  faces, t_generate = _timed(generate)
  blended, t_blend = _timed(lambda: [reenactor._finish(source, f, l, blend=True, paste_back=False)  # pylint: disable=protected-access
                                     for f, l in zip(faces, lms)])  # the output's landmarks + the detail blend
  pasted, t_paste = _timed(lambda: [paste_back.paste_back(source.image, f, source.transform.box) for f in blended])
  with tempfile.TemporaryDirectory() as tmp:
    _, t_encode = _timed(lambda: video_io.write_video(os.path.join(tmp, "o.mp4"), pasted, info.fps,
                                                      audio_from=FLAGS.driving))
    report, t_total = _timed(lambda: reenactor.reenact_video(
        load_image(FLAGS.source), FLAGS.driving, os.path.join(tmp, "e2e.mp4"), blend=True, max_frames=n,
        progress=False))
  stages = [("decode", t_decode), ("landmarks", t_landmarks), ("generate", t_generate), ("blend", t_blend),
            ("paste-back", t_paste), ("encode", t_encode)]
  print(f"reenactment at {r}x{r}: {n} frames of {FLAGS.driving} ({info.width}x{info.height}), source "
        f"{source.image.shape[1]}x{source.image.shape[0]}")
  print("| stage | ms/frame | share |")
  print("|---|---|---|")
  total = sum(t for _, t in stages)
  for name, t in stages:
    print(f"| {name} | {1000 * t / n:.1f} | {100 * t / total:.0f}% |")
  print(f"| sum of stages | {1000 * total / n:.1f} | 100% |")
  print(f"end to end (reenact_video, blend on, incl. source detection and crop): {report.frames / t_total:.2f} "
        f"frames/s ({1000 * t_total / report.frames:.0f} ms/frame)")


if __name__ == "__main__":
  entry.run(main)
