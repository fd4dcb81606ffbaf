"""Paste-back (facegen_jax/inference/paste_back.py) on the bundled photo: the face-shaped mask
leaves the photo unchanged outside the dilated landmark hull, the inverse similarity puts a rotated
crop back where it came from, and colour matching moves the face's colours to the photo's."""

import numpy as np
import pytest
from skimage import draw, transform as sk_transform
from scipy import ndimage

from facegen_jax.inference import paste_back as pb
from facegen_jax.landmarks import create_detector, crop as crop_lib, load_image
from tests.conftest import REPO_ROOT

PHOTO = REPO_ROOT / "sample_data" / "barack_obama__face_recognition__obama.jpg"


@pytest.fixture(scope="module")
def photo():
  image = load_image(PHOTO)
  faces = create_detector("dlib").detect(image)
  assert faces, f"no face in {PHOTO}"
  return image, np.asarray(faces[0].landmarks, np.float32)


def _hull_distance(hull: np.ndarray, shape) -> np.ndarray:
  """Distance of every pixel of an image of `shape` from the filled polygon `hull` (x, y)."""
  inside = np.zeros(shape[:2], bool)
  rr, cc = draw.polygon(hull[:, 1], hull[:, 0], shape[:2])
  inside[rr, cc] = True
  return ndimage.distance_transform_edt(~inside)


def test_photo_unchanged_outside_the_dilated_face_mask(photo):
  image, landmarks = photo
  crop, crop_lm, transform = crop_lib.crop_face(image, landmarks, 128)
  face = 255 - crop  # as unlike the photo as it gets: any leak outside the mask shows
  out = pb.paste_back(image, face, transform, [crop_lm])
  # The dilated hull, independently: the hull's vertices in photo pixels, grown by the mask's reach.
  hull = transform.invert(pb.face_hull([crop_lm]))
  reach = pb.mask_reach([crop_lm]) / float(np.mean(transform.scale))
  outside = _hull_distance(hull, image.shape) > reach + 1.5
  np.testing.assert_array_equal(out[outside], image[outside])
  # Face-shaped, not the square: the box's corners keep the photo, the face itself is replaced.
  x0, y0, x1, y1 = (int(round(v)) for v in transform.box)
  corner = (slice(max(y0, 0), max(y0, 0) + 10), slice(max(x0, 0), max(x0, 0) + 10))
  np.testing.assert_array_equal(out[corner], image[corner])
  weights = pb.photo_mask(image.shape, face.shape, transform, [crop_lm])
  assert weights[_hull_distance(hull, image.shape) == 0].min() > 0.99
  assert np.array_equal(out[weights == 0], image[weights == 0])
  # The square of today replaces the whole box, corners included; along its border the face-shaped
  # paste is the photo itself (the square's seam is gone), where the square paste is not.
  square = pb.paste_back(image, face, transform)
  assert not np.array_equal(square[corner], image[corner])
  square_border = pb.photo_mask(image.shape, face.shape, transform) >= 0.5
  square_border &= ~ndimage.binary_erosion(square_border, border_value=1)
  untouched = square_border & (weights == 0)
  assert untouched.sum() > 0.8 * square_border.sum()
  np.testing.assert_array_equal(out[untouched], image[untouched])
  assert np.abs(square[untouched].astype(int) - image[untouched]).mean() > 10


def test_a_rotated_crop_goes_back_where_it_came_from(photo):
  image, landmarks = photo
  centre = landmarks.mean(0)
  side = 2.0 * float(np.ptp(landmarks, axis=0).max())
  sim = crop_lib.Similarity.about(centre, side, 0.35, 160)
  np.testing.assert_allclose(sim.invert(sim.apply(landmarks)), landmarks, atol=1e-3)
  np.testing.assert_allclose(sim.apply(centre[None])[0], [79.5, 79.5], atol=1e-4)
  crop_lm = sim.apply(landmarks)
  face = pb.photo_mask(image.shape, (160, 160), sim, [crop_lm]) > 0.99
  assert face.sum() > 0.25 * side ** 2

  def error(cut_with, paste_with):
    """Mean error on the face of the crop `cut_with` (by scikit-image) pasted back by `paste_with`."""
    matrix = np.vstack([np.asarray(cut_with.matrix), [0, 0, 1]])
    crop = sk_transform.warp(image, sk_transform.AffineTransform(matrix=np.linalg.inv(matrix)),
                             output_shape=(160, 160), order=3, preserve_range=True)
    crop = np.clip(np.round(crop), 0, 255).astype(np.uint8)
    out = pb.paste_back(image, crop, paste_with, [cut_with.apply(landmarks)])
    return float(np.abs(out.astype(np.float64) - image)[face].mean())

  # Back in place: the rotated round trip loses no more than the unrotated one of the same scale
  # (resampling blur); the same paste one pixel off, or without the rotation, is far worse.
  unrotated = crop_lib.Similarity.about(centre, side, 0.0, 160)
  shifted = crop_lib.Similarity((sim.matrix[0][:2] + (sim.matrix[0][2] + 1.0,), sim.matrix[1]), sim.resolution)
  assert error(sim, sim) < 1.1 * error(unrotated, unrotated)
  assert error(sim, sim) < 0.8 * error(sim, shifted)
  assert error(sim, sim) < 0.5 * error(sim, unrotated)


def test_box_transform_and_similarity_agree(photo):
  image, landmarks = photo
  crop, crop_lm, transform = crop_lib.crop_face(image, landmarks, 128)
  sim = crop_lib.Similarity.of(transform)
  np.testing.assert_allclose(sim.apply(landmarks), crop_lm, atol=1e-3)
  np.testing.assert_allclose(sim.invert(crop_lm), transform.invert(crop_lm), atol=1e-3)
  # A crop as large as its box pastes back bit for bit, by box, transform or similarity.
  box = (300.0, 200.0, 556.0, 456.0)
  exact, exact_transform = crop_lib.crop_and_resize(image, box, 256)
  for where in (box, exact_transform, crop_lib.Similarity.of(exact_transform)):
    np.testing.assert_array_equal(pb.paste_back(image, exact, where), image)


def test_colour_matching_moves_the_face_towards_the_photo(photo):
  image, landmarks = photo
  crop, crop_lm, transform = crop_lib.crop_face(image, landmarks, 128)
  tinted = np.clip(crop.astype(np.int16) + np.array([60, -30, -30]), 0, 255).astype(np.uint8)
  weights = pb.photo_mask(image.shape, crop.shape, transform, [crop_lm]) > 0.99

  def colour_error(out):
    return float(np.abs(out[weights].astype(np.float64).mean(0) - image[weights].mean(0)).sum())

  plain = pb.paste_back(image, tinted, transform, [crop_lm])
  matched = pb.paste_back(image, tinted, transform, [crop_lm], color_match=True)
  assert colour_error(matched) < 0.1 * colour_error(plain)
  outside = pb.photo_mask(image.shape, crop.shape, transform, [crop_lm]) == 0
  np.testing.assert_array_equal(matched[outside], image[outside])


def test_seam_measures_the_gradient_along_the_mask_border():
  flat = np.full((40, 40, 3), 100, np.uint8)
  mask = np.zeros((40, 40), np.float32)
  mask[10:30, 10:30] = 1.0
  hard = flat.copy()
  hard[10:30, 10:30] = 200  # a step of 100 at the border: central differences give 50 across it
  assert pb.seam(flat, mask) == 0.0
  # Border: the 76 outermost pixels of the square. Central differences across a step of 100 are 50
  # on each side of it; mean of |d/dx| and |d/dy|: 25 on an edge, 50 at a corner (both steps).
  assert pb.seam(hard, mask) == pytest.approx((72 * 25.0 + 4 * 50.0) / 76)
