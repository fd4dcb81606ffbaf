"""Frames per second of landmark extraction on a 512x512 clip, with and without tracking.

    python benchmarks/landmarks.py [--video=PATH] [--frames=120]

Prints, for the dlib backend (one process, one core), decoding alone and decoding + landmarks:
detection on every frame (HOG upsample 0 and 1) and detection every N frames with tracking in
between (+ One-Euro smoothing). Goal of issue 3: 30 frames/s with tracking on this 2-core machine.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from facegen_jax.io import video as video_io  # pylint: disable=wrong-import-position
from facegen_jax.landmarks import create_detector  # pylint: disable=wrong-import-position
from facegen_jax.landmarks.video import track_video  # pylint: disable=wrong-import-position

DEFAULT_VIDEO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                             "faces", "videos", "lp_d3_woman__liveportrait__d3.mp4")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--video", default=DEFAULT_VIDEO, help="a clip (default: a 512x512 shared clip)")
  parser.add_argument("--frames", type=int, default=120, help="frames to process per setting")
  args = parser.parse_args()
  info = video_io.probe(args.video)
  print(f"clip {os.path.basename(args.video)}: {info.width}x{info.height}, {info.fps} fps; "
        f"{args.frames} frames per setting")

  start = time.perf_counter()
  n = sum(1 for _ in video_io.read_frames(args.video, args.frames))
  print(f"{'decode only':42s} {n / (time.perf_counter() - start):7.1f} frames/s")

  settings = [
      ("detect every frame, upsample 1", dict(upsample=1), dict(detect_every=1, smoothing=False)),
      ("detect every frame, upsample 0", dict(upsample=0), dict(detect_every=1, smoothing=False)),
      ("detect every 10, track, smooth (upsample 1)", dict(upsample=1), dict(detect_every=10)),
      ("detect every 30, track, smooth (upsample 1)", dict(upsample=1), dict(detect_every=30)),
  ]
  for name, det_kw, track_kw in settings:
    detector = create_detector("dlib", cnn_fallback=False, **det_kw)
    start = time.perf_counter()
    out = track_video(args.video, detector, max_frames=args.frames, **track_kw)
    rate = len(out.found) / (time.perf_counter() - start)
    print(f"{name:42s} {rate:7.1f} frames/s  (found {int(out.found.sum())}/{len(out.found)}, "
          f"detector ran on {int(out.detected.sum())})")


if __name__ == "__main__":
  main()
