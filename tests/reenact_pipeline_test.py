"""The bounded reenactment pipeline (Reenactor.video_frames / reenact_video, inference/stages.py):
its frames equal the one-stage-after-the-other path, the frames in flight stay within the queue
sizes, the driving clip is decoded once (side-by-side and grid included), and failures surface."""

import threading
import time

import numpy as np
import pytest

from facegen_jax.inference import Reenactor, reenactor as reenactor_lib, stages
from facegen_jax.io import video as video_io
from facegen_jax.landmarks import load_image
from facegen_jax.landmarks.video import track_video
from tests.conftest import REPO_ROOT

WEIGHTS = REPO_ROOT / "weights" / "demo_128_spec"
SOURCE = REPO_ROOT / "sample_data" / "barack_obama__face_recognition__obama.jpg"
DRIVING = str(REPO_ROOT / "sample_data" / "lp_d12_man__liveportrait__d12.mp4")


@pytest.fixture(scope="module")
def reenactor():
  return Reenactor.from_checkpoint(str(WEIGHTS))


@pytest.fixture(scope="module")
def source(reenactor):
  return reenactor.prepare_source(load_image(str(SOURCE)))


def test_pipeline_frames_equal_the_sequential_path(reenactor, source):
  n = 19  # two full batches of 8 and a partial one
  track = track_video(DRIVING, None, detect_every=5, max_frames=n)
  landmarks = reenactor_lib.fill_missing(track.landmarks, track.found)
  sequential = [reenactor_lib.side_by_side_frame([source.image, d, o]) for d, o in zip(
      video_io.read_frames(DRIVING, n), reenactor.reenact_frames(source, landmarks, track.found, progress=False))]
  clip = reenactor_lib.ClipLandmarks()
  piped = list(reenactor.video_frames(source, DRIVING, clip, side_by_side=True, max_frames=n, queue_size=2,
                                      keep_frames=[3]))
  assert len(piped) == len(sequential) == n
  for k, (a, b) in enumerate(zip(piped, sequential)):
    np.testing.assert_array_equal(a, b, err_msg=f"frame {k}")
  np.testing.assert_array_equal(clip.found, track.found)
  np.testing.assert_array_equal(clip.landmarks, track.landmarks)
  assert sorted(clip.frames) == [3]


def test_frames_in_flight_are_bounded_by_the_queues(reenactor, source, monkeypatch):
  decoded = []
  real_read = video_io.read_frames

  def counting_read(path, max_frames=None):
    for frame in real_read(path, max_frames):
      decoded.append(1)
      yield frame
  monkeypatch.setattr(reenactor_lib.video_io, "read_frames", counting_read)
  queue_size, batch_size, n = 2, 4, 40
  in_flight = []
  frames = reenactor.video_frames(source, DRIVING, reenactor_lib.ClipLandmarks(), max_frames=n, queue_size=queue_size,
                                  batch_size=batch_size, paste_back=False)
  for consumed, _ in enumerate(frames, start=1):
    time.sleep(0.01)  # a slow encoder: the stages upstream fill their queues and wait
    in_flight.append(len(decoded) - consumed)
  assert len(decoded) == n
  # 3 queues, a batch waiting and a batch generated, and one item in the hands of each stage.
  assert max(in_flight) <= 3 * queue_size + 2 * batch_size + 3 < n, max(in_flight)


def test_reenact_video_decodes_the_clip_once(reenactor, tmp_path, monkeypatch):
  opened = []
  real_read = video_io.read_frames

  def counting_read(path, max_frames=None):
    opened.append(path)
    return real_read(path, max_frames)
  monkeypatch.setattr(reenactor_lib.video_io, "read_frames", counting_read)
  out, grid = tmp_path / "out.mp4", tmp_path / "grid.png"
  report = reenactor.reenact_video(load_image(str(SOURCE)), DRIVING, str(out), side_by_side=True, max_frames=12,
                                   grid_path=str(grid), grid_frames=3, progress=False)
  assert opened == [DRIVING]
  assert report.frames == video_io.probe(str(out)).num_frames == 12 and grid.exists()


def test_a_failing_stage_raises_in_the_caller_and_stops_the_others():
  def fail_at_five(items):
    for i in items:
      if i == 5:
        raise ValueError("stage broke at 5")
      yield i

  before = threading.active_count()
  with pytest.raises(ValueError, match="stage broke at 5"):
    list(stages.pipelined(range(100), [lambda xs: (x for x in xs), fail_at_five, lambda xs: (x * 2 for x in xs)],
                          queue_size=2))
  out = stages.pipelined(range(10**6), [lambda xs: (x for x in xs)], queue_size=2)
  assert [next(out) for _ in range(3)] == [0, 1, 2]
  out.close()  # the caller stops early: the stage thread ends too
  assert threading.active_count() == before
