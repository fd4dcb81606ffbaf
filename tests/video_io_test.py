"""PyAV reading/writing keeps frame count, frame rate and the audio track; bad files fail clearly."""

import fractions

import numpy as np
import pytest

from facegen_jax.io import video as video_io

CLIP = "videos/lp_d18_d19_man__liveportrait__d18.mp4"  # 480x480, 30 fps, AAC audio


def test_roundtrip_keeps_fps_and_audio(shared_faces, tmp_path):
  src = str(shared_faces / CLIP)
  info = video_io.probe(src)
  assert (info.fps, info.width, info.height, info.has_audio) == (fractions.Fraction(30), 480, 480, True)
  frames = list(video_io.read_frames(src, max_frames=20))
  assert len(frames) == 20 and frames[0].shape == (480, 480, 3) and frames[0].dtype == np.uint8
  out = str(tmp_path / "out.mp4")
  assert video_io.write_video(out, (f[::-1] for f in frames), info.fps, audio_from=src) == 20
  written = video_io.probe(out)
  assert written.fps == info.fps and written.has_audio and written.num_frames == 20
  back = list(video_io.read_frames(out))
  assert len(back) == 20
  assert np.abs(back[5].astype(int) - frames[5][::-1]).mean() < 4  # H.264 at crf 18
  assert not list(tmp_path.glob("*.partial*"))


def test_silent_clip_and_odd_fps(shared_faces, tmp_path):
  src = str(shared_faces / "videos/vr1_man_suit__video_retalking__1.mp4")  # 22.13 fps
  info = video_io.probe(src)
  frames = list(video_io.read_frames(src, max_frames=5))
  out = str(tmp_path / "o.mp4")
  video_io.write_video(out, frames, info.fps)
  assert video_io.probe(out).fps == info.fps and not video_io.probe(out).has_audio


def test_bad_inputs(tmp_path):
  bad = tmp_path / "broken.mp4"
  bad.write_bytes(b"\x00not a video" * 100)
  with pytest.raises(ValueError, match="broken.mp4"):
    video_io.probe(str(bad))
  with pytest.raises(FileNotFoundError, match="missing.mp4"):
    list(video_io.read_frames(str(tmp_path / "missing.mp4")))
  with pytest.raises(ValueError, match="no frames"):
    video_io.write_video(str(tmp_path / "x.mp4"), [], fractions.Fraction(25))
  assert not (tmp_path / "x.mp4").exists()
