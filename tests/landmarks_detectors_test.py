"""Landmark detectors on the real photos of ../shared/faces, image loading, the optional backend."""

import functools
import sys
import types

import numpy as np
import pytest
from PIL import Image

from facegen_jax.landmarks import detectors, layout
from facegen_jax.landmarks.crop import crop_face, photo_crop_box
from facegen_jax.landmarks.detectors import BackendUnavailableError, create_detector, load_image

CNN_ONLY = "lp_d8_curly_man__liveportrait__d8.jpg"  # grimace: HOG misses it, MMOD finds it


@pytest.fixture(scope="module")
def detector():
  return create_detector("dlib")


@pytest.fixture(scope="module")
def photo_faces(shared_faces, detector):
  """{file name: (image, faces)} for every photo."""
  out = {}
  for path in sorted((shared_faces / "images").iterdir()):
    image = load_image(path)
    out[path.name] = (image, detector.detect(image))
  return out


@functools.lru_cache(maxsize=None)
def _dlib_models():
  import dlib  # pylint: disable=import-outside-toplevel
  import face_recognition_models  # pylint: disable=import-outside-toplevel
  return dlib.get_frontal_face_detector(), dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())


def _dlib_reference(image, upsample=1):
  """dlib called directly, at full resolution: HOG boxes and 68-point fits."""
  hog, pred = _dlib_models()
  return [np.array([[p.x, p.y] for p in pred(image, r).parts()], np.float32) for r in hog(image, upsample)]


def test_a_face_on_every_photo(shared_faces, photo_faces):
  assert len(photo_faces) >= 21  # ../shared/faces holds 21 photos or more (it grows)
  for name, (image, faces) in photo_faces.items():
    assert faces, f"no face found on {name}"
    face = faces[0]
    assert face.landmarks.shape == (68, 2) and face.landmarks.dtype == np.float32
    h, w = image.shape[:2]
    lm = face.landmarks
    assert (lm[:, 0] > -0.05 * w).all() and (lm[:, 0] < 1.05 * w).all(), name
    # Plausible anatomy in iBUG order: eyes above the mouth, the subject's right eye on image left,
    # the face a sizeable part of the box.
    assert lm[36:48, 1].mean() < lm[48:68, 1].mean() < lm[8, 1], name
    assert lm[36:42, 0].mean() < lm[42:48, 0].mean(), name
    x0, y0, x1, y1 = face.box
    assert 0.6 < np.ptp(lm[:, 0]) / (x1 - x0) < 1.5, name
  # The grimace needs the CNN fallback; without it HOG finds nothing.
  image, faces = photo_faces[CNN_ONLY]
  assert create_detector("dlib", cnn_fallback=False).detect(image) == []


def test_landmarks_equal_dlib_called_directly(photo_faces):
  """Where no downscaling happens (images up to 1024 px) the backend is exactly dlib."""
  checked = 0
  for name, (image, faces) in photo_faces.items():
    if max(image.shape[:2]) > 1024 or name == CNN_ONLY:
      continue
    ref = _dlib_reference(image)
    assert len(ref) == len(faces), name
    np.testing.assert_array_equal(faces[0].landmarks, max(ref, key=lambda l: np.ptp(l[:, 0])), err_msg=name)
    checked += 1
  assert checked >= 12


def test_downscaled_detection_close_to_full_resolution(photo_faces):
  name = "paul_rudd__facenet_pytorch__1.jpg"  # 1638 x 2048: detected at 1024, fitted at full size
  image, faces = photo_faces[name]
  ref = _dlib_reference(image, upsample=0)[0]
  size = np.ptp(ref, axis=0).max()
  assert np.abs(faces[0].landmarks - ref).mean() < 0.02 * size


def test_tracking_box_reproduces_the_detection(detector, photo_faces):
  """`box_from_landmarks` is the box dlib's predictor expects: refitting in it stays put."""
  for name, (image, faces) in list(photo_faces.items())[:8]:
    face = faces[0]
    np.testing.assert_array_equal(detector.landmarks_in_box(image, face.box), face.landmarks)
    refit = detector.landmarks_in_box(image, detector.box_from_landmarks(face.landmarks))
    size = np.ptp(face.landmarks, axis=0).max()
    assert np.linalg.norm(refit - face.landmarks, axis=1).mean() < 0.03 * size, name
    located = detector.locate_near(image, detector.box_from_landmarks(face.landmarks))
    assert located is not None and detectors.box_iou(located, face.box) > 0.5, name


def test_largest_first_and_no_face(detector, photo_faces):
  a, _ = photo_faces["jeff_bezos__deepface__img21.jpg"]
  b, _ = photo_faces["katy_perry__deepface__img45.jpg"]
  small = np.asarray(Image.fromarray(b).resize((b.shape[1] // 2, b.shape[0] // 2)))
  canvas = np.full((700, 900, 3), 128, np.uint8)
  canvas[:a.shape[0], :a.shape[1]] = a[:700]
  canvas[100:100 + small.shape[0], 500:500 + small.shape[1]] = small
  faces = detector.detect(canvas)
  assert len(faces) == 2
  assert faces[0].area > faces[1].area and faces[0].box[0] < 450 < faces[1].box[0]
  assert detectors.largest_face(faces) is faces[0]
  # No face (the plain backdrop of a portrait; the CNN fallback runs and finds nothing either).
  backdrop, _ = photo_faces["bob_dylan__liveportrait__s2.jpg"]
  assert detector.detect(np.ascontiguousarray(backdrop[50:400, 1400:1750])) == []
  with pytest.raises(ValueError, match="uint8 RGB"):
    detector.detect(backdrop[..., 0])


def test_crop_boxes_contain_all_landmarks(photo_faces):
  for name, (image, faces) in photo_faces.items():
    lm = faces[0].landmarks
    x0, y0, x1, y1 = photo_crop_box(lm)
    assert x1 - x0 == pytest.approx(y1 - y0)
    assert (lm[:, 0] > x0).all() and (lm[:, 0] < x1).all() and (lm[:, 1] > y0).all() and (lm[:, 1] < y1).all(), name
    crop, crop_lm, transform = crop_face(image, lm, 128)
    assert crop.shape == (128, 128, 3) and crop.dtype == np.uint8
    assert (crop_lm >= 0).all() and (crop_lm <= 127).all(), name
    np.testing.assert_allclose(transform.invert(crop_lm), lm, atol=1e-3)


def test_load_image_modes_and_errors(shared_faces, tmp_path):
  images = shared_faces / "images"
  rgba = load_image(images / "alex_lacamoire__face_recognition__alex-lacamoire.png")
  gray = load_image(images / "bob_dylan__liveportrait__s2.jpg")
  assert rgba.dtype == gray.dtype == np.uint8 and rgba.shape[2] == gray.shape[2] == 3
  Image.fromarray(gray[:64, :64, 0]).save(tmp_path / "gray.png")
  Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(tmp_path / "clear.png")  # fully transparent
  assert load_image(tmp_path / "gray.png").shape == (64, 64, 3)
  assert (load_image(tmp_path / "clear.png") == 255).all()  # composited on white
  with pytest.raises(FileNotFoundError, match="nope.jpg"):
    load_image(tmp_path / "nope.jpg")
  (tmp_path / "garbage.jpg").write_bytes(b"not an image at all" * 10)
  with pytest.raises(ValueError, match="garbage.jpg"):
    load_image(tmp_path / "garbage.jpg")
  data = (images / "jeff_bezos__deepface__img21.jpg").read_bytes()
  (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 3])
  with pytest.raises(ValueError, match="truncated.jpg"):
    load_image(tmp_path / "truncated.jpg")


def test_unknown_backend():
  with pytest.raises(ValueError, match="face_alignment"):
    create_detector("mediapipe")


def test_face_alignment_not_installed(monkeypatch):
  monkeypatch.setitem(sys.modules, "face_alignment", None)  # import fails as if not installed
  with pytest.raises(BackendUnavailableError, match=r"pip install 'facegen-jax\[face-alignment\]'"):
    create_detector("face_alignment")


def _fake_face_alignment(monkeypatch, calls):
  """A stand-in `face_alignment` package with the real one's module layout and API surface."""
  pkg = types.ModuleType("face_alignment")
  api = types.ModuleType("face_alignment.api")
  api.default_model_urls = {"2DFAN-4": "https://example.org/python-fan/2DFAN4-cd938726ad.zip"}
  api.models_urls = {}
  sfd = types.ModuleType("face_alignment.detection.sfd.sfd_detector")
  sfd.models_urls = {"s3fd": "https://example.org/python-fan/s3fd-619a316812.pth"}

  class FaceAlignment:  # pylint: disable=too-few-public-methods
    def __init__(self, landmarks_type, device, flip_input, face_detector):
      calls.append((landmarks_type, device, flip_input, face_detector))

    def get_landmarks_from_image(self, image, detected_faces=None, return_bboxes=False):
      assert return_bboxes
      boxes = detected_faces if detected_faces is not None else [
          np.array([10, 10, 50, 50, 0.9]), np.array([0, 0, 100, 90, 0.99])]
      return [np.tile(np.asarray(b[:2], np.float32), (68, 1)) for b in boxes], None, boxes

  pkg.FaceAlignment = FaceAlignment
  pkg.LandmarksType = types.SimpleNamespace(TWO_D=1)
  pkg.api = api
  for name, mod in [("face_alignment", pkg), ("face_alignment.api", api),
                    ("face_alignment.detection.sfd.sfd_detector", sfd)]:
    monkeypatch.setitem(sys.modules, name, mod)


def test_face_alignment_missing_weights_then_loads(monkeypatch, tmp_path):
  calls = []
  _fake_face_alignment(monkeypatch, calls)
  monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
  monkeypatch.setitem(sys.modules, "torch", None)  # the checkpoint dir is found without torch too
  ckpt = tmp_path / "torch" / "hub" / "checkpoints"
  assert detectors.torch_hub_checkpoint_dir() == str(ckpt)
  with pytest.raises(BackendUnavailableError) as err:
    create_detector("face_alignment")
  msg = str(err.value)
  assert str(ckpt) in msg and "2DFAN4-cd938726ad.zip" in msg and "s3fd-619a316812.pth" in msg
  assert "TORCH_HOME" in msg and "allow_download=True" in msg and not calls
  ckpt.mkdir(parents=True)
  (ckpt / "2DFAN4-cd938726ad.zip").write_bytes(b"w")
  (ckpt / "s3fd-619a316812.pth").write_bytes(b"w")
  det = create_detector("face_alignment", device="cpu")
  assert calls == [(1, "cpu", False, "sfd")]
  faces = det.detect(np.zeros((120, 120, 3), np.uint8))
  assert [f.score for f in faces] == [pytest.approx(0.99), pytest.approx(0.9)]  # largest first
  assert faces[0].landmarks.shape == (layout.NUM_LANDMARKS, 2)
  np.testing.assert_array_equal(det.landmarks_in_box(np.zeros((64, 64, 3), np.uint8), (5, 6, 40, 40))[0], [5, 6])
