"""The reenactment product on real faces with a small generator trained inside the test."""

import fractions
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from facegen_jax.inference import Reenactor
from facegen_jax.inference.personalize import personalize
from facegen_jax.io import video as video_io
from facegen_jax.landmarks import load_image
from facegen_jax.train import loop

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "experiments" / "configs"))
import tiny  # noqa: E402  pylint: disable=wrong-import-position

SOURCE = "images/aflw_woman__face_alignment__aflw-test.jpg"  # 450x450
SOURCE_2 = "images/jianzhu_guo__3ddfa_v2__JianzhuGuo.jpg"
DRIVING_PHOTO = "images/lp_d18_d19_man__liveportrait__d19.jpg"
DRIVING_CLIP = "videos/lp_d18_d19_man__liveportrait__d18.mp4"  # 216 frames, 30 fps, AAC


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("reenact_ckpt")
  c = tiny.get_config()
  c.num_train_steps, c.image_every_steps = 6, 0
  loop.train(c, str(workdir))
  return str(workdir)


@pytest.fixture(scope="module")
def reenactor(checkpoint):
  return Reenactor.from_checkpoint(checkpoint)


def test_image_to_image_with_paste_back(reenactor, shared_faces):
  src = load_image(str(shared_faces / SOURCE))
  drv = load_image(str(shared_faces / DRIVING_PHOTO))
  out = reenactor.reenact_image(src, drv)
  assert out.shape == src.shape and out.dtype == np.uint8
  box = reenactor.prepare_source(src).transform.box
  x0, y0, x1, y1 = (int(np.floor(box[0])), int(np.floor(box[1])), int(np.ceil(box[2])), int(np.ceil(box[3])))
  outside = np.ones(src.shape[:2], bool)
  outside[max(0, y0):y1, max(0, x0):x1] = False
  assert outside.any()
  np.testing.assert_array_equal(out[outside], src[outside])  # unchanged outside the feathered box
  inner = slice(y0 + (y1 - y0) // 3, y1 - (y1 - y0) // 3), slice(x0 + (x1 - x0) // 3, x1 - (x1 - x0) // 3)
  assert np.abs(out[inner].astype(int) - src[inner]).mean() > 1  # the face was replaced
  crop = reenactor.reenact_image(src, drv, paste_back=False)
  assert crop.shape == (64, 64, 3)


def test_batches_pair_in_order_or_one_to_many(reenactor, shared_faces):
  a, b = load_image(str(shared_faces / SOURCE)), load_image(str(shared_faces / SOURCE_2))
  d = load_image(str(shared_faces / DRIVING_PHOTO))
  outs = reenactor.reenact_pairs([a, b], [d, a])
  assert [o.shape for o in outs] == [a.shape, b.shape]
  many = reenactor.reenact_pairs([a], [d, b, a], paste_back=False)
  assert len(many) == 3
  # Each output is its own pair's, in order: equal to reenacting that pair alone.
  for out, (src, drv) in zip(outs, [(a, d), (b, a)]):
    np.testing.assert_array_equal(out, reenactor.reenact_image(src, drv))
  for out, drv in zip(many, [d, b, a]):
    np.testing.assert_array_equal(out, reenactor.reenact_image(a, drv, paste_back=False))
  assert not np.array_equal(many[0], many[1])  # different poses give different outputs
  with pytest.raises(ValueError, match="pair them in order"):
    reenactor.reenact_pairs([a, b], [d, d, d])


def test_photo_to_video_keeps_frames_fps_audio(reenactor, shared_faces, tmp_path):
  clip = str(shared_faces / DRIVING_CLIP)
  out = str(tmp_path / "out.mp4")
  src = load_image(str(shared_faces / SOURCE))
  grid = tmp_path / "figure" / "grid.png"
  report = reenactor.reenact_video(src, clip, out, progress=False, grid_path=str(grid), grid_frames=4)
  info, written = video_io.probe(clip), video_io.probe(out)
  assert report.frames == info.num_frames == written.num_frames == 216
  assert written.fps == info.fps == fractions.Fraction(30)
  assert written.has_audio and info.has_audio
  # The audio track is the driving clip's, copied: same codec, rate and channels, and it lasts as
  # long as the video (the driving clip's audio up to its last frame).
  import av  # pylint: disable=import-outside-toplevel
  with av.open(clip) as a, av.open(out) as b:
    src_audio, out_audio = a.streams.audio[0], b.streams.audio[0]
    assert (out_audio.codec_context.name, out_audio.rate, out_audio.channels) == (
        src_audio.codec_context.name, src_audio.rate, src_audio.channels)
    audio_seconds = sum(p.duration or 0 for p in b.demux(out_audio)) * float(out_audio.time_base)
  assert abs(audio_seconds - info.num_frames / float(info.fps)) < 0.1, audio_seconds
  assert (written.width, written.height) == (450, 450)
  # The picture: the source crop, then 4 driving crops over their 4 outputs (64 px model, 4 px gaps).
  assert report.grid == str(grid)
  picture = np.asarray(Image.open(grid))
  assert picture.shape == (14 + 2 * 64 + 4, 5 * 68 - 4, 3)
  outputs = picture[14 + 68:, 68:]
  assert outputs.std() > 1  # faces were drawn, not a blank canvas
  with pytest.raises(FileExistsError, match="overwrite"):
    reenactor.reenact_video(src, clip, out, progress=False)


def test_no_face_in_source_fails_clearly(reenactor, tmp_path):
  flat = np.full((200, 200, 3), 120, np.uint8)
  with pytest.raises(ValueError, match="no face found in the source image"):
    reenactor.reenact_image(flat, flat)


def test_personalization_fits_the_source(reenactor, shared_faces):
  src = load_image(str(shared_faces / SOURCE))
  face = reenactor.prepare_source(src)
  before = np.abs(reenactor.reenact_face(face.crop, face.landmarks, face.landmarks).astype(int) - face.crop).mean()
  tuned = personalize(reenactor, src, 25, learning_rate=1e-3, progress=False)
  after = np.abs(tuned.reenact_face(face.crop, face.landmarks, face.landmarks).astype(int) - face.crop).mean()
  assert after < 0.7 * before, (before, after)


def test_cli_image_and_errors(checkpoint, shared_faces, tmp_path):
  out = tmp_path / "out.png"
  cmd = [sys.executable, str(REPO / "experiments" / "reenact.py"), f"--checkpoint={checkpoint}",
         f"--source={shared_faces / SOURCE}", f"--driving={shared_faces / DRIVING_PHOTO}", f"--output={out}",
         "--side-by-side"]  # the hyphenated spelling of --side_by_side
  result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  width, height = Image.open(out).size
  assert height == 450 and width > 2 * 450  # source | driving | output
  again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
  assert again.returncode != 0 and "--overwrite" in again.stderr
  bad = tmp_path / "corrupt.jpg"
  bad.write_bytes(b"not an image")
  # The installed console script, same CLI: a bad file is one "error:" line naming it, no traceback.
  script = os.path.join(os.path.dirname(sys.executable), "facegen-reenact")
  assert os.path.exists(script), "pip install -e . installs the facegen-reenact console script"
  broken = subprocess.run([script, cmd[2], f"--source={bad}", cmd[4], f"--output={tmp_path / 'x.png'}"],
                          capture_output=True, text=True, timeout=600)
  assert broken.returncode == 1 and "error:" in broken.stderr and "corrupt.jpg" in broken.stderr, broken.stderr
  assert "Traceback" not in broken.stderr, broken.stderr
  assert not os.path.exists(tmp_path / "x.png")


def test_evaluate_model_beside_baselines(checkpoint, shared_faces, tmp_path):
  import json  # pylint: disable=import-outside-toplevel
  from facegen_jax.evaluation import face_analysis, harness, protocols  # pylint: disable=import-outside-toplevel
  videos = tmp_path / "videos"
  videos.mkdir()
  for name in ("lp_d12_man__liveportrait__d12.mp4", "vr4_woman_bluebg__video_retalking__4.mp4"):
    os.symlink(shared_faces / "videos" / name, videos / name)
  nets = protocols.FeatureNets(face_analysis.dlib_landmark_fn(), face_analysis.dlib_identity_net())
  paths = harness.evaluate(str(videos), str(tmp_path / "report"), methods=("model", "copy-source", "landmark-warp"),
                           checkpoint=checkpoint, max_frames=3, feature_nets=nets, progress=False)
  report = json.loads(open(paths["metrics.json"]).read())
  assert report["methods"] == ["model", "copy-source", "landmark-warp"]
  for method in report["methods"]:
    assert report["summary"][method]["frames"] == 4 and np.isfinite(report["summary"][method]["l1"])
  assert sorted(os.listdir(tmp_path / "report")) == ["grid.png", "metrics.json", "metrics.md", "per_video.csv"]


def test_export_round_trip(checkpoint, tmp_path):
  from facegen_jax.inference.generator_model import GeneratorModel  # pylint: disable=import-outside-toplevel
  model = GeneratorModel.load(checkpoint)
  path = model.export(str(tmp_path / "export"))
  assert sorted(os.listdir(tmp_path / "export")) == ["config.json", "export.json", "generator.msgpack"]
  loaded = GeneratorModel.load(str(tmp_path / "export"))
  assert loaded.info == model.info == {"step": 6, "weights": "ema"}
  rng = np.random.RandomState(0)
  sources = rng.randint(0, 256, (2, 64, 64, 3)).astype(np.uint8)
  masks = rng.randint(0, 256, (2, 64, 64, model.mask_channels)).astype(np.uint8)
  lms = rng.uniform(10, 50, (2, 68, 2)).astype(np.float32)
  np.testing.assert_array_equal(loaded(sources, masks, lms, lms), model(sources, masks, lms, lms))
  with open(path, "r+b") as f:  # a damaged export names itself
    f.truncate(100)
  with pytest.raises(ValueError, match="generator.msgpack"):
    GeneratorModel.load(str(tmp_path / "export"))


def _with_base_features(directory, features):
  config_path = os.path.join(directory, "config.json")
  with open(config_path) as f:
    config = json.load(f)
  config["model"]["base_features"] = features
  with open(config_path, "w") as f:
    json.dump(config, f)


def test_weights_that_do_not_match_their_config_fail_clearly(checkpoint, tmp_path):
  """An export or a workdir whose config.json describes another model size is refused with a message
  naming the file, not loaded (msgpack takes any shape) to fail later inside the generator."""
  from facegen_jax.inference.generator_model import GeneratorModel  # pylint: disable=import-outside-toplevel
  model = GeneratorModel.load(checkpoint)
  export = str(tmp_path / "export")
  model.export(export)
  _with_base_features(export, 2 * model.config.model.base_features)
  with pytest.raises(ValueError, match=r"generator\.msgpack does not match the model of the config\.json"):
    GeneratorModel.load(export)

  workdir = str(tmp_path / "workdir")
  shutil.copytree(checkpoint, workdir)
  _with_base_features(workdir, 2 * model.config.model.base_features)
  with pytest.raises(ValueError, match="does not match this config"):
    GeneratorModel.load(workdir)


def test_detail_blend_reads_the_outputs_own_landmarks(reenactor, shared_faces, monkeypatch):
  """Detail post-process (docs/method.md): mask 3 comes from landmarks of the generated face (the
  shape predictor run on it), not from the landmarks it was asked to take; the blend changes the output."""
  src, drv = load_image(str(shared_faces / SOURCE)), load_image(str(shared_faces / DRIVING_PHOTO))
  plain = reenactor.reenact_image(src, drv, paste_back=False)
  searched = []
  original = reenactor.detector.landmarks_in_box

  def spy(image, box):
    searched.append(np.array(image))
    return original(image, box)

  monkeypatch.setattr(reenactor.detector, "landmarks_in_box", spy)
  blended = reenactor.reenact_image(src, drv, paste_back=False, blend=True)
  assert blended.shape == plain.shape and blended.dtype == np.uint8
  assert any(np.array_equal(image, plain) for image in searched)  # the generated face itself
  assert not np.array_equal(blended, plain)
