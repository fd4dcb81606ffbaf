"""Writes tests/golden/paste_back_faces.npz: faces the shipped demo weights generate for the bundled
photo, for tests/paste_back_test.py to paste back without running the model. The first is the
bundled photo driven by the bundled driving photo (absolute motion, as `Reenactor.reenact_image`),
the others six frames of the bundled clip (relative motion, as `Reenactor.reenact_frames`).

    .venv/bin/python tests/golden/make_paste_back_faces.py

Stored: `faces` `[7, 128, 128, 3]` uint8, `landmarks` `[7, 68, 2]` (each face's pose, crop pixels),
`source_landmarks` `[68, 2]` (the photo's face, crop pixels) and `box` (the crop box in the photo).
"""

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WEIGHTS = os.path.join(ROOT, "weights", "demo_128")
SOURCE = os.path.join(ROOT, "sample_data", "barack_obama__face_recognition__obama.jpg")
DRIVING_PHOTO = os.path.join(ROOT, "sample_data", "lp_d18_d19_man__liveportrait__d19.jpg")
DRIVING_CLIP = os.path.join(ROOT, "sample_data", "lp_d12_man__liveportrait__d12.mp4")
CLIP_FRAMES = 60  # the first 60 frames of the clip, six of them evenly spaced
OUTPUT = os.path.join(HERE, "paste_back_faces.npz")


def generate(weights: str = WEIGHTS) -> dict:
  """The arrays of paste_back_faces.npz."""
  sys.path.insert(0, ROOT)
  # pylint: disable=import-outside-toplevel
  from facegen_jax.inference import Reenactor
  from facegen_jax.inference.reenactor import _align_onto, _largest_face_landmarks, fill_missing
  from facegen_jax.landmarks import load_image
  from facegen_jax.landmarks.video import track_video
  r = Reenactor.from_checkpoint(weights)
  source = r.prepare_source(load_image(SOURCE))
  driving = _largest_face_landmarks(r.detector, load_image(DRIVING_PHOTO), DRIVING_PHOTO)
  poses = [source.transform.apply(_align_onto(driving, source.photo_landmarks))]
  track = track_video(DRIVING_CLIP, None, max_frames=CLIP_FRAMES, progress=False)
  clip = r.transfer_motion(source, fill_missing(track.landmarks, track.found), track.found, "relative")
  poses += list(clip[np.linspace(0, len(clip) - 1, 6).astype(int)])
  poses = np.stack(poses).astype(np.float32)
  faces = r.generate(np.repeat(source.crop[None], len(poses), 0), source.landmarks, poses)
  return {"faces": np.asarray(faces, np.uint8), "landmarks": poses,
          "source_landmarks": np.asarray(source.landmarks, np.float32),
          "box": np.asarray(source.transform.box, np.float64)}


if __name__ == "__main__":
  np.savez_compressed(OUTPUT, **generate(sys.argv[1] if len(sys.argv) > 1 else WEIGHTS))
  print("wrote", OUTPUT)
