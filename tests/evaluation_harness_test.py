"""experiments/evaluate.py and the protocols on real clips."""

import csv
import fractions
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
from facegen_jax.evaluation import clips as clips_lib, dataset_clips, exported_nets, face_analysis, harness, protocols
from facegen_jax.evaluation import report as report_lib
from facegen_jax.inference.generator_model import GeneratorModel, init_generator_variables
from facegen_jax.io import video as video_io
from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "experiments" / "configs"))
import tiny  # noqa: E402  pylint: disable=wrong-import-position

CLIPS = ("lp_d12_man__liveportrait__d12.mp4", "vr4_woman_bluebg__video_retalking__4.mp4")
# A prepared dataset (as in data_prepare_test.py, at the evaluation's 256): two people train, one is held out.
DATASET_CLIPS = ("lp_d12_man__liveportrait__d12.mp4", "lp_d3_woman__liveportrait__d3.mp4",
                 "vr4_woman_bluebg__video_retalking__4.mp4")
TEST_PERSON, TEST_VIDEO = "vr4_woman_bluebg", "vr4_woman_bluebg__video_retalking__4"
DATASET_OPTIONS = prepare.PrepareOptions(resolution=256, frame_step=3, max_frames=4, detect_every=3)
ACCEPTED = (r"\(1\) a folder of test clips.*\(2\) one video file.*"
            r"\(3\) a dataset prepared by experiments/prepare_data.py")
# A photo of another person than CLIPS' two, to drive as a cross-identity source.
PHOTO = "images/aflw_woman__face_alignment__aflw-test.jpg"
TUNED = "model + personalization (2 steps)"


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


def _between(text: str, begin: str, end: str) -> str:
  return text[text.index(begin):text.index(end)]


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def _split_records(out, split):
  """The raw records of `split` (images undecoded) and its video table."""
  source, table, _ = reading.open_split(reading.find_builder_dir(out, 256), split)
  return [source[i] for i in range(len(source))], table


@pytest.fixture(scope="module")
def feature_nets():
  return protocols.FeatureNets(face_analysis.dlib_landmark_fn(), face_analysis.dlib_identity_net())


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
  """An export of the tiny config's untrained generator (64 px): a model to evaluate and fine-tune."""
  path = tmp_path_factory.mktemp("tiny_model")
  config = tiny.get_config()
  GeneratorModel(config, init_generator_variables(config, jax.random.PRNGKey(0))).export(str(path))
  return path


def test_evaluate_cli_writes_the_four_outputs(videos, shared_faces, tmp_path):
  out = tmp_path / "report"
  readme = tmp_path / "README.md"
  readme.write_text(f"# Title\n\n{report_lib.README_BEGIN}\nold table\n{report_lib.README_END}\n\nAfter.\n\n"
                    f"{report_lib.CROSS_README_BEGIN}\nold cross table\n{report_lib.CROSS_README_END}\n")
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
  assert "| copy-source | 6 | 0 |" in table and "| landmark-warp | 6 | 0 |" in table and "not computed" in table
  grid = Image.open(out / "grid.png")
  assert grid.size == (4 * 256, 20 + 2 * 256)  # source | driving | 2 methods; one row per clip
  assert "wrote" in proc.stdout and "self-reenactment" in proc.stderr  # the progress bar

  # --readme: the same table replaced the old block; the text around it is kept.
  text = readme.read_text()
  assert text.startswith("# Title\n\n") and text.endswith(f"{report_lib.CROSS_README_END}\n")
  assert "old table" not in text and "| copy-source | 6 | 0 |" in text and "python experiments/evaluate.py" in text
  assert "- videos:" not in text  # metrics.md's absolute path stays out of a README
  assert "old cross table" in text  # a self run leaves the cross table alone

  # A cross run (a photo source, relative motion) writes its own table into the same README.
  cross = subprocess.run(
      [sys.executable, str(REPO_ROOT / "experiments" / "evaluate.py"), f"--videos={videos / CLIPS[0]}",
       f"--output={tmp_path / 'cross'}", "--protocol=cross", f"--sources={shared_faces / PHOTO}",
       "--method=copy-source", "--motion=relative", "--max_frames=2", "--resolution=128", f"--readme={readme}"],
      capture_output=True, text=True, env=env, timeout=300, check=False)
  assert cross.returncode == 0, cross.stderr[-3000:]
  both = readme.read_text()
  self_markers, cross_markers = report_lib.readme_markers("self"), report_lib.readme_markers("cross")
  assert _between(both, *self_markers) == _between(text, *self_markers) and both.count(self_markers[0]) == 1
  cross_block = _between(both, *cross_markers)
  assert "old cross table" not in both and "**cross-reenactment at 128x128**" in cross_block
  photo, clip = os.path.basename(PHOTO), os.path.splitext(CLIPS[0])[0]
  assert f"- pairs: ['{photo}->{clip}']" in cross_block
  assert "| landmark-warp | 2 | 0 |" in cross_block
  assert both.endswith(f"{report_lib.CROSS_README_END}\n")


def test_readme_without_markers_is_left_alone(tmp_path):
  readme = tmp_path / "README.md"
  readme.write_text("no markers here\n")
  with pytest.raises(ValueError, match="markers"):
    report_lib.update_readme(str(readme), "table")
  assert readme.read_text() == "no markers here\n"
  # A cross table has its own markers: a file with only the self ones is left alone too.
  only_self = f"{report_lib.README_BEGIN}\nself table\n{report_lib.README_END}\n"
  readme.write_text(only_self)
  with pytest.raises(ValueError, match="cross table: begin.*cross-reenactment table"):
    report_lib.update_readme(str(readme), "table", protocol="cross")
  assert readme.read_text() == only_self


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
  with pytest.raises(FileNotFoundError, match="--sources=.*nobody.jpg does not exist"):
    harness.evaluate(str(videos), str(tmp_path / "o6"), methods=["copy-source"], protocol="cross",
                     sources=[str(tmp_path / "nobody.jpg")], feature_nets=feature_nets)
  with pytest.raises(ValueError, match="leave out --pairs"):
    harness.evaluate(str(videos), str(tmp_path / "o6"), methods=["copy-source"], protocol="cross",
                     sources=[str(videos)], pairs_csv=str(bad_pairs), feature_nets=feature_nets)
  with pytest.raises(ValueError, match="fine-tunes the model: add --method=model"):
    harness.evaluate(str(videos), str(tmp_path / "o6"), methods=["copy-source"], finetune_steps=2,
                     feature_nets=feature_nets)
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


def test_personalization_is_its_own_row_with_its_time(videos, shared_faces, feature_nets, tiny_model, tmp_path):
  paths = harness.evaluate(str(videos / CLIPS[0]), str(tmp_path / "out"), methods=["model"],
                           checkpoint=str(tiny_model), max_frames=3, resolution=128, finetune_steps=2,
                           feature_nets=feature_nets, progress=False)
  report = json.loads(open(paths["metrics.json"]).read())
  assert report["methods"] == ["model", TUNED, "copy-source", "landmark-warp"]
  tuned = report["summary"][TUNED]
  assert tuned["frames"] == 2 and tuned["frames_without_face"] == 0
  for key in ("l1", "psnr", "ssim", "aed", "csim", "personalization_seconds"):
    assert np.isfinite(tuned[key]), key
  assert tuned["personalization_seconds"] > 0 and "personalization_seconds" not in report["summary"]["model"]
  rows = {r["method"]: r for r in report["per_video"]}
  assert rows[TUNED]["personalization_seconds"] == tuned["personalization_seconds"]  # one clip: its mean
  assert "personalization_seconds" not in rows["model"]
  assert tuned["l1"] != report["summary"]["model"]["l1"]  # the fine-tuned weights drew the row
  with open(paths["per_video.csv"]) as f:
    csv_rows = {r["method"]: r for r in csv.DictReader(f)}
  assert float(csv_rows[TUNED]["personalization_seconds"]) > 0 and csv_rows["model"]["personalization_seconds"] == ""
  assert report["personalization"].startswith("2 steps on each clip's source frame alone, mean ")
  assert f"| {TUNED} | 2 | 0 |" in open(paths["metrics.md"]).read()

  # Cross-identity: fine-tuned on each pair's source (here a photo).
  paths = harness.evaluate(str(videos / CLIPS[0]), str(tmp_path / "cross"), methods=["model"], protocol="cross",
                           sources=[str(shared_faces / PHOTO)], checkpoint=str(tiny_model), max_frames=2,
                           resolution=128, finetune_steps=1, feature_nets=feature_nets, progress=False)
  report = json.loads(open(paths["metrics.json"]).read())
  row = report["summary"]["model + personalization (1 step)"]
  assert row["frames"] == 2 and np.isfinite(row["csim"]) and row["personalization_seconds"] > 0
  assert report["personalization"].startswith("1 step on each pair's source frame alone, mean ")

  # Each source starts from the checkpoint: fine-tuning leaves the loaded model as it was.
  reenactor = protocols.load_reenactor(str(tiny_model))
  before = jax.tree.map(np.asarray, jax.device_get(reenactor.model.variables))
  clip = clips_lib.load_clip(str(videos / CLIPS[0]), feature_nets.landmark_fn, 128, max_frames=1)
  method = protocols.Personalized(reenactor, 1).for_source(clip.frames[0], clip.landmarks[0])
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(reenactor.model.variables))):
    np.testing.assert_array_equal(a, b)
  plain = protocols.reenactor_method(reenactor)
  args = (clip.frames[0], clip.landmarks[0], clip.frames[0], clip.landmarks[0])
  assert not np.array_equal(method(*args), plain(*args))


def test_frames_without_a_face_are_counted(videos, feature_nets, tmp_path):
  clip_frames = list(video_io.read_frames(str(videos / CLIPS[0]), max_frames=4))
  clip_frames[2] = np.full_like(clip_frames[2], 128)  # no face on frame 2
  folder = tmp_path / "clips"
  video_io.write_video(str(folder / "gap__clip.mp4"), clip_frames, fractions.Fraction(25))
  paths = harness.evaluate(str(folder), str(tmp_path / "out"), methods=["copy-source"], resolution=128,
                           feature_nets=feature_nets, progress=False)
  report = json.loads(open(paths["metrics.json"]).read())
  for method in ("copy-source", "landmark-warp"):
    assert report["summary"][method]["frames"] == 2 and report["summary"][method]["frames_without_face"] == 1
  assert [(r["frames"], r["frames_without_face"]) for r in report["per_video"]] == [(2, 1), (2, 1)]
  assert report["skipped"] == ["gap__clip: frame 2 (1 of 4) shows no face"]
  with open(paths["per_video.csv"]) as f:
    assert [r["frames_without_face"] for r in csv.DictReader(f)] == ["1", "1"]
  table = open(paths["metrics.md"]).read()
  assert "| method | frames | frames_without_face |" in table and "| copy-source | 2 | 1 |" in table


def test_photo_sources_drive_clips_of_other_people(videos, shared_faces, feature_nets, tmp_path):
  """--sources: a folder of two photos and a clip; pairs of one person are left out."""
  sources = tmp_path / "sources"
  sources.mkdir()
  os.symlink(shared_faces / PHOTO, sources / os.path.basename(PHOTO))
  os.symlink(videos / CLIPS[1], sources / CLIPS[1])
  first_frame = next(video_io.read_frames(str(videos / CLIPS[0])))
  Image.fromarray(first_frame).save(sources / "lp_d12_man__still.png")  # the person of CLIPS[0]
  found = clips_lib.find_sources([str(sources)])
  assert [(c.name, c.identity) for c in found] == [
      ("aflw_woman__face_alignment__aflw-test.jpg", "aflw_woman"), ("lp_d12_man__still.png", "lp_d12_man"),
      ("vr4_woman_bluebg__video_retalking__4", "vr4_woman_bluebg")]
  photo = found[0].load(feature_nets.landmark_fn, 128)
  assert photo.frames.shape == (1, 128, 128, 3) and photo.landmarks[0].shape == (68, 2)

  paths = harness.evaluate(str(videos), str(tmp_path / "out"), methods=["copy-source"], protocol="cross",
                           sources=[str(sources)], motion="relative", max_frames=2, resolution=128,
                           feature_nets=feature_nets, progress=False)
  report = json.loads(open(paths["metrics.json"]).read())
  a, d = (os.path.splitext(c)[0] for c in CLIPS)
  photo_name = os.path.basename(PHOTO)
  assert report["pairs"] == [f"{photo_name}->{a}", f"{photo_name}->{d}", f"lp_d12_man__still.png->{d}", f"{d}->{a}"]
  assert report["same_person_pairs_left_out"] == [f"lp_d12_man__still.png->{a}", f"{d}->{d}"]
  assert [r["video"] for r in report["per_video"] if r["method"] == "copy-source"] == report["pairs"]
  summary = report["summary"]
  assert summary["copy-source"]["frames"] == 4 * 2 and summary["copy-source"]["csim"] == pytest.approx(1.0, abs=1e-5)
  # Relative motion anchored on the photo's landmarks: the warp takes the pose asked for, copy-source does not.
  assert summary["landmark-warp"]["akd"] < summary["copy-source"]["akd"]
  with pytest.raises(ValueError, match="--protocol=cross"):
    harness.evaluate(str(videos), str(tmp_path / "o"), methods=["copy-source"], sources=[str(sources)],
                     feature_nets=feature_nets)
