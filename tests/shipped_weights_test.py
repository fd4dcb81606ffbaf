"""The shipped demo weights (weights/demo_128): they are what the recipe says, they load, and they
reenact a bundled frame like a trained model (not like noise or an untrained net).

Runs from the repository alone (sample_data/), without ../shared.
"""

import json
import sys

import numpy as np
import pytest

from facegen_jax.inference import Reenactor
from facegen_jax.io import images
from facegen_jax.io import video as video_io
from facegen_jax.inference.generator_model import EXPORT_FILE, GeneratorModel
from facegen_jax.landmarks import load_image
from facegen_jax.landmarks.detectors import create_detector
from facegen_jax.landmarks.masks import render_mask
from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "experiments" / "configs"))
import faces  # noqa: E402  pylint: disable=wrong-import-position

WEIGHTS = REPO_ROOT / "weights" / "demo_128"
SOURCE = REPO_ROOT / "sample_data" / "barack_obama__face_recognition__obama.jpg"  # held out of training
DRIVING = REPO_ROOT / "sample_data" / "lp_d12_man__liveportrait__d12.mp4"  # held out of training
# Calibrated on this model (a face driven by the first frames of the clip: landmarks about 1.1 px
# off, of 128; the source through the reconstruction decoder at L1 0.055). Its output starts from
# the warped source, so even an untrained generator of the same config finds a face and
# reconstructs the source in its own pose (L1 0.009): the reconstruction decoder is what tells the
# trained model from it (untrained: L1 0.19).
AKD_PIXELS = 3.0
SELF_L1 = 0.03
RECONSTRUCTION_L1 = 0.08
RECIPE_KEYS = ("resolution", "mask_per_part", "global_batch_size", "num_train_steps", "seed", "model",
               "discriminator", "loss", "optimizer")


@pytest.fixture(scope="module")
def reenactor():
  return Reenactor.from_checkpoint(str(WEIGHTS))


def test_weights_are_small_and_come_from_the_faces_config():
  assert (WEIGHTS / EXPORT_FILE).stat().st_size <= 20 * 2**20
  shipped = json.loads((WEIGHTS / "config.json").read_text())
  recipe = json.loads(faces.get_config().to_json_best_effort())
  for key in RECIPE_KEYS:
    assert shipped[key] == recipe[key], f"weights/demo_128 was trained with another {key}: retrain or fix faces.py"
  info = json.loads((WEIGHTS / "export.json").read_text())
  assert info == {"step": recipe["num_train_steps"], "weights": "ema"}


def test_weights_reenact_a_bundled_frame(reenactor):
  model = reenactor.model
  assert isinstance(model, GeneratorModel) and model.resolution == 128
  source_image = load_image(str(SOURCE))
  driving_frame = next(video_io.read_frames(str(DRIVING), max_frames=1))
  out = reenactor.reenact_image(source_image, driving_frame, paste_back=False)
  assert out.shape == (128, 128, 3) and out.dtype == np.uint8

  # The output is a face in the driving pose: dlib finds one in it, with its landmarks where the
  # driving landmarks (moved onto the source face's box) asked for them.
  source = reenactor.prepare_source(source_image)
  detector = create_detector("dlib")
  driving = detector.detect(driving_frame)[0].landmarks
  from facegen_jax.inference.reenactor import _align_onto  # pylint: disable=import-outside-toplevel
  wanted = source.transform.apply(_align_onto(np.asarray(driving, np.float32), source.photo_landmarks))
  found = detector.detect(out)
  assert found, "no face detected in the generated image"
  error = np.linalg.norm(np.asarray(found[0].landmarks) - wanted, axis=1).mean()
  assert error < AKD_PIXELS, error


def test_weights_reconstruct_the_source_in_its_own_pose(reenactor):
  source = reenactor.prepare_source(load_image(str(SOURCE)))
  out = reenactor.reenact_face(source.crop, source.landmarks, source.landmarks)
  l1 = np.abs(out.astype(np.float32) - source.crop).mean() / 255
  assert l1 < SELF_L1, l1


def test_weights_reconstruct_the_source_through_the_reconstruction_decoder(reenactor):
  model = reenactor.model
  source = reenactor.prepare_source(load_image(str(SOURCE)))
  lm = np.asarray(source.landmarks, np.float32)[None]
  mask = render_mask(source.landmarks, model.resolution, per_part=model.mask_per_part)[None]
  out = model.generator.apply(model.variables, images.to_float_image(source.crop[None]), images.to_float_mask(mask),
                              lm, lm, train=False)
  reconstructed = np.asarray(images.to_uint8_image(out["reconstructed"]))[0]
  l1 = np.abs(reconstructed.astype(np.float32) - source.crop).mean() / 255
  assert l1 < RECONSTRUCTION_L1, l1
