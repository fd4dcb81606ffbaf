"""Evaluation metrics against known values and scikit-image."""

import numpy as np
import pytest
import skimage.metrics
from PIL import Image

from facegen_jax.evaluation import face_analysis, metrics


def _random_pair(rng, shape, noise):
  a = rng.integers(0, 256, shape, dtype=np.uint8)
  b = np.clip(a.astype(int) + rng.integers(-noise, noise + 1, shape), 0, 255).astype(np.uint8)
  return a, b


@pytest.mark.parametrize("shape,noise", [((64, 64, 3), 40), ((37, 91, 3), 5), ((50, 50), 120), ((256, 256, 3), 20)])
def test_psnr_and_ssim_agree_with_scikit_image(shape, noise):
  rng = np.random.default_rng(sum(shape) + noise)
  a, b = _random_pair(rng, shape, noise)
  channel_axis = -1 if len(shape) == 3 else None
  want_ssim = skimage.metrics.structural_similarity(a, b, channel_axis=channel_axis, data_range=255)
  want_psnr = skimage.metrics.peak_signal_noise_ratio(a, b, data_range=255)
  assert metrics.ssim(a, b) == pytest.approx(want_ssim, abs=1e-9)
  assert metrics.psnr(a, b) == pytest.approx(want_psnr, abs=1e-9)
  # Float images on [0, 1] give the same numbers.
  fa, fb = a / 255.0, b / 255.0
  assert metrics.ssim(fa, fb) == pytest.approx(
      skimage.metrics.structural_similarity(fa, fb, channel_axis=channel_axis, data_range=1.0), abs=1e-9)
  assert metrics.psnr(fa, fb) == pytest.approx(want_psnr, abs=1e-9)


def test_pixel_metrics_known_values():
  rng = np.random.default_rng(0)
  a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
  assert metrics.l1(a, a) == 0.0
  assert metrics.psnr(a, a) == float("inf")
  assert metrics.ssim(a, a) == pytest.approx(1.0)
  black, white = np.zeros((16, 16, 3), np.uint8), np.full((16, 16, 3), 255, np.uint8)
  assert metrics.l1(black, white) == 1.0
  assert metrics.psnr(black, white) == 0.0
  grey = np.full((16, 16, 3), 51, np.uint8)  # 0.2 everywhere: mse 0.04 -> 13.98 dB
  assert metrics.l1(black, grey) == pytest.approx(0.2)
  assert metrics.psnr(black, grey) == pytest.approx(10 * np.log10(1 / 0.04))
  with pytest.raises(ValueError, match="same shape"):
    metrics.l1(a, a[:16])


def test_keypoint_distance_of_shifted_landmarks_is_the_shift():
  lm = np.random.default_rng(1).uniform(0, 256, (68, 2))
  assert metrics.keypoint_distance(lm, lm) == 0.0
  assert metrics.keypoint_distance(lm + [3.0, 4.0], lm) == pytest.approx(5.0)
  # At 512 px the same landmark error is half as many 256-scale pixels.
  assert metrics.keypoint_distance(lm + [3.0, 4.0], lm, resolution=512) == pytest.approx(2.5)
  scores = metrics.akd([lm + [0.0, 2.0], None, lm], [lm, lm, lm])
  assert scores == {"akd": pytest.approx(1.0), "akd_failed": 1, "akd_frames": 2}
  assert np.isnan(metrics.akd([None], [lm])["akd"])


@pytest.fixture(scope="module")
def face_photo(shared_faces):
  """A real face photo, downsized so the face spans ~150 px like an evaluation crop."""
  image = Image.open(shared_faces / "images" / "barack_obama__face_recognition__obama.jpg").convert("RGB")
  return np.asarray(image.resize((image.width * 300 // image.height, 300), Image.LANCZOS))


def test_akd_of_detected_landmarks_on_a_real_face(face_photo):
  landmark_fn = face_analysis.dlib_landmark_fn()
  lm = landmark_fn(face_photo)
  assert lm is not None and lm.shape == (68, 2)
  assert metrics.keypoint_distance(landmark_fn(face_photo), lm) == 0.0
  dx, dy = 6, 8  # shift the picture itself and detect again
  shifted = np.pad(face_photo, ((dy, 0), (dx, 0), (0, 0)), mode="edge")[:face_photo.shape[0], :face_photo.shape[1]]
  lm_shifted = landmark_fn(shifted)
  assert metrics.keypoint_distance(lm_shifted, lm) == pytest.approx(10.0, abs=0.5)
  np.testing.assert_allclose(np.mean(lm_shifted - lm, 0), [dx, dy], atol=0.5)


def test_identity_embedding_tells_people_apart(shared_faces):
  """CSIM / AED with dlib's face-recognition ResNet: two photos of one person are closer than two
  people."""
  landmark_fn, net = face_analysis.dlib_landmark_fn(upsample=0), face_analysis.dlib_identity_net()
  names = ["angelina_jolie__deepface__img10.jpg", "angelina_jolie__deepface__img6.jpg",
           "mark_zuckerberg__deepface__img14.jpg"]
  embeddings = []
  for name in names:
    image = np.asarray(Image.open(shared_faces / "images" / name).convert("RGB"))
    lm = landmark_fn(image)
    assert lm is not None, name
    embeddings.append(face_analysis.embed(net, image[None], lm[None])[0])
  same_a, same_b, other = embeddings
  assert np.linalg.norm(same_a) == pytest.approx(1.0, abs=1e-5)
  assert metrics.csim(same_a, same_b) > metrics.csim(same_a, other) + 0.1
  assert metrics.aed(same_a, same_b) < metrics.aed(same_a, other)
  assert metrics.aed_sq_l2(same_a, same_b) < metrics.aed_sq_l2(same_a, other)
  assert metrics.csim(same_a, same_a) == pytest.approx(1.0, abs=1e-6)


def test_embedding_distances_known_values():
  a = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]])
  b = np.array([[0.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
  assert metrics.csim(a, b) == pytest.approx((0.0 + 1.0) / 2)
  assert metrics.aed(a, b) == pytest.approx(((1 + 1) / 4 + 1 / 4) / 2)  # cmp.py: mean |diff| per frame
  assert metrics.aed_sq_l2(a, b) == pytest.approx((2.0 + 1.0) / 2)


def test_frechet_distance_of_known_gaussians():
  # 1-D: (m1 - m2)^2 + (s1 - s2)^2.
  assert metrics.frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0)
  # Diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2; the same Gaussians rotated
  # by one orthogonal matrix keep the distance.
  mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
  d1, d2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
  want = 5.0 + (1 + 1 + 4)
  assert metrics.frechet_distance(mu1, np.diag(d1), mu2, np.diag(d2)) == pytest.approx(want)
  q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
  got = metrics.frechet_distance(q @ mu1, q @ np.diag(d1) @ q.T, q @ mu2, q @ np.diag(d2) @ q.T)
  assert got == pytest.approx(want, rel=1e-6)
  sigma = q @ np.diag(d1) @ q.T
  assert metrics.frechet_distance(mu1, sigma, mu1, sigma) == pytest.approx(0.0, abs=1e-6)


def test_fid_from_samples_matches_the_gaussians_it_was_drawn_from():
  rng = np.random.default_rng(0)
  real = rng.normal([0.0, 0.0], [1.0, 2.0], size=(20000, 2))
  fake = rng.normal([1.0, 0.0], [1.0, 1.0], size=(20000, 2))
  got = metrics.fid(real, fake, feature_fn=lambda x: x)
  assert got == pytest.approx(1.0 + 1.0, abs=0.1)
  assert metrics.fid(real, real, feature_fn=lambda x: x) == pytest.approx(0.0, abs=1e-6)


def test_detector_adapter_takes_the_largest_face():
  class Face:  # what facegen_jax.landmarks detectors return
    def __init__(self, scale):
      self.landmarks = np.random.default_rng(0).uniform(0, 1, (68, 2)) * scale
      self.box = (0, 0, scale, scale)

  class Detector:
    def __init__(self, faces):
      self.faces = faces

    def detect(self, image):
      assert image.dtype == np.uint8 and image.shape == (8, 8, 3)
      return self.faces

  image = np.zeros((8, 8, 3), np.uint8)
  small, large = Face(10.0), Face(50.0)
  np.testing.assert_allclose(face_analysis.detector_landmark_fn(Detector([small, large, small]))(image),
                             large.landmarks, rtol=1e-6)
  assert face_analysis.detector_landmark_fn(Detector([]))(image) is None
