"""The reenactment product: one source photo + a driving photo, video or batch -> the result.

    from facegen_jax.inference import Reenactor
    r = Reenactor.from_checkpoint("workdirs/demo")          # a training workdir or an export
    out = r.reenact_image(load_image("me.jpg"), load_image("pose.jpg"))
    r.reenact_video(load_image("me.jpg"), "driving.mp4", "out.mp4")

Pipeline per driving frame: landmarks (detect + track + temporal smoothing on video) -> motion
transfer (relative to the first driving frame by default on video, so the output keeps the
source's face shape; `motion="absolute"` uses the driving landmarks as they are, moved onto the
source's face box) -> face mask -> generator -> optional detail blend (docs/method.md, Detail blend) -> paste-back into
the full source photo through a feathered mask (or the crop alone).
"""

import dataclasses
import os
from typing import Iterable, Optional, Sequence

import numpy as np
from absl import logging

from facegen_jax.inference import detail_blend, figure, motion as motion_lib, paste_back as pb
from facegen_jax.inference.generator_model import GeneratorModel
from facegen_jax.io import video as video_io
from facegen_jax.landmarks import crop as crop_lib, layout
from facegen_jax.landmarks.detectors import create_detector
from facegen_jax.landmarks.masks import render_masks
from facegen_jax.landmarks.video import track_video


@dataclasses.dataclass
class SourceFace:
  """A source photo prepared for reenactment."""

  image: np.ndarray  # [H, W, 3] uint8, the full photo
  transform: crop_lib.CropTransform  # photo <-> crop coordinates; .box is the square crop box
  crop: np.ndarray  # [R, R, 3] uint8
  landmarks: np.ndarray  # [68, 2] in crop pixels

  @property
  def photo_landmarks(self) -> np.ndarray:
    return self.transform.invert(self.landmarks)


@dataclasses.dataclass
class VideoReport:
  """What reenact_video did."""

  output: str
  frames: int
  fps: float
  frames_without_face: int
  has_audio: bool
  grid: Optional[str] = None


def _largest_face_landmarks(detector, image: np.ndarray, what: str) -> np.ndarray:
  faces = detector.detect(image)
  if not faces:
    raise ValueError(f"no face found in {what}; use a photo where the face is visible and at least ~80 px wide")
  if len(faces) > 1:
    logging.info("%d faces in %s; using the largest", len(faces), what)
  return np.asarray(faces[0].landmarks, np.float32)


def _box_similarity(points: np.ndarray, onto: np.ndarray):
  """(scale, offset) of the similarity that maps the landmark box of `points` onto `onto`'s."""
  lo, hi = points.min(0), points.max(0)
  olo, ohi = onto.min(0), onto.max(0)
  scale = float((ohi - olo).max() / max((hi - lo).max(), 1e-6))
  return scale, (olo + ohi) / 2 - scale * (lo + hi) / 2


def _align_onto(points: np.ndarray, onto: np.ndarray, reference: Optional[np.ndarray] = None) -> np.ndarray:
  """Moves `points` (`[..., 68, 2]`) by the similarity that maps the box of `reference` (default:
  `points`) onto the box of `onto`. Absolute motion uses it so another person's landmarks sit where
  the source face is, with the motion between frames kept."""
  scale, offset = _box_similarity(points if reference is None else reference, onto)
  return (np.asarray(points) * scale + offset).astype(np.float32)


class Reenactor:
  """Runs a trained generator on photos, videos and batches.

  Args:
    model: the generator (GeneratorModel).
    detector: a landmark detector (`facegen_jax.landmarks.detectors.create_detector`); default dlib.
    crop_scale: crop box side as a multiple of the landmarks' extent (must match the data the
      model was trained on; prepare_data uses the same default).
  """

  # Paste-back matches the colours of the face region to the source photo's (paste_back.match_colors).
  color_match: bool = False

  def __init__(self, model: GeneratorModel, detector=None, crop_scale: float = 1.8):
    self.model = model
    self.resolution = model.resolution
    self.crop_scale = crop_scale
    if detector is None:
      detector = create_detector("dlib")
    self.detector = detector

  @classmethod
  def from_checkpoint(cls, path: str, use_ema: bool = True, **kwargs) -> "Reenactor":
    """From a training workdir (newest checkpoint) or an export directory."""
    return cls(GeneratorModel.load(path, use_ema=use_ema), **kwargs)

  # Faces -------------------------------------------------------------------------------------
  def prepare_source(self, image: np.ndarray, landmarks: Optional[np.ndarray] = None,
                     name: str = "the source image") -> SourceFace:
    """Detects (unless `landmarks` `[68, 2]` in photo pixels are given) and crops the source face."""
    image = np.asarray(image)
    if landmarks is None:
      landmarks = _largest_face_landmarks(self.detector, image, name)
    crop, crop_landmarks, transform = crop_lib.crop_face(image, landmarks, self.resolution, self.crop_scale)
    return SourceFace(image, transform, crop, crop_landmarks)

  def generate_outputs(self, crops: np.ndarray, source_landmarks: np.ndarray, landmarks: np.ndarray) -> dict:
    """Every image of the generator (`GeneratorModel.outputs`: "generated", and with motion
    "warped" and "blend_mask") for face crops `[B, R, R, 3]` (whose own landmarks are
    `source_landmarks`, `[B, 68, 2]` or `[68, 2]` for all) posed by crop-space landmarks `[B, 68, 2]`."""
    landmarks = np.asarray(landmarks, np.float32)
    source_landmarks = np.broadcast_to(np.asarray(source_landmarks, np.float32), landmarks.shape)
    masks = render_masks(landmarks, self.resolution, per_part=self.model.mask_per_part)
    return self.model.outputs(np.asarray(crops), masks, source_landmarks, landmarks)

  def generate(self, crops: np.ndarray, source_landmarks: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The generated faces `[B, R, R, 3]` of `generate_outputs`."""
    return self.generate_outputs(crops, source_landmarks, landmarks)["generated"]

  def face_outputs(self, source_crop: np.ndarray, source_landmarks: np.ndarray,
                   driving_landmarks: np.ndarray) -> dict:
    """`generate_outputs` for one aligned frame: the source face crop `[S, S, 3]` (any size S;
    resized to the model's resolution and back) in the pose of `driving_landmarks` (`[68, 2]`,
    pixels of that crop, already transferred); each image `[S, S, 3]` uint8."""
    size, r = source_crop.shape[0], self.resolution
    if size == r:
      out = self.generate_outputs(source_crop[None], np.asarray(source_landmarks)[None],
                                  np.asarray(driving_landmarks)[None])
      return {k: v[0] for k, v in out.items()}
    from PIL import Image  # pylint: disable=import-outside-toplevel
    crop = np.asarray(Image.fromarray(source_crop).resize((r, r), Image.BICUBIC))
    lm = layout.rescale(np.asarray(driving_landmarks, np.float64), r / size)
    src_lm = layout.rescale(np.asarray(source_landmarks, np.float64), r / size)
    out = self.generate_outputs(crop[None], src_lm[None].astype(np.float32), lm[None].astype(np.float32))
    return {k: np.asarray(Image.fromarray(v[0]).resize((size, size), Image.BICUBIC)) for k, v in out.items()}

  def reenact_face(self, source_crop: np.ndarray, source_landmarks: np.ndarray,
                   driving_landmarks: np.ndarray) -> np.ndarray:
    """The generated face of `face_outputs`. Evaluation's model method calls this."""
    return self.face_outputs(source_crop, source_landmarks, driving_landmarks)["generated"]

  def _finish(self, source: SourceFace, face: np.ndarray, landmarks: np.ndarray, blend: bool,
              paste_back: bool) -> np.ndarray:
    if blend:  # mask 3 from the landmarks of the output itself, found where they were asked for
      found = self.detector.landmarks_in_box(face, self.detector.box_from_landmarks(landmarks))
      face = detail_blend.detail_blend(face, source.crop, found, source.landmarks)
    if not paste_back:
      return face
    # The mask covers the source face and the generated one, so neither shows beside the other.
    return pb.paste_back(source.image, face, source.transform, [source.landmarks, landmarks],
                         color_match=self.color_match)

  # Images ------------------------------------------------------------------------------------
  def reenact_image(self, source_image: np.ndarray, driving_image: np.ndarray, *, blend: bool = False,
                    paste_back: bool = True) -> np.ndarray:
    """The source person in the pose of the driving photo (absolute motion moved onto the source
    face's box). Returns the full source photo with the face replaced, or the crop."""
    source = self.prepare_source(source_image)
    drv = _largest_face_landmarks(self.detector, np.asarray(driving_image), "the driving image")
    lm = source.transform.apply(_align_onto(drv, source.photo_landmarks))
    return self._finish(source, self.reenact_face(source.crop, source.landmarks, lm), lm, blend, paste_back)

  def reenact_pairs(self, sources: Sequence[np.ndarray], drivings: Sequence[np.ndarray], **kwargs) -> list:
    """Pairs in order (f-i, g-j, h-k); one source against many poses when `sources` has one image."""
    if len(sources) == 1:
      sources = list(sources) * len(drivings)
    if len(sources) != len(drivings):
      raise ValueError(f"{len(sources)} source images but {len(drivings)} driving images: pair them in "
                       "order, or give one source for all")
    return [self.reenact_image(s, d, **kwargs) for s, d in zip(sources, drivings)]

  # Video -------------------------------------------------------------------------------------
  def transfer_motion(self, source: SourceFace, driving: np.ndarray, found: np.ndarray,
                      motion: str) -> np.ndarray:
    """Per-frame crop-space landmarks `[T, 68, 2]` from the driving clip's frame landmarks."""
    reference = driving[int(np.argmax(found))]
    src_frame = source.photo_landmarks
    if motion == "absolute":
      out = _align_onto(driving, src_frame, reference=reference)
    else:
      out = motion_lib.transfer(src_frame, driving, reference, motion)
    return source.transform.apply(out)

  def reenact_frames(self, source: SourceFace, driving_landmarks: np.ndarray, found: np.ndarray, *,
                     motion: str = "relative", blend: bool = False, paste_back: bool = True,
                     batch_size: int = 8, progress: bool = True) -> Iterable[np.ndarray]:
    """Yields output frames for per-frame driving landmarks `[T, 68, 2]` (frame pixels)."""
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    lms = self.transfer_motion(source, driving_landmarks, found, motion)
    bar = tqdm(total=len(lms), unit="frame", disable=not progress, desc="reenact")
    for start in range(0, len(lms), batch_size):
      chunk = lms[start:start + batch_size]
      faces = self.generate(np.repeat(source.crop[None], len(chunk), 0), source.landmarks, chunk)
      bar.update(len(chunk))
      if start + batch_size >= len(lms):
        bar.close()
      for face, lm in zip(faces, chunk):
        yield self._finish(source, face, lm, blend, paste_back)

  def reenact_video(self, source_image: np.ndarray, driving_path: str, output_path: str, *,
                    motion: str = "relative", blend: bool = False, paste_back: bool = True,
                    side_by_side: bool = False, detect_every: int = 5, smoothing: bool = True,
                    max_frames: Optional[int] = None, overwrite: bool = False, progress: bool = True,
                    grid_path: Optional[str] = None, grid_frames: int = 5) -> VideoReport:
    """Reenacts `source_image` with every frame of the driving video; the output keeps the
    driving clip's frame rate and audio. Frames without a face reuse the last good landmarks
    (counted in the report); a clip with no face at all raises NoFaceError. `grid_path` also
    writes a PNG of `grid_frames` evenly spaced frames (figure.reenactment_grid)."""
    if os.path.exists(output_path) and not overwrite:
      raise FileExistsError(f"{output_path} exists; pass overwrite=True (--overwrite) to replace it")
    source = self.prepare_source(source_image)
    info = video_io.probe(driving_path)
    # The default video detector (HOG, no slow CNN fallback on every faceless frame).
    track = track_video(driving_path, None, detect_every=detect_every, smoothing=smoothing,
                        max_frames=max_frames, progress=progress)
    landmarks = fill_missing(track.landmarks, track.found)
    missing = int((~track.found).sum())
    if missing:
      logging.warning("%s: no face in %d of %d frames; they reuse the last good landmarks", driving_path, missing,
                      len(track.found))
    frames = self.reenact_frames(source, landmarks, track.found, motion=motion, blend=blend, paste_back=paste_back,
                                 progress=progress)
    if side_by_side:
      frames = (side_by_side_frame([source.image, d, o])
                for d, o in zip(video_io.read_frames(driving_path, max_frames), frames))
    count = video_io.write_video(output_path, frames, info.fps, audio_from=driving_path)
    if grid_path:
      self.write_grid(grid_path, source, driving_path, track, landmarks, motion=motion, blend=blend,
                      num_frames=grid_frames)
    return VideoReport(output_path, count, float(info.fps), missing, info.has_audio, grid_path)

  def write_grid(self, path: str, source: SourceFace, driving_path: str, track, landmarks: np.ndarray, *,
                 motion: str = "relative", blend: bool = False, num_frames: int = 5) -> str:
    """PNG: the source crop, then `num_frames` evenly spaced driving-frame crops (one still box
    for the clip) over the generated faces for them."""
    idx = figure.sample_indices(len(landmarks), num_frames)
    lms = self.transfer_motion(source, landmarks, track.found, motion)[idx]
    faces = self.generate(np.repeat(source.crop[None], len(idx), 0), source.landmarks, lms)
    faces = [self._finish(source, f, lm, blend, paste_back=False) for f, lm in zip(faces, lms)]
    box = crop_lib.video_crop_box(track.landmarks, track.found, expand=self.crop_scale)
    wanted = set(int(i) for i in idx)
    driving = [crop_lib.crop_and_resize(frame, box, self.resolution)[0]
               for i, frame in enumerate(video_io.read_frames(driving_path, int(idx[-1]) + 1)) if i in wanted]
    return figure.save_png(figure.reenactment_grid(source.crop, driving, faces, self.resolution), path)


def fill_missing(landmarks: np.ndarray, found: np.ndarray) -> np.ndarray:
  """Frames without a face take the last good frame's landmarks (leading ones the first good)."""
  out = np.array(landmarks, np.float32, copy=True)
  good = np.flatnonzero(found)
  if good.size == 0:
    raise ValueError("no frame has a face")
  last = good[0]
  for i in range(len(out)):
    if found[i]:
      last = i
    else:
      out[i] = out[last]
  return out


def side_by_side_frame(images: Sequence[np.ndarray], height: Optional[int] = None) -> np.ndarray:
  """Images resized to one height (default: the first's) and placed left to right."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  height = height or images[0].shape[0]
  resized = []
  for im in images:
    w = max(1, int(round(im.shape[1] * height / im.shape[0])))
    resized.append(np.asarray(Image.fromarray(np.asarray(im)).resize((w, height), Image.BICUBIC)))
  return np.concatenate(resized, axis=1)
