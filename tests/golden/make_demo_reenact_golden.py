"""Writes tests/golden/demo_reenact.npz: the shipped motion-free demo weights reenacting the bundled
photo with the bundled clip (face crops, relative motion, no blend, no paste-back), every 30th frame.

    .venv/bin/python tests/golden/make_demo_reenact_golden.py

tests/shipped_weights_test.py checks the same frames within 1/255, so a refactor that changes what
the model computes is caught.
"""

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WEIGHTS = os.path.join(ROOT, "weights", "demo_128_spec")
SOURCE = os.path.join(ROOT, "sample_data", "jianzhu_guo__3ddfa_v2__JianzhuGuo.jpg")
DRIVING = os.path.join(ROOT, "sample_data", "lp_d12_man__liveportrait__d12.mp4")
EVERY = 30


def reenact_frames(weights: str = WEIGHTS) -> np.ndarray:
  """Every EVERY-th output crop `[T, R, R, 3]` uint8."""
  sys.path.insert(0, ROOT)
  from facegen_jax.inference import Reenactor  # pylint: disable=import-outside-toplevel
  from facegen_jax.landmarks import load_image  # pylint: disable=import-outside-toplevel
  from facegen_jax.landmarks.video import track_video  # pylint: disable=import-outside-toplevel
  from facegen_jax.inference.reenactor import fill_missing  # pylint: disable=import-outside-toplevel
  r = Reenactor.from_checkpoint(weights)
  source = r.prepare_source(load_image(SOURCE))
  track = track_video(DRIVING, None, progress=False)
  landmarks = fill_missing(track.landmarks, track.found)
  frames = list(r.reenact_frames(source, landmarks, track.found, paste_back=False, progress=False))
  return np.stack(frames[::EVERY])


if __name__ == "__main__":
  weights = sys.argv[1] if len(sys.argv) > 1 else WEIGHTS
  out = reenact_frames(weights)
  np.savez_compressed(os.path.join(HERE, "demo_reenact.npz"), frames=out)
  print(f"wrote {out.shape} frames to {HERE}/demo_reenact.npz")
