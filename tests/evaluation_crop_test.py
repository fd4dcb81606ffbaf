"""Evaluation frames a clip exactly as training data are framed (one crop recipe, landmarks/crop.py)."""

import numpy as np

from facegen_jax.data import extract, frames, prepare
from facegen_jax.evaluation import clips
from tests.conftest import REPO_ROOT

CLIP = REPO_ROOT / "sample_data" / "lp_d12_man__liveportrait__d12.mp4"
NUM_FRAMES = 12  # past one detect_every (10), so tracked frames are compared too


def test_the_evaluation_crop_of_a_clip_is_the_training_crop():
  # prepare_data.py's defaults (detector, detect_every, smoothing, crop_scale), every frame kept.
  options = prepare.PrepareOptions(resolution=128, frame_step=1, max_frames=NUM_FRAMES)
  inp = prepare.InputFile(path=str(CLIP), rel=CLIP.name, identity="lp_d12_man", video_id=CLIP.stem, is_video=True)
  stored = extract.prepare_file(inp, options)
  assert isinstance(stored, frames.PreparedFile), stored
  assert list(stored.frame_indices) == list(range(NUM_FRAMES))  # a face in every frame: none dropped

  def no_detection(image):
    raise AssertionError("landmarks='stored' must not detect on the crops")

  clip = clips.FileClip(str(CLIP), landmarks="stored").load(no_detection, options.resolution, NUM_FRAMES)
  assert clip.frames.shape == (NUM_FRAMES, 128, 128, 3)
  np.testing.assert_array_equal(clip.frames, np.stack([frames.decode_image(png, 3) for png in stored.images]))
  np.testing.assert_array_equal(np.stack(clip.landmarks), stored.landmarks)
