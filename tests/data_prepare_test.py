"""prepare_data on real faces from ../shared/faces: 2 clips (3 frames each) + photos, a corrupt
clip and a face-less image, at 64x64."""

import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from facegen_jax.data import batch as batch_lib
from facegen_jax.data import config as data_config, frames, pipeline, prepare, reading, tfds_builder
from facegen_jax.landmarks import masks

R = 64
OPTIONS = prepare.PrepareOptions(resolution=R, frame_step=3, max_frames=3, detect_every=3)
CLIP_D18 = "lp_d18_d19_man__liveportrait__d18.mp4"
CLIP_VR4 = "vr4_woman_bluebg__video_retalking__4.mp4"
PHOTO_D19 = "lp_d18_d19_man__liveportrait__d19.jpg"
TEST_PERSON = "vr4_woman_bluebg"


@pytest.fixture(scope="module")
def prepared(shared_faces, tmp_path_factory):
  """(input dir, output dir, summary of the first run)."""
  src = tmp_path_factory.mktemp("input")
  shutil.copy(shared_faces / "videos" / CLIP_D18, src)
  shutil.copy(shared_faces / "videos" / CLIP_VR4, src)
  shutil.copy(shared_faces / "images" / PHOTO_D19, src)
  (src / "corrupt__clip.mp4").write_bytes(np.random.default_rng(0).bytes(50_000))
  Image.new("RGB", (320, 320), (128, 140, 150)).save(src / "flat__grey.png")
  out = tmp_path_factory.mktemp("output")
  summary = prepare.prepare_dataset(src, out, OPTIONS, test_identities=[TEST_PERSON], workers=2, progress=False)
  return src, out, summary


def _records(out, split):
  source, table, resolution = reading.open_split(reading.find_builder_dir(out, R), split)
  assert resolution == R
  return [reading.decode_record(source[i]) for i in range(len(source))], table


def test_identity_from_name_prefix_or_folders(tmp_path):
  for rel in ("anne__a.mp4", "id001/vid9/00001.mp4", "bob/photo.jpg", "loose.jpg"):
    (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / rel).write_bytes(b"x")
  found = {i.rel: (i.identity, i.video_id, i.is_video) for i in prepare.find_inputs(tmp_path)}
  assert found == {"anne__a.mp4": ("anne", "anne__a", True), "id001/vid9/00001.mp4": ("id001", "id001/vid9/00001", True),
                   "bob/photo.jpg": ("bob", "bob/photo", False), "loose.jpg": (tmp_path.name, "loose", False)}


def test_split_identities_is_deterministic_and_disjoint():
  ids = [f"person{i}" for i in range(20)]
  split = tfds_builder.split_identities(ids, 0.25)
  assert split == tfds_builder.split_identities(list(reversed(ids)), 0.25)
  assert sum(s == "test" for s in split.values()) == 5
  two = tfds_builder.split_identities(["a", "b"], 0.1)
  assert sorted(two.values()) == ["test", "train"]  # at least one test identity, never all
  assert set(tfds_builder.split_identities(["a", "b"], 0.0).values()) == {"train"}


def test_dataset_builds_and_splits_by_identity(prepared):
  _, out, summary = prepared
  assert summary["files"]["found"] == 5 and summary["files"]["used"] == 3
  train, train_table = _records(out, "train")
  test, test_table = _records(out, "test")
  assert {r["identity"] for r in test} == {TEST_PERSON}
  assert {r["identity"] for r in train} == {"lp_d18_d19_man"}
  assert not {r["identity"] for r in train} & {r["identity"] for r in test}
  assert train_table.video_ids == ("lp_d18_d19_man__liveportrait__d18", "lp_d18_d19_man__liveportrait__d19")
  assert list(train_table.num_frames) == [3, 1] and list(test_table.num_frames) == [3]
  assert [r["frame_index"] for r in train] == [0, 3, 6, 0]  # every 3rd frame, at most 3; the photo
  assert summary["splits"] == {"train": {"identities": 1, "videos": 2, "frames": 4},
                               "test": {"identities": 1, "videos": 1, "frames": 3}}


def test_dataset_reads_back_exactly(prepared):
  _, out, _ = prepared
  cache = frames.FrameCache(prepare.cache_dir(out, OPTIONS))
  stored = {}
  for meta_path in cache.root.glob("*.json"):
    if json.loads(meta_path.read_text())["status"] == "ok":
      entry = cache.load(meta_path.stem)
      stored[entry.video_id] = entry
  records = _records(out, "train")[0] + _records(out, "test")[0]
  position = {}
  for rec in records:
    j = position.get(rec["video_id"], 0)
    position[rec["video_id"]] = j + 1
    entry = stored[rec["video_id"]]
    np.testing.assert_array_equal(rec["image"], frames.decode_image(entry.images[j], 3))
    np.testing.assert_array_equal(rec["mask"], frames.decode_image(entry.masks[j], 1))
    np.testing.assert_array_equal(rec["landmarks"], entry.landmarks[j])
    assert rec["frame_index"] == entry.frame_indices[j]
    # The stored masks are the renderer's masks of the stored landmarks, and the face is in the crop.
    np.testing.assert_array_equal(rec["mask"], masks.render_mask(rec["landmarks"], R))
    np.testing.assert_array_equal(rec["part_masks"], masks.render_mask(rec["landmarks"], R, per_part=True))
    assert rec["image"].shape == (R, R, 3) and rec["landmarks"].dtype == np.float32
    assert np.all((rec["landmarks"] > 0) & (rec["landmarks"] < R - 1))
  assert sum(position.values()) == 7


def test_bad_files_are_skipped_with_reasons(prepared):
  _, out, summary = prepared
  on_disk = json.loads((out / "summary.json").read_text())
  assert on_disk == summary
  reasons = {s["file"]: (s["reason"], s["detail"]) for s in summary["skipped"]}
  assert set(reasons) == {"corrupt__clip.mp4", "flat__grey.png"}
  assert reasons["corrupt__clip.mp4"][0] == frames.SKIP_UNREADABLE and "corrupt__clip.mp4" in reasons["corrupt__clip.mp4"][1]
  assert reasons["flat__grey.png"][0] == frames.SKIP_NO_FACE
  assert summary["files"]["skipped_by_reason"] == {"unreadable": 1, "no face": 1}


def test_rerun_skips_finished_work_and_a_failed_build_leaves_the_dataset(prepared, monkeypatch):
  src, out, _ = prepared
  again = prepare.prepare_dataset(src, out, OPTIONS, test_identities=[TEST_PERSON], workers=2, progress=False)
  assert again["files"]["processed_now"] == 0 and again["files"]["from_cache"] == 5
  assert not again["dataset_rebuilt"]
  # A new file is processed alone; the dataset is rebuilt. Make that build fail half-way.
  shutil.copy(src / PHOTO_D19, src / "lp_d18_d19_man__copy.jpg")
  before = sorted(os.listdir(reading.find_builder_dir(out, R)))
  calls = []

  def failing(item):
    calls.append(item)
    if len(calls) == 2:
      raise RuntimeError("disk full")
    yield from original(item)

  original = tfds_builder._examples_of  # pylint: disable=protected-access
  monkeypatch.setattr(tfds_builder, "_examples_of", failing)
  with pytest.raises(RuntimeError, match="disk full"):
    prepare.prepare_dataset(src, out, OPTIONS, test_identities=[TEST_PERSON], workers=1, progress=False)
  assert sorted(os.listdir(reading.find_builder_dir(out, R))) == before  # the old dataset is intact
  assert not [p for p in os.listdir(out) if p.startswith(".build")]  # nothing half-written left
  monkeypatch.setattr(tfds_builder, "_examples_of", original)
  third = prepare.prepare_dataset(src, out, OPTIONS, test_identities=[TEST_PERSON], workers=1, progress=False)
  assert third["files"]["processed_now"] == 0  # the new file was cached by the failed run
  assert third["dataset_rebuilt"] and third["splits"]["train"]["frames"] == 5
  (src / "lp_d18_d19_man__copy.jpg").unlink()  # leave the module's dataset as it was for later tests
  prepare.prepare_dataset(src, out, OPTIONS, test_identities=[TEST_PERSON], workers=1, progress=False)


def test_pipeline_on_real_faces(prepared):
  _, out, _ = prepared
  cfg = data_config.default_data_config()
  cfg.data_dir, cfg.num_workers = str(out), 0
  it = pipeline.create_train_iterator(cfg, global_batch_size=6, resolution=R, mask_per_part=True, seed=0,
                                      process_index=0, process_count=1)
  for _ in range(2):
    batch_lib.validate_batch(next(it), R, masks.mask_channels(True))


def test_prepare_data_cli_with_beam(prepared, tmp_path):
  """The CLI end to end on Beam's DirectRunner from an empty cache: the Beam workers process every file."""
  src, local_out, local_summary = prepared
  pytest.importorskip("apache_beam", reason="--beam needs the 'beam' extra: pip install -e .[beam]")
  out = tmp_path / "beam"
  cmd = [sys.executable, "experiments/prepare_data.py", f"--input={src}", f"--output={out}", f"--resolution={R}",
         f"--frame_step={OPTIONS.frame_step}", f"--max_frames={OPTIONS.max_frames}",
         f"--detect_every={OPTIONS.detect_every}", f"--test_identities={TEST_PERSON}", "--beam",
         "--beam_options=--runner=DirectRunner --direct_num_workers=1"]
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  run = subprocess.run(cmd, cwd=repo, check=False, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  summary = json.loads((out / "summary.json").read_text())
  assert summary["files"]["processed_now"] == 5 and summary["files"]["from_cache"] == 0
  # Every input file is either used (its frames are in the dataset) or skipped with its reason.
  assert summary["files"]["found"] == summary["files"]["used"] + summary["files"]["skipped"] == 5
  assert {s["file"]: s["reason"] for s in summary["skipped"]} == {"corrupt__clip.mp4": frames.SKIP_UNREADABLE,
                                                                  "flat__grey.png": frames.SKIP_NO_FACE}
  assert summary["splits"] == local_summary["splits"] and summary["notes"] == local_summary["notes"]
  assert not (prepare.cache_dir(out, OPTIONS) / "errors").exists()
  beam_records = _records(out, "train")[0] + _records(out, "test")[0]
  local_records = _records(local_out, "train")[0] + _records(local_out, "test")[0]
  assert {r["source"] for r in beam_records} == {CLIP_D18, CLIP_VR4, PHOTO_D19}
  assert len(beam_records) == len(local_records) == 7
  for a, b in zip(beam_records, local_records):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["landmarks"], b["landmarks"])
  assert "skipped corrupt__clip.mp4: unreadable" in run.stderr and "skipped flat__grey.png: no face" in run.stderr


def test_beam_worker_errors_are_in_the_summary_and_retried(shared_faces, tmp_path, monkeypatch):
  """An unexpected error on a Beam worker: listed as skipped with its message, not cached, retried next run."""
  pytest.importorskip("apache_beam", reason="--beam needs the 'beam' extra: pip install -e .[beam]")
  from facegen_jax.data import extract  # pylint: disable=import-outside-toplevel
  src, out = tmp_path / "input", tmp_path / "output"
  src.mkdir()
  shutil.copy(shared_faces / "images" / PHOTO_D19, src)
  shutil.copy(shared_faces / "images" / PHOTO_D19, src / "lp_d18_d19_man__broken.jpg")
  original = extract.prepare_file

  def failing(inp, options):
    if "broken" in inp.rel:
      raise RuntimeError("boom")
    return original(inp, options)

  monkeypatch.setattr(extract, "prepare_file", failing)
  beam_options = ["--runner=DirectRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory"]
  kwargs = dict(beam=True, beam_options=beam_options, progress=False)
  first = prepare.prepare_dataset(src, out, OPTIONS, **kwargs)
  assert first["files"]["found"] == 2 and first["files"]["used"] == 1 and first["frames"] == 1
  assert first["skipped"] == [{"file": "lp_d18_d19_man__broken.jpg", "reason": prepare.SKIP_ERROR,
                               "detail": "RuntimeError: boom"}]
  assert first["files"]["skipped_by_reason"] == {prepare.SKIP_ERROR: 1}
  assert not (prepare.cache_dir(out, OPTIONS) / "errors").exists()  # the error records were read and deleted
  monkeypatch.setattr(extract, "prepare_file", original)
  second = prepare.prepare_dataset(src, out, OPTIONS, **kwargs)
  assert second["files"]["from_cache"] == 1 and second["files"]["processed_now"] == 1
  assert second["files"]["used"] == 2 and second["skipped"] == [] and second["frames"] == 2
  # A file whose worker left neither a cache entry nor an error record (e.g. it was killed) is listed too.
  lost = prepare.InputFile(path=str(src / "gone.jpg"), rel="gone.jpg", identity="x", video_id="gone", is_video=False)
  empty_cache = frames.FrameCache(tmp_path / "empty_cache")
  metas = prepare._beam_results([lost], {"gone.jpg": "gone-0"}, empty_cache)  # pylint: disable=protected-access
  assert metas == {"gone-0": {"status": "skipped", "source": "gone.jpg", "identity": "x",
                              "reason": prepare.SKIP_ERROR, "detail": prepare.BEAM_LOST_DETAIL}}


def test_notes_are_logged_one_line_per_file_capped(caplog):
  notes = [{"file": f"f{i:02d}.mp4", "note": "up to 2 faces in a frame; tracked the largest"} for i in range(23)]
  notes.insert(1, {"file": "f00.mp4", "note": "1 of 3 sampled frames without a face dropped"})
  summary = {"skipped": [{"file": "bad.mp4", "reason": "unreadable", "detail": "cannot decode"}], "notes": notes}
  with caplog.at_level(logging.INFO):
    prepare.log_skipped_and_notes(summary, "/out/summary.json", max_files=20)
  lines = [r.getMessage() for r in caplog.records]
  assert lines[0] == "skipped bad.mp4: unreadable (cannot decode)"
  assert lines[1] == ("note on f00.mp4: up to 2 faces in a frame; tracked the largest; "
                      "1 of 3 sampled frames without a face dropped")
  assert lines[2:21] == [f"note on f{i:02d}.mp4: up to 2 faces in a frame; tracked the largest" for i in range(1, 20)]
  assert lines[21:] == ["... and 3 more files with notes, see /out/summary.json"]


def test_jpeg_crops_decode_close_to_the_png_ones(prepared, tmp_path):
  src, out, _ = prepared
  jpeg_options = prepare.PrepareOptions(**{**OPTIONS.__dict__, "image_format": "jpeg"})
  assert prepare.cache_dir(out, jpeg_options) != prepare.cache_dir(out, OPTIONS)
  prepare.prepare_dataset(src, tmp_path, jpeg_options, test_identities=[TEST_PERSON], workers=1, progress=False)
  png_records, _ = _records(out, "train")
  jpeg_records, table = _records(tmp_path, "train")
  assert table.video_ids == ("lp_d18_d19_man__liveportrait__d18", "lp_d18_d19_man__liveportrait__d19")
  raw, _, _ = reading.open_split(reading.find_builder_dir(tmp_path, R), "train")
  assert bytes(raw[0]["image"][:3]) == b"\xff\xd8\xff"  # JPEG bytes in the shards
  for a, b in zip(png_records, jpeg_records):
    np.testing.assert_array_equal(a["mask"], b["mask"])  # masks stay exact PNG
    np.testing.assert_array_equal(a["landmarks"], b["landmarks"])
    assert np.abs(a["image"].astype(int) - b["image"]).mean() < 2.0  # quality 95, 4:4:4
  with pytest.raises(ValueError, match="image_format must be one of"):
    prepare.PrepareOptions(image_format="webp")
