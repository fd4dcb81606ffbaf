"""The personalization batches: what a generator is fine-tuned on from one photo."""

import sys
import types

import jax
import numpy as np

from facegen_jax.data import batch as batch_lib
from facegen_jax.data.synthetic import MEAN_FACE
from facegen_jax.inference import personalize
from facegen_jax.inference.generator_model import GeneratorModel, init_generator_variables
from facegen_jax.inference.reenactor import Reenactor
from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "experiments" / "configs"))
import tiny  # noqa: E402  pylint: disable=wrong-import-position

R = 64


def _source():
  lm = ((MEAN_FACE - MEAN_FACE.mean(0)) / np.ptp(MEAN_FACE, axis=0).max() * 32 + 32).astype(np.float32)
  # A bright dot on the nose tip (landmark 30) of a dark crop: where it lands shows where the warp put the face.
  yy, xx = np.mgrid[0:R, 0:R]
  dot = np.exp(-((xx - lm[30, 0]) ** 2 + (yy - lm[30, 1]) ** 2) / (2 * 1.5**2))
  crop = np.repeat((dot * 255)[..., None], 3, -1).round().astype(np.uint8)
  return types.SimpleNamespace(crop=crop, landmarks=lm)


def _peak(image):
  y, x = np.unravel_index(np.argmax(image[..., 0].astype(np.float32)), image.shape[:2])
  return np.array([x, y], np.float32)


def _batch(make, n, group):
  """A batch of `n` samples from `make`, checked against the batch format and its loss group."""
  b = make(_source(), n, np.random.default_rng(0), per_part=False)
  batch_lib.validate_batch(b, R, 1)
  assert (b["sample_kind"] == group).all()
  return b


def test_warped_pairs_carry_the_photo_back_to_its_own_pose():
  source = _source()
  b = _batch(personalize.warped_pair_batch, 4, batch_lib.LossGroup.FIRST)
  for i in range(4):
    np.testing.assert_array_equal(b["target"][i], source.crop)  # the ground truth is the photo
    np.testing.assert_allclose(b["driving_landmarks"][i], source.landmarks)  # in its own pose
  # The first pair is the photo itself; the others are the photo warped onto perturbed landmarks,
  # with the nose where the perturbed landmarks put it.
  assert np.abs(b["source"][0].astype(int) - source.crop).max() <= 1
  moved = 0
  for i in range(1, 4):
    assert np.linalg.norm(_peak(b["source"][i]) - b["source_landmarks"][i][30]) <= 1.0
    moved += np.abs(b["source_landmarks"][i] - source.landmarks).max() > 0.5
  assert moved == 3


def test_perturbed_batch_poses_the_unmoved_photo():
  source = _source()
  b = _batch(personalize.perturbed_batch, 3, batch_lib.LossGroup.PERTURBED)
  for i in range(3):
    np.testing.assert_array_equal(b["source"][i], source.crop)
    np.testing.assert_array_equal(b["target"][i], source.crop)
  assert np.abs(b["driving_landmarks"][1:] - source.landmarks).max() > 0.5


def test_personalization_leaves_the_motion_and_batch_norm_statistics_as_trained():
  """Fine-tuning on one photo moves the texture the decoders draw, not where the warp samples the
  source, and keeps the batch-norm statistics that a batch of copies of one face would distort."""
  config = tiny.get_config()
  config.model.motion = "landmark_tps"
  model = GeneratorModel(config, init_generator_variables(config, jax.random.PRNGKey(0)))
  source = _source()
  tuned = personalize.personalize(Reenactor(model), source.crop, 2, source_landmarks=source.landmarks,
                                  batch_size=2, progress=False)
  before, after = jax.device_get(model.variables), jax.device_get(tuned.model.variables)
  same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert same(before["params"]["motion_net"], after["params"]["motion_net"])
  assert same(before["batch_stats"], after["batch_stats"])
  for learned in ("encoder", "generation_decoder", "reconstruction_decoder"):
    assert not same(before["params"][learned], after["params"][learned]), learned
