"""experiments/evaluate.py and the protocols on real clips."""

import csv
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export
from PIL import Image

from facegen_jax.data import frames, prepare, reading
from facegen_jax.evaluation import dataset_clips, exported_nets, face_analysis, harness, protocols
from facegen_jax.evaluation import report as report_lib
from tests.conftest import REPO_ROOT

CLIPS = ("lp_d12_man__liveportrait__d12.mp4", "vr4_woman_bluebg__video_retalking__4.mp4")
# A prepared dataset (as in data_prepare_test.py, at the evaluation's 256): two people train, one is held out.
DATASET_CLIPS = ("lp_d12_man__liveportrait__d12.mp4", "lp_d3_woman__liveportrait__d3.mp4",
                 "vr4_woman_bluebg__video_retalking__4.mp4")
TEST_PERSON, TEST_VIDEO = "vr4_woman_bluebg", "vr4_woman_bluebg__video_retalking__4"
DATASET_OPTIONS = prepare.PrepareOptions(resolution=256, frame_step=3, max_frames=4, detect_every=3)
ACCEPTED = (r"\(1\) a folder of test clips.*\(2\) one video file.*"
            r"\(3\) a dataset prepared by experiments/prepare_data.py")


def _linked_clips(shared_faces, tmp_path_factory, folder_name, names):
  folder = tmp_path_factory.mktemp(folder_name)
  for name in names:
    os.symlink(shared_faces / "videos" / name, folder / name)
  return folder


@pytest.fixture(scope="module")
def videos(shared_faces, tmp_path_factory):
  return _linked_clips(shared_faces, tmp_path_factory, "videos", CLIPS)


@pytest.fixture(scope="module")
def dataset_input(shared_faces, tmp_path_factory):
  return _linked_clips(shared_faces, tmp_path_factory, "dataset_input", DATASET_CLIPS)


@pytest.fixture(scope="module")
def dataset(dataset_input, tmp_path_factory):
  """prepare_data.py's --output: 4 frames (every 3rd) of each clip; TEST_PERSON is the test split."""
  out = tmp_path_factory.mktemp("dataset")
  prepare.prepare_dataset(dataset_input, out, DATASET_OPTIONS, test_identities=[TEST_PERSON], workers=2,
                          progress=False)
  return out


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def _split_records(out, split):
  """The raw records of `split` (images undecoded) and its video table."""
  source, table, _ = reading.open_split(reading.find_builder_dir(out, 256), split)
  return [source[i] for i in range(len(source))], table


@pytest.fixture(scope="module")
def feature_nets():
  return protocols.FeatureNets(face_analysis.dlib_landmark_fn(), face_analysis.dlib_identity_net())


def test_evaluate_cli_writes_the_four_outputs(videos, tmp_path):
  out = tmp_path / "report"
  readme = tmp_path / "README.md"
  readme.write_text(f"# Title\n\n{report_lib.README_BEGIN}\nold table\n{report_lib.README_END}\n\nAfter.\n")
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, str(REPO_ROOT / "experiments" / "evaluate.py"), f"--videos={videos}", f"--output={out}",
       "--method=copy-source,landmark-warp", "--max_frames=4", f"--readme={readme}"],
      capture_output=True, text=True, env=env, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert sorted(os.listdir(out)) == ["grid.png", "metrics.json", "metrics.md", "per_video.csv"]

  report = json.loads((out / "metrics.json").read_text())
  assert report["protocol"] == "self" and report["methods"] == ["copy-source", "landmark-warp"]
  for method in ("copy-source", "landmark-warp"):
    row = report["summary"][method]
    assert row["frames"] == 2 * 3  # 4 frames per clip, the first is the source
    assert row["fid"] == "not computed" and row["lpips"] == "not computed"
    assert 0 < row["l1"] < 0.2 and 15 < row["psnr"] < 60 and 0.3 < row["ssim"] < 1
    assert 0.9 < row["csim"] <= 1.0 and row["akd_failed"] == 0
  assert report["summary"]["landmark-warp"]["akd"] < 2.0
  assert report["summary"]["landmark-warp"]["akd"] < report["summary"]["copy-source"]["akd"]

  with open(out / "per_video.csv") as f:
    rows = list(csv.DictReader(f))
  assert [(r["video"], r["method"]) for r in rows] == [
      (os.path.splitext(c)[0], m) for c in CLIPS for m in ("copy-source", "landmark-warp")]
  assert all(r["lpips"] == "not computed" for r in rows)

  table = (out / "metrics.md").read_text()
  assert "| copy-source | 6 |" in table and "| landmark-warp | 6 |" in table and "not computed" in table
  grid = Image.open(out / "grid.png")
  assert grid.size == (4 * 256, 20 + 2 * 256)  # source | driving | 2 methods; one row per clip
  assert "wrote" in proc.stdout and "self-reenactment" in proc.stderr  # the progress bar

  # --readme: the same table replaced the old block; the text around it is kept.
  text = readme.read_text()
  assert text.startswith("# Title\n\n") and text.endswith(f"{report_lib.README_END}\n\nAfter.\n")
  assert "old table" not in text and "| copy-source | 6 |" in text and "python experiments/evaluate.py" in text
  assert "- videos:" not in text  # metrics.md's absolute path stays out of a README


def test_readme_without_markers_is_left_alone(tmp_path):
  readme = tmp_path / "README.md"
  readme.write_text("no markers here\n")
  with pytest.raises(ValueError, match="markers"):
    report_lib.update_readme(str(readme), "table")
  assert readme.read_text() == "no markers here\n"


def test_a_single_video_file_is_accepted(videos):
  from facegen_jax.evaluation import clips  # pylint: disable=import-outside-toplevel
  one = str(videos / CLIPS[0])
  assert clips.list_videos(one) == [one]


def _export(fn, *shapes) -> bytes:
  return bytes(export.export(jax.jit(fn))(*shapes).serialize())


def test_cross_identity_with_supplied_fid_and_lpips_networks(videos, feature_nets, tmp_path):
  # Stand-ins with the FID / LPIPS contracts: colour statistics at 64x64 with a symbolic batch,
  # and mean |a - b| at a fixed batch of 2 (so padding and resizing are both exercised).
  b = export.symbolic_shape("b")[0]
  fid_file, lpips_file = tmp_path / "inception.jax", tmp_path / "lpips.jax"
  fid_file.write_bytes(_export(
      lambda x: jnp.concatenate([x.mean((1, 2)), x.std((1, 2))], -1),
      jax.ShapeDtypeStruct((b, 64, 64, 3), jnp.float32)))
  pair = jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.float32)
  lpips_file.write_bytes(_export(lambda x, y: jnp.abs(x - y).mean((1, 2, 3)), pair, pair))
  lpips = exported_nets.lpips_fn(str(lpips_file))
  rng = np.random.default_rng(0)
  a, c = rng.integers(0, 256, (3, 256, 256, 3), dtype=np.uint8), rng.integers(0, 256, (3, 256, 256, 3), dtype=np.uint8)
  np.testing.assert_allclose(lpips(a, c), 2 * np.abs(a / 255.0 - c / 255.0).mean((1, 2, 3)), rtol=1e-5)

  names = [os.path.splitext(c)[0] for c in CLIPS]
  pairs_csv = tmp_path / "pairs.csv"
  pairs_csv.write_text(f"source,driving\n{CLIPS[0]},{CLIPS[1]}\n{names[1]},{names[0]}\n")
  paths = harness.evaluate(str(videos), str(tmp_path / "out"), methods=["copy-source", "landmark-warp"],
                           protocol="cross", max_frames=3, pairs_csv=str(pairs_csv), motion="relative",
                           fid_weights=str(fid_file), lpips_weights=str(lpips_file), feature_nets=feature_nets,
                           progress=False)
  report = json.loads(open(paths["metrics.json"]).read())
  assert report["pairs"] == [f"{names[0]}->{names[1]}", f"{names[1]}->{names[0]}"]
  for method in ("copy-source", "landmark-warp"):
    row = report["summary"][method]
    assert row["frames"] == 2 * 3  # every driving frame is used; no ground truth
    assert "l1" not in row and "lpips" not in row  # no ground truth, no pixel metrics
    assert isinstance(row["fid"], float) and row["fid"] >= 0
  # copy-source keeps the source identity exactly; the warp keeps most of it and takes the pose.
  assert report["summary"]["copy-source"]["csim"] == pytest.approx(1.0, abs=1e-5)
  assert 0.8 < report["summary"]["landmark-warp"]["csim"] < 1.0
  assert report["summary"]["landmark-warp"]["akd"] < report["summary"]["copy-source"]["akd"]


def test_self_protocol_scores_lpips_when_supplied(videos, feature_nets, tmp_path):
  lpips_file = tmp_path / "lpips.jax"
  pair = jax.ShapeDtypeStruct((export.symbolic_shape("b")[0], 256, 256, 3), jnp.float32)
  lpips_file.write_bytes(_export(lambda x, y: jnp.abs(x - y).mean((1, 2, 3)), pair, pair))
  paths = harness.evaluate(str(videos), str(tmp_path / "out"), methods=["copy-source"], max_frames=3,
                           lpips_weights=str(lpips_file), feature_nets=feature_nets, progress=False)
  report = json.loads(open(paths["metrics.json"]).read())
  assert report["methods"] == ["copy-source", "landmark-warp"]  # baselines are always reported
  for row in report["summary"].values():
    assert row["lpips"] == pytest.approx(2 * row["l1"], rel=1e-4)
    assert row["fid"] == "not computed"


def test_bad_inputs_fail_clearly(videos, feature_nets, tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(ValueError, match="no videos"):
    harness.evaluate(str(empty), str(tmp_path / "o1"), methods=["copy-source"], feature_nets=feature_nets)
  (empty / "notes.txt").write_text("not a clip")
  with pytest.raises(ValueError, match="no videos.*no dataset prepared by.*" + ACCEPTED):
    harness.evaluate(str(empty), str(tmp_path / "o1"), methods=["copy-source"], feature_nets=feature_nets)
  with pytest.raises(FileNotFoundError, match="does not exist; .*" + ACCEPTED):
    harness.evaluate(str(tmp_path / "missing"), str(tmp_path / "o1"), methods=["copy-source"])
  with pytest.raises(ValueError, match="neither a folder of test clips, a video file nor a prepared dataset; .*"
                     + ACCEPTED):
    harness.evaluate(str(empty / "notes.txt"), str(tmp_path / "o1"), methods=["copy-source"])
  broken = tmp_path / "broken"
  broken.mkdir()
  (broken / "clip.mp4").write_bytes(b"this is not a video")
  with pytest.raises(ValueError, match="clip.mp4"):
    harness.evaluate(str(broken), str(tmp_path / "o2"), methods=["copy-source"], feature_nets=feature_nets)
  with pytest.raises(ValueError, match="needs --checkpoint"):
    harness.evaluate(str(videos), str(tmp_path / "o3"), methods=["model"], feature_nets=feature_nets)
  with pytest.raises(ValueError, match="unknown method"):
    harness.evaluate(str(videos), str(tmp_path / "o3"), methods=["fomm"], feature_nets=feature_nets)
  not_a_checkpoint = tmp_path / "ckpt"
  not_a_checkpoint.mkdir()
  try:
    from facegen_jax.inference import Reenactor  # pylint: disable=import-outside-toplevel,unused-import
    expected = (ValueError, "failed to load")
  except ImportError:
    expected = (RuntimeError, "needs facegen_jax.inference.Reenactor")
  with pytest.raises(expected[0], match=expected[1]):
    harness.evaluate(str(videos), str(tmp_path / "o4"), methods=["model"], checkpoint=str(not_a_checkpoint),
                     feature_nets=feature_nets)
  bad_pairs = tmp_path / "pairs.csv"
  bad_pairs.write_text("source,driving\nnobody.mp4,lp_d12_man__liveportrait__d12.mp4\n")
  with pytest.raises(ValueError, match="nobody"):
    harness.evaluate(str(videos), str(tmp_path / "o5"), methods=["copy-source"], protocol="cross",
                     pairs_csv=str(bad_pairs), feature_nets=feature_nets)
  not_export = tmp_path / "weights.bin"
  not_export.write_bytes(b"\x00" * 64)
  with pytest.raises(ValueError, match="not a serialized jax.export"):
    exported_nets.fid_feature_fn(str(not_export))


def test_evaluate_cli_on_a_prepared_dataset(dataset, tmp_path):
  """--videos=<prepare_data.py --output>: the test split's videos, as stored, in frame order."""
  out = tmp_path / "report"
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, str(REPO_ROOT / "experiments" / "evaluate.py"), f"--videos={dataset}", f"--output={out}",
       "--method=copy-source,landmark-warp"],
      capture_output=True, text=True, env=env, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert sorted(os.listdir(out)) == ["grid.png", "metrics.json", "metrics.md", "per_video.csv"]

  records, table = _split_records(dataset, "test")
  assert table.video_ids == (TEST_VIDEO,)
  num_records = sum(_text(r["video_id"]) == TEST_VIDEO for r in records)
  assert num_records == 4
  report = json.loads((out / "metrics.json").read_text())
  assert report["split"] == "test" and report["dataset"] == str(reading.find_builder_dir(dataset, 256))
  assert report["clips"] == [TEST_VIDEO] and report["landmarks"] == "detected on the stored crops"
  assert report["skipped"] == []
  for method in ("copy-source", "landmark-warp"):
    assert report["summary"][method]["frames"] == num_records - 1  # every record but the source is scored
    assert report["summary"][method]["akd_failed"] == 0
  assert report["summary"]["landmark-warp"]["akd"] < 2.0
  assert report["summary"]["landmark-warp"]["akd"] < report["summary"]["copy-source"]["akd"]
  with open(out / "per_video.csv") as f:
    rows = list(csv.DictReader(f))
  assert [(r["video"], r["method"], r["frames"]) for r in rows] == [
      (TEST_VIDEO, m, str(num_records - 1)) for m in ("copy-source", "landmark-warp")]
  assert "| landmark-warp | 3 |" in (out / "metrics.md").read_text()
  assert Image.open(out / "grid.png").size == (4 * 256, 20 + 256)


def test_dataset_clips_are_the_stored_frames_in_order_and_cross_pairs_two_people(dataset, feature_nets, tmp_path):
  builder_dir = reading.find_builder_dir(dataset, 256)
  for path in (dataset, dataset / "face_frames", builder_dir.parent, builder_dir):  # any level of the dataset
    assert dataset_clips.find_dataset(str(path), 256) == builder_dir
  records, table = _split_records(dataset, "train")
  clips, info = dataset_clips.list_clips(builder_dir, "train", 256, landmarks="stored")
  assert [c.name for c in clips] == list(table.video_ids) and info["split"] == "train"
  for clip in clips:
    own = sorted((r for r in records if _text(r["video_id"]) == clip.name), key=lambda r: int(r["frame_index"]))
    loaded = clip.load(feature_nets.landmark_fn, 256)
    assert len(loaded.frames) == len(own) == 4
    for frame, lm, rec in zip(loaded.frames, loaded.landmarks, own):
      np.testing.assert_array_equal(frame, frames.decode_image(rec["image"], 3))
      np.testing.assert_array_equal(lm, rec["landmarks"])
    small = clip.load(feature_nets.landmark_fn, 128, max_frames=2)  # another --resolution: resized, landmarks scaled
    assert small.frames.shape == (2, 128, 128, 3)
    np.testing.assert_allclose(small.landmarks[1], (np.asarray(own[1]["landmarks"]) + 0.5) / 2 - 0.5, atol=1e-5)

  # cross on the train split (two people), from the version folder, with the stored landmarks.
  paths = harness.evaluate(str(builder_dir), str(tmp_path / "out"), methods=["copy-source"], protocol="cross",
                           split="train", max_frames=3, dataset_landmarks="stored", feature_nets=feature_nets,
                           progress=False)
  report = json.loads(open(paths["metrics.json"]).read())
  a, b = table.video_ids
  assert sorted(report["pairs"]) == sorted([f"{a}->{b}", f"{b}->{a}"])
  assert report["landmarks"].startswith("stored")
  assert report["summary"]["landmark-warp"]["frames"] == 2 * 3
  assert report["summary"]["landmark-warp"]["akd"] < report["summary"]["copy-source"]["akd"]


def test_a_dataset_without_the_split_fails_clearly(dataset_input, dataset, feature_nets, tmp_path):
  with pytest.raises(ValueError, match="has no 'validation' split \\(it has: test, train\\).*--split"):
    harness.evaluate(str(dataset), str(tmp_path / "o1"), methods=["copy-source"], split="validation",
                     feature_nets=feature_nets)
  # Prepared with no held-out identity (from the first build's cache: no file is processed again).
  shutil.copytree(dataset / "cache", tmp_path / "all_train" / "cache")
  summary = prepare.prepare_dataset(dataset_input, tmp_path / "all_train", DATASET_OPTIONS,
                                    test_fraction=0.0, workers=1, progress=False)
  assert summary["files"]["processed_now"] == 0 and list(summary["splits"]) == ["train"]
  with pytest.raises(ValueError, match="no 'test' split \\(it has: train\\); .*--test_identities"):
    harness.evaluate(str(tmp_path / "all_train"), str(tmp_path / "o2"), methods=["copy-source"],
                     feature_nets=feature_nets)
