"""The reenactment product: one source photo + a driving photo, video or batch -> the result.

    from facegen_jax.inference import Reenactor
    r = Reenactor.from_checkpoint("workdirs/demo")          # a training workdir or an export
    out = r.reenact_image(load_image("me.jpg"), load_image("pose.jpg"))
    r.reenact_video(load_image("me.jpg"), "driving.mp4", "out.mp4")

Pipeline per driving frame: landmarks (detect + track + temporal smoothing on video) -> motion
transfer (relative to the first driving frame by default on video, so the output keeps the
source's face shape; `motion="absolute"` uses the driving landmarks as they are, moved onto the
source's face box) -> face mask -> generator -> optional detail blend (docs/method.md, Detail blend) -> paste-back into
the full source photo through a feathered mask (or the crop alone). On video these run as a
bounded pipeline of threads that decodes the clip once (`video_frames`).

The generator may be this package's (a workdir or msgpack export) or an exported program
(`model.onnx` on onnxruntime, `model.jax` through jax.export): `runtimes.load_generator`.
"""

import dataclasses
import os
from typing import Iterable, Optional, Sequence

import numpy as np
from absl import logging

from facegen_jax.inference import detail_blend, figure, motion as motion_lib, paste_back as pb, runtimes, stages
from facegen_jax.inference.generator_model import GeneratorModel
from facegen_jax.io import video as video_io
from facegen_jax.landmarks import crop as crop_lib, layout
from facegen_jax.landmarks.detectors import create_detector
from facegen_jax.landmarks.masks import render_masks
from facegen_jax.landmarks.video import NoFaceError, make_tracker


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
    model: the generator (GeneratorModel, or an exported program's `runtimes.ExportedGenerator`).
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
  def from_checkpoint(cls, path: str, use_ema: bool = True, runtime: str = "auto", **kwargs) -> "Reenactor":
    """From a training workdir (newest checkpoint), an export folder, or an exported program
    (`model.onnx`, `model.jax`); `runtime` ("auto", "jax", "jax_export", "onnxruntime") as
    `runtimes.load_generator` picks it."""
    return cls(runtimes.load_generator(path, use_ema=use_ema, runtime=runtime), **kwargs)

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
    """Per-frame crop-space landmarks `[T, 68, 2]` from the driving clip's frame landmarks
    (relative to the first frame with a face)."""
    return self._transfer(source, driving, driving[int(np.argmax(found))], motion)

  def _transfer(self, source: SourceFace, driving: np.ndarray, reference: np.ndarray, motion: str) -> np.ndarray:
    """`transfer_motion` for frames `[T, 68, 2]` given the reference frame's landmarks (frame by
    frame arithmetic: any run of frames gives the values the whole clip gives)."""
    src_frame = source.photo_landmarks
    if motion == "absolute":
      out = _align_onto(driving, src_frame, reference=reference)
    else:
      out = motion_lib.transfer(src_frame, driving, reference, motion)
    return source.transform.apply(out)

  def reenact_frames(self, source: SourceFace, driving_landmarks: np.ndarray, found: np.ndarray, *,
                     motion: str = "relative", blend: bool = False, paste_back: bool = True,
                     batch_size: int = 8, progress: bool = True) -> Iterable[np.ndarray]:
    """Yields output frames for per-frame driving landmarks `[T, 68, 2]` (frame pixels), one stage
    after the other (`reenact_video` runs the same steps as a pipeline)."""
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

  def video_frames(self, source: SourceFace, driving_path: str, clip: "ClipLandmarks", *, motion: str = "relative",
                   blend: bool = False, paste_back: bool = True, side_by_side: bool = False, detect_every: int = 5,
                   smoothing: bool = True, max_frames: Optional[int] = None, batch_size: int = 8,
                   queue_size: int = 8, keep_frames: Sequence[int] = ()) -> Iterable[np.ndarray]:
    """The output frames of `reenact_video`, made by a bounded pipeline that decodes the clip once.

    Three threads joined by queues of `queue_size` (inference/stages.py), the caller's loop (the
    encoder) the fourth: decode + landmark tracking (the tracker of `track_video`) -> motion
    transfer + generator in batches of `batch_size` -> detail blend, paste-back and side-by-side.
    At most about `3 * queue_size + 2 * batch_size` frames are in memory, whatever the clip's
    length; the frames before the first face wait for it (their landmarks are the first good
    frame's). The outputs equal `reenact_frames` on `track_video`'s landmarks (the same batches).
    `clip` collects the per-frame landmarks and found flags, and the decoded frames of
    `keep_frames` (by index), for the report and the grid.
    """
    tracker = make_tracker(None, fps=float(video_io.probe(driving_path).fps), detect_every=detect_every,
                           smoothing=smoothing)
    keep = set(int(i) for i in keep_frames)

    def track(frames):
      for i, frame in enumerate(frames):
        step = tracker.update(frame)
        clip.add(step.landmarks, frame if i in keep else None, i)
        yield i, (frame if side_by_side else None), step.landmarks

    def generate(items):
      batch, reference, last = [], None, None
      for i, frame, lm in items:
        if lm is not None:
          if reference is None:  # the frames so far had no face: they take this one's landmarks
            reference = lm
            batch = [(j, f, lm) for j, f, _ in batch]
          last = lm
        batch.append((i, frame, last))
        if reference is not None and len(batch) >= batch_size:
          yield from self._generate_batch(source, batch[:batch_size], reference, motion)
          batch = batch[batch_size:]
      if reference is None:
        raise NoFaceError(f"no face found in any of the {clip.count} frames of {driving_path}; is a face visible "
                          "and at least ~80 px tall? (try a detector with a larger upsample)")
      while batch:
        yield from self._generate_batch(source, batch[:batch_size], reference, motion)
        batch = batch[batch_size:]

    def finish(items):
      for frame, face, lm in items:
        out = self._finish(source, face, lm, blend, paste_back)
        yield side_by_side_frame([source.image, frame, out]) if side_by_side else out

    return stages.pipelined(video_io.read_frames(driving_path, max_frames), [track, generate, finish], queue_size)

  def _generate_batch(self, source: SourceFace, batch: list, reference: np.ndarray, motion: str):
    """(frame, face, crop landmarks) for each (index, frame, frame landmarks) of `batch`."""
    lms = self._transfer(source, np.stack([lm for _, _, lm in batch]), reference, motion)
    faces = self.generate(np.repeat(source.crop[None], len(batch), 0), source.landmarks, lms)
    return [(frame, face, lm) for (_, frame, _), face, lm in zip(batch, faces, lms)]

  def reenact_video(self, source_image: np.ndarray, driving_path: str, output_path: str, *,
                    motion: str = "relative", blend: bool = False, paste_back: bool = True,
                    side_by_side: bool = False, detect_every: int = 5, smoothing: bool = True,
                    max_frames: Optional[int] = None, overwrite: bool = False, progress: bool = True,
                    grid_path: Optional[str] = None, grid_frames: int = 5, queue_size: int = 8) -> VideoReport:
    """Reenacts `source_image` with every frame of the driving video; the output keeps the
    driving clip's frame rate and audio. Frames without a face reuse the last good landmarks
    (counted in the report); a clip with no face at all raises NoFaceError. `grid_path` also
    writes a PNG of `grid_frames` evenly spaced frames (figure.reenactment_grid). Decoding,
    tracking, generation, blend + paste-back and encoding overlap (`video_frames`); the clip is
    decoded once (the grid's frames are kept as they pass; only where the container's frame
    count was wrong are they read again)."""
    if os.path.exists(output_path) and not overwrite:
      raise FileExistsError(f"{output_path} exists; pass overwrite=True (--overwrite) to replace it")
    source = self.prepare_source(source_image)
    info = video_io.probe(driving_path)
    expected = min(info.num_frames, max_frames) if max_frames else info.num_frames
    grid_idx = figure.sample_indices(expected, grid_frames) if grid_path and expected > 0 else ()
    clip = ClipLandmarks()
    frames = self.video_frames(source, driving_path, clip, motion=motion, blend=blend, paste_back=paste_back,
                               side_by_side=side_by_side, detect_every=detect_every, smoothing=smoothing,
                               max_frames=max_frames, queue_size=queue_size, keep_frames=grid_idx)
    if progress:
      from tqdm import tqdm  # pylint: disable=import-outside-toplevel
      frames = tqdm(frames, total=expected or None, unit="frame", desc="reenact")
    count = video_io.write_video(output_path, frames, info.fps, audio_from=driving_path)
    missing = int((~clip.found).sum())
    if missing:
      logging.warning("%s: no face in %d of %d frames; they reuse the last good landmarks", driving_path, missing,
                      clip.count)
    if grid_path:
      idx = figure.sample_indices(clip.count, grid_frames)
      kept = clip.frames
      if set(int(i) for i in idx) - set(kept):  # the container's frame count was wrong
        kept = {i: f for i, f in enumerate(video_io.read_frames(driving_path, int(idx[-1]) + 1)) if i in set(idx)}
      self.write_grid(grid_path, source, kept, clip.landmarks, clip.found, motion=motion, blend=blend,
                      num_frames=grid_frames)
    return VideoReport(output_path, count, float(info.fps), missing, info.has_audio, grid_path)

  def write_grid(self, path: str, source: SourceFace, frames: dict, raw_landmarks: np.ndarray, found: np.ndarray,
                 *, motion: str = "relative", blend: bool = False, num_frames: int = 5) -> str:
    """PNG: the source crop, then `num_frames` evenly spaced driving-frame crops (one still box
    for the clip) over the generated faces for them. `frames`: the decoded driving frames at
    `figure.sample_indices(len(raw_landmarks), num_frames)` by index; `raw_landmarks` `[T, 68, 2]`
    (NaN where `found` is False)."""
    landmarks = fill_missing(raw_landmarks, found)
    idx = figure.sample_indices(len(landmarks), num_frames)
    lms = self.transfer_motion(source, landmarks, found, motion)[idx]
    faces = self.generate(np.repeat(source.crop[None], len(idx), 0), source.landmarks, lms)
    faces = [self._finish(source, f, lm, blend, paste_back=False) for f, lm in zip(faces, lms)]
    box = crop_lib.video_crop_box(raw_landmarks, found, expand=self.crop_scale)
    driving = [crop_lib.crop_and_resize(frames[int(i)], box, self.resolution)[0] for i in idx]
    return figure.save_png(figure.reenactment_grid(source.crop, driving, faces, self.resolution), path)


class ClipLandmarks:
  """What `Reenactor.video_frames` saw of the driving clip, frame by frame: landmarks `[T, 68, 2]`
  (NaN without a face), found `[T]`, and the frames it was asked to keep, by index."""

  def __init__(self):
    self._landmarks, self._found, self.frames = [], [], {}

  def add(self, landmarks: Optional[np.ndarray], frame: Optional[np.ndarray], index: int) -> None:
    self._found.append(landmarks is not None)
    self._landmarks.append(np.full((68, 2), np.nan, np.float32) if landmarks is None else landmarks)
    if frame is not None:
      self.frames[index] = frame

  @property
  def count(self) -> int:
    return len(self._found)

  @property
  def landmarks(self) -> np.ndarray:
    return np.asarray(self._landmarks, np.float32).reshape(-1, 68, 2)

  @property
  def found(self) -> np.ndarray:
    return np.asarray(self._found, bool)


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
