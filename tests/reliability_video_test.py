"""Phone videos: a clip stored sideways with a display-rotation tag is read upright everywhere.

The clip is made from a bundled one with imageio-ffmpeg's ffmpeg: the frames cropped to 480x360,
turned a quarter clockwise (stored 360x480, as a phone's sensor stores portrait video) and tagged
with `-display_rotation 90` (turn a quarter counterclockwise to display), so displayed it is the
upright 480x360 crop.
"""

import pathlib
import subprocess

import numpy as np
import pytest

from facegen_jax.io import video as video_io
from facegen_jax.landmarks import video as landmarks_video

REPO = pathlib.Path(__file__).resolve().parents[1]
CLIP = REPO / "sample_data" / "lp_d18_d19_man__liveportrait__d18.mp4"
FRAMES = 8


def _ffmpeg(*args):
  imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
  subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", *map(str, args)], check=True,
                 timeout=120)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
  """(upright clip, the same stored sideways with a display rotation)."""
  folder = tmp_path_factory.mktemp("rotation")
  upright, stored, tagged = folder / "upright.mp4", folder / "stored.mp4", folder / "tagged.mp4"
  common = ["-frames:v", FRAMES, "-c:v", "libx264", "-crf", "10", "-c:a", "copy"]
  _ffmpeg("-i", CLIP, "-vf", "crop=480:360:0:40", *common, upright)
  _ffmpeg("-i", CLIP, "-vf", "crop=480:360:0:40,transpose=clock", *common, stored)
  _ffmpeg("-display_rotation", 90, "-i", stored, "-c", "copy", tagged)
  return upright, tagged


def test_probe_reports_the_displayed_size(clips):
  upright, tagged = clips
  info = video_io.probe(str(tagged))
  assert (info.width, info.height, info.rotation) == (480, 360, 90)
  assert video_io.probe(str(upright)).rotation == 0 and info.has_audio


def test_frames_are_read_as_displayed(clips):
  upright, tagged = clips
  want = np.stack(list(video_io.read_frames(str(upright))))
  got = np.stack(list(video_io.read_frames(str(tagged))))
  assert got.shape == want.shape == (FRAMES, 360, 480, 3)
  error = np.abs(got.astype(np.int16) - want).mean()
  sideways = np.abs(np.rot90(got, 1, axes=(1, 2))[:, :360, :360].astype(np.int16) - want[:, :, :360]).mean()
  assert error < 3 < sideways, (error, sideways)


def test_landmarks_find_the_same_face_in_every_frame(clips):
  upright, tagged = clips
  want = landmarks_video.track_video(str(upright), detect_every=1, smoothing=False)
  got = landmarks_video.track_video(str(tagged), detect_every=1, smoothing=False)
  assert got.found.all() and want.found.all()
  assert got.frame_size == want.frame_size
  distance = np.abs(np.asarray(got.landmarks) - np.asarray(want.landmarks))  # pixels; both clips are lossy copies
  assert distance.mean() < 1.0 and distance.max() < 8.0, (distance.mean(), distance.max())


def test_reenactment_of_a_rotated_clip_is_upright_with_a_face_in_every_frame(clips, tmp_path):
  from facegen_jax.inference import Reenactor  # pylint: disable=import-outside-toplevel
  from facegen_jax.io.images import load_image  # pylint: disable=import-outside-toplevel
  _, tagged = clips
  reenactor = Reenactor.from_checkpoint(str(REPO / "weights" / "demo_128"))
  source = load_image(str(REPO / "sample_data" / "matt_damon__deepface__img29.jpg"))
  report = reenactor.reenact_video(source, str(tagged), str(tmp_path / "out.mp4"), side_by_side=True)
  assert report.frames == FRAMES and report.frames_without_face == 0 and report.has_audio
  out = video_io.probe(str(tmp_path / "out.mp4"))
  assert out.rotation == 0 and out.has_audio
