"""`facegen-reenact --source_dir --driving_dir --output_dir` (facegen_jax/inference/batch.py) with
the shipped weights on the bundled photo: a folder with a good and a bad pair finishes the good
one, skips the bad one with its reason in report.csv and exits 0; a rerun keeps what exists; a
batch in which every pair fails exits 1."""

import csv
import os
import subprocess
import sys

import pytest

from facegen_jax.io import video as video_io
from tests.conftest import REPO_ROOT

WEIGHTS = REPO_ROOT / "weights" / "demo_128"
PHOTO = REPO_ROOT / "sample_data" / "barack_obama__face_recognition__obama.jpg"
CLIP = REPO_ROOT / "sample_data" / "lp_d12_man__liveportrait__d12.mp4"  # 25 fps, with audio
FRAMES = 6


def _cli(*args):
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, str(REPO_ROOT / "experiments" / "reenact.py"), f"--checkpoint={WEIGHTS}",
                         *args], capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=600, check=False)


def _report(path):
  with open(path, newline="", encoding="utf-8") as f:
    return {os.path.basename(r["source"]): r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  root = tmp_path_factory.mktemp("batch")
  sources, drivers = root / "photos", root / "clips"
  sources.mkdir()
  drivers.mkdir()
  os.symlink(PHOTO, sources / "obama.jpg")
  (sources / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a whole jpeg")
  (sources / "notes.txt").write_text("not an input: the batch passes it over")
  # A short clip of the bundled one, its audio kept, so the test reenacts a few frames only.
  video_io.write_video(str(drivers / "d12.mp4"), video_io.read_frames(str(CLIP), FRAMES),
                       video_io.probe(str(CLIP)).fps, audio_from=str(CLIP))
  return root


def test_a_bad_pair_is_skipped_and_the_rest_finishes(folders):
  out = folders / "out"
  args = (f"--source_dir={folders / 'photos'}", f"--driving_dir={folders / 'clips'}", f"--output_dir={out}")
  proc = _cli(*args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = _report(out / "report.csv")
  assert sorted(rows) == ["broken.jpg", "obama.jpg"]
  good, bad = rows["obama.jpg"], rows["broken.jpg"]
  assert good["status"] == "done" and good["output"] == str(out / "obama__d12.mp4"), good
  assert int(good["frames"]) == FRAMES and int(good["frames_without_face"]) == 0 and float(good["seconds"]) > 0
  info = video_io.probe(good["output"])
  assert info.num_frames == FRAMES and info.fps == video_io.probe(str(CLIP)).fps and info.has_audio
  assert bad["status"] == "skipped" and "broken.jpg" in bad["reason"] and not bad["frames"], bad
  assert not os.path.exists(bad["output"])
  assert proc.stderr.count("Traceback") == 0

  # A rerun keeps the finished output (status "exists") and skips the bad pair again.
  before = os.path.getmtime(good["output"])
  again = _cli(*args)
  assert again.returncode == 0, again.stderr[-3000:]
  rows = _report(out / "report.csv")
  assert rows["obama.jpg"]["status"] == "exists" and "--overwrite" in rows["obama.jpg"]["reason"]
  assert rows["broken.jpg"]["status"] == "skipped"
  assert os.path.getmtime(good["output"]) == before


def test_every_pair_failing_exits_1(folders):
  pairs = folders / "pairs.csv"
  pairs.write_text("source,driving\nphotos/broken.jpg,clips/d12.mp4\nphotos/missing.jpg,clips/d12.mp4\n")
  out = folders / "out_bad"
  proc = _cli(f"--pairs={pairs}", f"--output_dir={out}")
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "every pair failed" in proc.stderr and "Traceback" not in proc.stderr
  rows = _report(out / "report.csv")
  assert rows["broken.jpg"]["status"] == rows["missing.jpg"]["status"] == "skipped"
  assert "missing.jpg" in rows["missing.jpg"]["reason"] and "does not exist" in rows["missing.jpg"]["reason"]
