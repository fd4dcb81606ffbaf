"""Face detectors with 68-point landmarks behind one interface, and image loading.

Every backend returns `Face`s (box, `[68, 2]` float32 landmarks in the iBUG order of
`layout.py`, score) from `detect(image)` (largest face first), and refits the landmarks inside a
given box with `landmarks_in_box(image, box)` (how `video.py` tracks a face between detections).
`box_from_landmarks(landmarks)` turns landmarks into the box that backend's landmark model
expects, so a track can feed the next frame.

Backends (`create_detector(backend, **kw)`):
- "dlib" (default, offline): dlib's HOG frontal-face detector, with the MMOD CNN detector as a
  fallback when HOG finds nothing (profile-ish or grimacing faces), and the 68-point shape
  predictor; model files from the `face-recognition-models` package.
- "face_alignment": the `face-alignment` package (FAN 2D landmarks, S3FD detector; PyTorch).
  An optional extra: `pip install 'facegen-jax[face-alignment]'`. Its weights come from the
  PyTorch hub cache (`$TORCH_HOME/hub/checkpoints`, default `~/.cache/torch/hub/checkpoints`);
  facegen-jax does not download at run time unless `allow_download=True`.

Coordinates: (x, y) pixels with pixel centres at integer coordinates (as dlib reports them);
boxes are `(x0, y0, x1, y1)`.
"""

import dataclasses
import functools
import importlib
import os
import warnings
from typing import List, Optional, Protocol, Sequence, Tuple

import numpy as np
from PIL import Image

from facegen_jax.io.images import load_image  # noqa: F401  (re-exported: the one image loader)
from facegen_jax.landmarks.crop import crop_and_resize

Box = Tuple[float, float, float, float]


@dataclasses.dataclass(frozen=True)
class Face:
  """One detected face.

  Attributes:
    box: `(x0, y0, x1, y1)` float pixels of the detector's box.
    landmarks: `[68, 2]` float32 (x, y) pixels, iBUG order.
    score: detector confidence (backend-specific scale; larger is surer).
  """
  box: Box
  landmarks: np.ndarray
  score: float

  @property
  def area(self) -> float:
    return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


class LandmarkDetector(Protocol):
  """What every backend provides."""

  def detect(self, image: np.ndarray) -> List[Face]:
    """All faces in uint8 RGB `[H, W, 3]`, largest box first; `[]` when there is none."""

  def landmarks_in_box(self, image: np.ndarray, box: Box) -> np.ndarray:
    """`[68, 2]` float32 landmarks of the face inside `box`."""

  def box_from_landmarks(self, landmarks: np.ndarray) -> Box:
    """The box this backend's detector would report for a face with these landmarks."""


class BackendUnavailableError(RuntimeError):
  """A detector backend's package or model weights are missing; the message says how to fix it."""


def _check_image(image: np.ndarray) -> np.ndarray:
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
    raise ValueError(f"detectors take uint8 RGB images [H, W, 3], got {image.dtype} {image.shape}; "
                     "use facegen_jax.landmarks.load_image() to read files")
  return np.ascontiguousarray(image)


def _sorted_faces(faces: Sequence[Face]) -> List[Face]:
  return sorted(faces, key=lambda f: -f.area)


# --------------------------------------------------------------------------------------------
# dlib


# dlib's HOG boxes relative to the bounding box of the 68 predicted landmarks, measured on the
# 20 photos and 36 video frames of ../shared/faces (std in brackets): square, side
# 1.05 (0.06) * sqrt(w * h), centre shifted up by 0.094 (0.04) * h and right by 0.015 (0.05) * w.
_DLIB_BOX_SIDE = 1.05
_DLIB_BOX_SHIFT = (0.015, -0.094)


@functools.lru_cache(maxsize=None)
def _dlib_models(cnn: bool):
  try:
    import dlib  # pylint: disable=import-outside-toplevel
    import face_recognition_models  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise BackendUnavailableError(
        f"the dlib backend needs the packages dlib-bin and face-recognition-models ({e}); "
        "pip install dlib-bin face-recognition-models") from e
  if cnn:
    return dlib.cnn_face_detection_model_v1(face_recognition_models.cnn_face_detector_model_location())
  return (dlib.get_frontal_face_detector(),
          dlib.shape_predictor(face_recognition_models.pose_predictor_model_location()))


def _resized(image: np.ndarray, max_side: Optional[int]) -> Tuple[np.ndarray, float]:
  """`image` shrunk so its longer side is at most `max_side`, and the scale factor used."""
  h, w = image.shape[:2]
  if not max_side or max(h, w) <= max_side:
    return image, 1.0
  scale = max_side / max(h, w)
  size = (max(1, round(w * scale)), max(1, round(h * scale)))
  small = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR, reducing_gap=2.0))
  return small, size[0] / w


def dlib_style_box(landmarks: np.ndarray) -> Box:
  """The box dlib's HOG detector reports for a face with these `[68, 2]` landmarks."""
  pts = np.asarray(landmarks, np.float64)
  lo, hi = pts.min(0), pts.max(0)
  size = np.maximum(hi - lo, 1.0)
  side = _DLIB_BOX_SIDE * float(np.sqrt(size[0] * size[1]))
  cx, cy = (lo + hi) / 2 + np.asarray(_DLIB_BOX_SHIFT) * size
  return (float(cx - side / 2), float(cy - side / 2), float(cx + side / 2), float(cy + side / 2))


class DlibDetector:
  """dlib HOG (+ MMOD CNN fallback) face detector and 68-point shape predictor.

  Args:
    upsample: HOG upsampling passes (1 finds faces down to ~40 px, 0 down to ~80 px and is ~4x
      faster: use 0 for video frames where the face is large).
    max_side: images are shrunk to this longer side for detection (landmarks are always fitted at
      full resolution); None detects at full size.
    threshold: HOG score threshold (dlib's `adjust_threshold`; higher: fewer false positives).
    cnn_fallback: run the MMOD CNN detector when HOG finds no face (slow: ~1-2 s per image).
    cnn_max_side: image size for the CNN detector (it finds faces down to ~80 px at this size).
  """

  def __init__(self, upsample: int = 1, max_side: Optional[int] = 1024, threshold: float = 0.0,
               cnn_fallback: bool = True, cnn_max_side: int = 512):
    self.upsample, self.max_side, self.threshold = int(upsample), max_side, float(threshold)
    self.cnn_fallback, self.cnn_max_side = cnn_fallback, int(cnn_max_side)
    self._hog, self._predictor = _dlib_models(False)

  def landmarks_in_box(self, image: np.ndarray, box: Box) -> np.ndarray:
    import dlib  # pylint: disable=import-outside-toplevel
    image = _check_image(image)
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    shape = self._predictor(image, dlib.rectangle(x0, y0, x1, y1))
    return np.array([[p.x, p.y] for p in shape.parts()], np.float32)

  def box_from_landmarks(self, landmarks: np.ndarray) -> Box:
    return dlib_style_box(landmarks)

  def locate_near(self, image: np.ndarray, box: Box, window: float = 1.6,
                  threshold: float = -0.3) -> Optional[Box]:
    """Re-detects a face near `box` cheaply (for trackers; ~3 ms): runs HOG on a `window` x box
    region scaled so the face is ~90 px (HOG's smallest face is 80 px), and returns the detection overlapping `box` most (IoU >
    0.3, score above `threshold`) in full-image coordinates, or None."""
    image = _check_image(image)
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0, 1.0)
    scale = 90.0 / side
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, window * side / 2
    n = max(1, int(round(2 * half * scale)))
    crop, transform = crop_and_resize(image, (cx - half, cy - half, cx + half, cy + half), n,
                                      resample=Image.BILINEAR, reducing_gap=2.0)
    rects, _, _ = self._hog.run(crop, 0, float(threshold))
    best, best_iou = None, 0.3
    for r in rects:
      corners = transform.invert(np.array([[r.left(), r.top()], [r.right(), r.bottom()]], np.float64))
      found = tuple(float(v) for v in corners.ravel())
      iou = box_iou(found, box)
      if iou > best_iou:
        best, best_iou = found, iou
    return best

  def detect(self, image: np.ndarray) -> List[Face]:
    image = _check_image(image)
    small, scale = _resized(image, self.max_side)
    rects, scores, _ = self._hog.run(small, self.upsample, self.threshold)
    faces = []
    for rect, score in zip(rects, scores):
      box = tuple(float(v) / scale for v in (rect.left(), rect.top(), rect.right(), rect.bottom()))
      faces.append(Face(box, self.landmarks_in_box(image, box), float(score)))
    if not faces and self.cnn_fallback:
      faces = self._detect_cnn(image)
    return _sorted_faces(faces)

  def _detect_cnn(self, image: np.ndarray) -> List[Face]:
    """MMOD CNN detections; the landmarks are refitted once in the HOG-style box of their first
    fit, because the shape predictor was trained on HOG boxes (MMOD's are tighter)."""
    small, scale = _resized(image, self.cnn_max_side)
    faces = []
    for det in _dlib_models(True)(small, 0):
      r = det.rect
      box = tuple(float(v) / scale for v in (r.left(), r.top(), r.right(), r.bottom()))
      landmarks = self.landmarks_in_box(image, box)
      box = self.box_from_landmarks(landmarks)
      faces.append(Face(box, self.landmarks_in_box(image, box), float(det.confidence)))
    return faces


# --------------------------------------------------------------------------------------------
# face-alignment (FAN)

_FA_INSTALL = ("pip install 'facegen-jax[face-alignment]' (or: pip install face-alignment torch; "
               "CPU wheels: --extra-index-url https://download.pytorch.org/whl/cpu)")


def torch_hub_checkpoint_dir() -> str:
  """Where PyTorch hub (and so face-alignment) keeps downloaded weights:
  `$TORCH_HOME/hub/checkpoints`, TORCH_HOME defaulting to `$XDG_CACHE_HOME/torch` or
  `~/.cache/torch`."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
    return os.path.join(torch.hub.get_dir(), "checkpoints")
  except ImportError:
    cache = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    return os.path.join(os.environ.get("TORCH_HOME", os.path.join(cache, "torch")), "hub", "checkpoints")


def _torch_minor_version() -> Optional[str]:
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  v = torch.__version__.split("+")[0]
  return v.rsplit(".", 2)[0] if "dev" in v else v.rsplit(".", 1)[0]


def face_alignment_weight_urls(fa_module, face_detector: str = "sfd") -> List[str]:
  """The weight URLs `face_alignment.FaceAlignment(TWO_D, face_detector=...)` would fetch, read
  from the installed package (its URLs depend on the torch version)."""
  api = importlib.import_module(fa_module.__name__ + ".api")
  table = getattr(api, "models_urls", {}).get(_torch_minor_version(), None) or api.default_model_urls
  urls = [table["2DFAN-4"]]
  try:
    det = importlib.import_module(f"{fa_module.__name__}.detection.{face_detector}.{face_detector}_detector")
    urls += list(getattr(det, "models_urls", {}).values())
  except ImportError:
    pass
  return urls


class FaceAlignmentDetector:
  """The `face-alignment` package (Bulat & Tzimiropoulos' FAN, 2D landmarks) as a backend.

  Args:
    device: torch device ("cpu", "cuda", ...).
    face_detector: face-alignment's detector ("sfd", "blazeface", "dlib").
    flip_input: also run on the mirrored face and average (slower, a bit more accurate).
    allow_download: let face-alignment download missing weights (off: a clear error instead).

  Raises:
    BackendUnavailableError: the package is not installed, or its weights are not in
      `torch_hub_checkpoint_dir()` and `allow_download` is False.
  """

  def __init__(self, device: str = "cpu", face_detector: str = "sfd", flip_input: bool = False,
               allow_download: bool = False):
    try:
      import face_alignment  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise BackendUnavailableError(
          f"landmark backend 'face_alignment' needs the face-alignment package, which is not "
          f"installed ({e}). Install it: {_FA_INSTALL}; or use backend='dlib'.") from e
    if not allow_download:
      ckpt_dir = torch_hub_checkpoint_dir()
      missing = [u for u in face_alignment_weight_urls(face_alignment, face_detector)
                 if not os.path.isfile(os.path.join(ckpt_dir, os.path.basename(u)))]
      if missing:
        listing = "; ".join(f"{os.path.basename(u)} (from {u})" for u in missing)
        raise BackendUnavailableError(
            f"face-alignment weights missing from {ckpt_dir}: {listing}. Copy these files there "
            "(set TORCH_HOME to use another cache: weights are read from $TORCH_HOME/hub/checkpoints), "
            "or pass allow_download=True on a machine with internet access.")
    self._fa = face_alignment.FaceAlignment(
        face_alignment.LandmarksType.TWO_D, device=device, flip_input=flip_input,
        face_detector=face_detector)

  def _landmarks(self, image: np.ndarray, boxes) -> Tuple[list, list]:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # "No faces were detected." is our empty list
      out = self._fa.get_landmarks_from_image(image, detected_faces=boxes, return_bboxes=True)
    landmarks, _, boxes = out
    return landmarks or [], boxes if boxes is not None else []

  def detect(self, image: np.ndarray) -> List[Face]:
    image = _check_image(image)
    landmarks, boxes = self._landmarks(image, None)
    faces = []
    for lm, b in zip(landmarks, boxes):
      b = np.asarray(b, np.float64).ravel()
      score = float(b[4]) if b.size > 4 else 1.0
      faces.append(Face(tuple(float(v) for v in b[:4]), np.asarray(lm, np.float32)[:, :2], score))
    return _sorted_faces(faces)

  def landmarks_in_box(self, image: np.ndarray, box: Box) -> np.ndarray:
    image = _check_image(image)
    landmarks, _ = self._landmarks(image, [np.array([*map(float, box), 1.0])])
    return np.asarray(landmarks[0], np.float32)[:, :2]

  def box_from_landmarks(self, landmarks: np.ndarray) -> Box:
    # FAN only uses the box's centre and w + h (it crops 1.95x around it), so the dlib-measured
    # relation is close enough; not measured against S3FD boxes (no weights on this machine).
    return dlib_style_box(landmarks)


# --------------------------------------------------------------------------------------------

BACKENDS = {"dlib": DlibDetector, "face_alignment": FaceAlignmentDetector}


def create_detector(backend: str = "dlib", **kwargs) -> LandmarkDetector:
  """A landmark detector: `backend` is one of `BACKENDS`; `kwargs` go to its constructor."""
  if backend not in BACKENDS:
    raise ValueError(f"unknown landmark backend {backend!r}; choose one of {sorted(BACKENDS)}")
  return BACKENDS[backend](**kwargs)


def box_iou(a: Box, b: Box) -> float:
  """Intersection over union of two `(x0, y0, x1, y1)` boxes."""
  w = min(a[2], b[2]) - max(a[0], b[0])
  h = min(a[3], b[3]) - max(a[1], b[1])
  if w <= 0 or h <= 0:
    return 0.0
  inter = w * h
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return float(inter / union) if union > 0 else 0.0


def largest_face(faces: Sequence[Face]) -> Optional[Face]:
  """The face with the largest box, or None."""
  return max(faces, key=lambda f: f.area) if faces else None

