"""One input file -> `frames.PreparedFile`: sampled frames, landmarks, crop, masks, PNGs.

Clips: every `frame_step`-th frame, at most `max_frames`; landmarks by `landmarks.video` on every
frame up to the last kept one (detect every N frames, track in between, smoothed); one still box
for the clip (`crop.video_crop_box`); kept frames without a face are dropped (noted). Photos: the
largest detected face (noted when there are several), its own crop box (`crop.photo_crop_box`).

Face size = longer side of the landmarks' bounding box in the original frame (median over a
clip); below `min_face_size` the file is skipped as "too small". A file that cannot be decoded is
"unreadable", one without any face "no face".
"""

import functools

import numpy as np

from facegen_jax.data import frames as frames_lib
from facegen_jax.io import images as images_lib
from facegen_jax.io import paths
from facegen_jax.landmarks import crop as crop_lib
from facegen_jax.landmarks import detectors
from facegen_jax.landmarks import masks as masks_lib
from facegen_jax.landmarks import video as video_lib


@functools.lru_cache(maxsize=4)
def _detector(backend: str, for_video: bool):
  """Clips skip dlib's slow CNN fallback (a missed frame is tracked or dropped, not worth 1-2 s)."""
  if backend == "dlib":
    return detectors.create_detector("dlib", cnn_fallback=not for_video)
  return detectors.create_detector(backend)


def _face_size(landmarks: np.ndarray) -> float:
  pts = np.asarray(landmarks, np.float64)
  return float(np.max(pts.max(-2) - pts.min(-2), axis=-1).max()) if pts.ndim == 2 else float(
      np.median(np.max(pts.max(-2) - pts.min(-2), axis=-1)))


def _encode(crops, crop_landmarks, resolution: int, options) -> dict:
  """Face crops as options.image_format; masks always PNG (exact, and they compress to little)."""
  images, masks, part_masks = [], [], []
  for img, lm in zip(crops, crop_landmarks):
    images.append(frames_lib.encode_image(img, options.image_format, options.jpeg_quality))
    masks.append(frames_lib.encode_png(masks_lib.render_mask(lm, resolution)))
    part_masks.append(frames_lib.encode_png(frames_lib.tile_parts(masks_lib.render_mask(lm, resolution, per_part=True))))
  return {"images": images, "masks": masks, "part_masks": part_masks}


def prepare_file(inp, options):
  """`frames.PreparedFile` or `frames.Skipped` for `inp` (a `prepare.InputFile`) under `options`.
  An input at a URL is read from a temporary local copy (PyAV and the image loader read local files)."""
  with paths.local_copy(inp.path, what="input file") as local:
    return _prepare_local(inp, local, options)


def _prepare_local(inp, path: str, options):
  """`prepare_file` on the local file `path` holding `inp`."""
  skip = lambda reason, detail: frames_lib.Skipped(inp.rel, inp.identity, reason, detail)
  detector = _detector(options.detector, inp.is_video)
  r = options.resolution
  notes = []
  if inp.is_video:
    last = options.frame_step * (options.max_frames - 1)
    keep = lambda i: i % options.frame_step == 0 and i <= last
    try:
      track = video_lib.track_video(path, detector, detect_every=options.detect_every,
                                    smoothing=options.smoothing, max_frames=last + 1, keep_frame=keep)
    except video_lib.NoFaceError as e:
      return skip(frames_lib.SKIP_NO_FACE, str(e))
    except (ValueError, OSError) as e:
      return skip(frames_lib.SKIP_UNREADABLE, str(e))
    numbers = np.asarray(sorted(track.frames), np.int32)
    clip = [track.frames[int(n)] for n in numbers]
    found = np.asarray(track.found, bool)[numbers]
    if not found.any():
      return skip(frames_lib.SKIP_NO_FACE, f"no face in any of the {len(numbers)} sampled frames")
    if track.num_faces.max() > 1:
      notes.append(f"up to {int(track.num_faces.max())} faces in a frame; tracked the largest")
    lms = np.asarray(track.landmarks, np.float32)[numbers]
    size = _face_size(lms[found])
    if size < options.min_face_size:
      return skip(frames_lib.SKIP_TOO_SMALL, f"face {size:.0f} px < --min_face_size={options.min_face_size}")
    if not found.all():
      notes.append(f"{int((~found).sum())} of {len(numbers)} sampled frames without a face dropped")
    box = crop_lib.video_crop_box(lms, found, expand=options.crop_scale)
    crops, crop_lms = [], []
    for t in np.flatnonzero(found):
      crop, transform = crop_lib.crop_and_resize(clip[t], box, r)
      crops.append(crop)
      crop_lms.append(transform.apply(lms[t]))
    frame_numbers = numbers[found]
  else:
    try:
      image = images_lib.load_image(path)
    except (ValueError, OSError) as e:
      return skip(frames_lib.SKIP_UNREADABLE, str(e))
    faces = detector.detect(image)
    if not faces:
      return skip(frames_lib.SKIP_NO_FACE, f"the {options.detector} detector found no face in the "
                                           f"{image.shape[1]}x{image.shape[0]} image")
    if len(faces) > 1:
      notes.append(f"{len(faces)} faces found; took the largest")
    face = detectors.largest_face(faces)
    size = _face_size(face.landmarks)
    if size < options.min_face_size:
      return skip(frames_lib.SKIP_TOO_SMALL, f"face {size:.0f} px < --min_face_size={options.min_face_size}")
    crop, crop_lm, _ = crop_lib.crop_face(image, face.landmarks, r, expand=options.crop_scale)
    crops, crop_lms, frame_numbers = [crop], [crop_lm], np.zeros(1, np.int32)
  return frames_lib.PreparedFile(source=inp.rel, identity=inp.identity, video_id=inp.video_id, is_video=inp.is_video,
                                 frame_indices=np.asarray(frame_numbers, np.int32),
                                 landmarks=np.stack(crop_lms).astype(np.float32), notes=notes,
                                 **_encode(crops, crop_lms, r, options))
