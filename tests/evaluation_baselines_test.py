"""The copy-source and landmark-warp baselines on a real clip."""

import time

import numpy as np
import pytest

from facegen_jax.evaluation import baselines, clips, face_analysis, metrics

CLIP = "lp_d12_man__liveportrait__d12.mp4"  # head turns and talks within its first 40 frames


@pytest.fixture(scope="module")
def landmark_fn():
  return face_analysis.dlib_landmark_fn()


@pytest.fixture(scope="module")
def clip(shared_faces, landmark_fn):
  return clips.load_clip(str(shared_faces / "videos" / CLIP), landmark_fn, resolution=256, max_frames=40)


def test_clip_is_cropped_with_one_box_at_the_resolution(clip):
  assert clip.frames.shape == (40, 256, 256, 3) and clip.frames.dtype == np.uint8
  assert all(lm is not None for lm in clip.landmarks)
  points = np.stack(clip.landmarks)
  assert points.min() > 0 and points.max() < 256  # the whole face is inside every crop
  # The face fills a good part of the crop (its jaw spans 70-200 of the 256 px).
  assert 70 < np.ptp(points[0, :, 0]) < 200


def test_landmark_warp_reproduces_the_driving_landmarks(clip, landmark_fn):
  source, source_lm = clip.frames[0], clip.landmarks[0]
  for k in (10, 25, 39):
    driving_lm = clip.landmarks[k]
    moved = metrics.keypoint_distance(source_lm, driving_lm)
    out = baselines.landmark_warp(source, source_lm, clip.frames[k], driving_lm)
    assert out.shape == source.shape and out.dtype == np.uint8
    found = landmark_fn(out)
    assert found is not None, f"no face detected on the warp to frame {k}"
    assert metrics.keypoint_distance(found, driving_lm) < 2.5, k  # dlib's noise on a warped face ~110 px wide
    if k >= 25:
      assert moved > 10.0  # the test is not trivial: the pose really changed
    # copy-source keeps the source's pose.
    copied = baselines.copy_source(source, source_lm, clip.frames[k], driving_lm)
    np.testing.assert_array_equal(copied, source)


def test_landmark_warp_with_unchanged_landmarks_is_the_identity(clip):
  source, lm = clip.frames[0], clip.landmarks[0]
  np.testing.assert_array_equal(baselines.landmark_warp(source, lm, source, lm), source)


def test_landmark_warp_moves_pixels_with_the_landmarks():
  """A shift of every landmark by (dx, dy) shifts the face region by it (the border stays)."""
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
  lm = np.stack(np.meshgrid(np.linspace(40, 88, 17), np.linspace(40, 88, 4)), -1).reshape(-1, 2)[:68]
  out = baselines.landmark_warp(image, lm, image, lm + [5.0, 3.0])
  np.testing.assert_array_equal(out[50:80, 50:80], image[47:77, 45:75])
  np.testing.assert_array_equal(out[:3, :3], image[:3, :3])


def test_landmark_warp_takes_well_under_a_second(clip):
  source, source_lm = clip.frames[0], clip.landmarks[0]
  start = time.perf_counter()
  for k in range(1, 11):
    baselines.landmark_warp(source, source_lm, clip.frames[k], clip.landmarks[k])
  per_frame = (time.perf_counter() - start) / 10
  assert per_frame < 0.25, per_frame
