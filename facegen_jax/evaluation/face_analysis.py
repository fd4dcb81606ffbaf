"""What the metrics need to see in a face: its 68 landmarks and its identity embedding.

Adapters so the evaluation code depends on two small callables only:
- a `LandmarkFn`: `landmark_fn(image uint8 [H, W, 3]) -> [68, 2] float32 or None` (None: no face);
- a `FrozenNet` (facegen_jax/nets/base.py) whose `embedding` is the identity code.
"""

import functools
from typing import Callable, Optional

import numpy as np

from facegen_jax.landmarks import create_detector
from facegen_jax.nets import load_frozen_net
from facegen_jax.nets.base import FrozenNet

LandmarkFn = Callable[[np.ndarray], Optional[np.ndarray]]


def _largest(faces):
  return max(faces, key=lambda f: float(np.prod(np.ptp(np.asarray(f.landmarks, np.float32), axis=0))))


def detector_landmark_fn(detector) -> LandmarkFn:
  """Wraps a facegen_jax.landmarks detector (`detect(image) -> list[Face]`): the largest face."""
  def landmark_fn(image: np.ndarray) -> Optional[np.ndarray]:
    faces = detector.detect(np.ascontiguousarray(image))
    if not faces:
      return None
    return np.asarray(_largest(faces).landmarks, np.float32)
  return landmark_fn


@functools.lru_cache(maxsize=None)
def _dlib_models():
  import dlib  # pylint: disable=import-outside-toplevel
  import face_recognition_models  # pylint: disable=import-outside-toplevel
  return (dlib.get_frontal_face_detector(),
          dlib.shape_predictor(face_recognition_models.pose_predictor_model_location()))


def dlib_landmark_fn(upsample: int = 1) -> LandmarkFn:
  """dlib's HOG face detector + 68-point shape predictor, called directly; the largest face."""
  import dlib  # pylint: disable=import-outside-toplevel
  detector, predictor = _dlib_models()

  def landmark_fn(image: np.ndarray) -> Optional[np.ndarray]:
    image = np.ascontiguousarray(image)
    rects = detector(image, upsample)
    if not rects:
      return None
    rect = max(rects, key=lambda r: r.area())
    shape = predictor(image, dlib.rectangle(rect.left(), rect.top(), rect.right(), rect.bottom()))
    return np.array([[p.x, p.y] for p in shape.parts()], np.float32)
  return landmark_fn


def default_landmark_fn() -> LandmarkFn:
  """The shared dlib detector of facegen_jax.landmarks (the largest face)."""
  return detector_landmark_fn(create_detector("dlib"))


def embed(net: FrozenNet, images: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
  """Identity embeddings `[B, D]` of uint8 images `[B, H, W, 3]` with their landmarks `[B, 68, 2]`."""
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.ndim != 4:
    raise ValueError(f"embed() takes uint8 images [B, H, W, 3], got {images.dtype} {images.shape}")
  x = images.astype(np.float32) / 127.5 - 1.0
  out = net.apply(net.params, x, np.asarray(landmarks, np.float32))
  return np.asarray(out["embedding"], np.float32)


def dlib_identity_net() -> FrozenNet:
  """dlib's face-recognition ResNet (the 128-D model of face_recognition_models), run natively.

  A FrozenNet for evaluation only (not differentiable): the network the Flax port
  `load_frozen_net("dlib_resnet")` reproduces, so it measures the same identity. Embeddings are
  L2-normalised, as FrozenNet's contract asks.
  """
  import dlib  # pylint: disable=import-outside-toplevel
  import face_recognition_models  # pylint: disable=import-outside-toplevel
  model = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())

  def apply(params, images, landmarks):
    del params
    images = np.clip(np.round((np.asarray(images) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    out = []
    for image, points in zip(images, np.asarray(landmarks)):
      left, top = np.floor(points.min(0)).astype(int)
      right, bottom = np.ceil(points.max(0)).astype(int)
      shape = dlib.full_object_detection(dlib.rectangle(int(left), int(top), int(right), int(bottom)),
                                         [dlib.point(int(round(x)), int(round(y))) for x, y in points])
      out.append(np.asarray(model.compute_face_descriptor(np.ascontiguousarray(image), shape), np.float32))
    out = np.stack(out)
    return {"embedding": out / np.linalg.norm(out, axis=-1, keepdims=True), "features": []}

  return FrozenNet(name="dlib_resnet_native", params={}, apply=apply)


def default_identity_net() -> FrozenNet:
  """The Flax port of dlib's face-recognition ResNet (facegen_jax.nets)."""
  return load_frozen_net("dlib_resnet")
