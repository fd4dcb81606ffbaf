"""Prepared frames of one input file (a clip or a photo), and their on-disk cache.

`prepare_data.py` turns every input file into a `PreparedFile`: the sampled frames cropped to a
square of side R, each with its landmarks `[68, 2]` in crop pixels and its masks, all images
already PNG-encoded (the TFDS builder stores the bytes as they are). A file that cannot be used
becomes a `Skipped` record with its reason. Both are cached per input file in a folder so a rerun
skips finished files:

  <cache>/<key>.npz   the arrays (PNG bytes concatenated + offsets, landmarks, frame numbers)
  <key>.json          the metadata; written last (atomic rename; at a URL one upload), so its
                      presence marks the entry complete. A crash mid-write leaves no .json and
                      the file is redone.
"""

import dataclasses
import hashlib
import io
import json
import pathlib

import numpy as np
from PIL import Image

from facegen_jax.io import paths

SKIP_UNREADABLE = "unreadable"
SKIP_NO_FACE = "no face"
SKIP_TOO_SMALL = "too small"
SKIP_REASONS = (SKIP_UNREADABLE, SKIP_NO_FACE, SKIP_TOO_SMALL)


@dataclasses.dataclass
class PreparedFile:
  """The usable frames of one input file.

  Attributes:
    source: the input file's path relative to the input folder.
    identity: the person's name (the train/test split key).
    video_id: unique id of the clip (photos: one "video" of one frame).
    is_video: True for clips, False for photos.
    frame_indices: `[N]` int32, the frame number of each kept frame in the clip (photos: 0).
    landmarks: `[N, 68, 2]` float32, (x, y) in crop pixels.
    images: N PNG-encoded `[R, R, 3]` crops.
    masks: N PNG-encoded `[R, R, 1]` face masks (all parts in one channel).
    part_masks: N PNG-encoded `[R, R * P, 1]` per-part masks, the P parts tiled left to right.
    notes: things a user may want to know (several faces seen, frames without a face dropped).
  """
  source: str
  identity: str
  video_id: str
  is_video: bool
  frame_indices: np.ndarray
  landmarks: np.ndarray
  images: list
  masks: list
  part_masks: list
  notes: list = dataclasses.field(default_factory=list)

  @property
  def num_frames(self) -> int:
    return len(self.images)


@dataclasses.dataclass
class Skipped:
  """An input file that gave no frames: `reason` is one of SKIP_REASONS, `detail` says why."""
  source: str
  identity: str
  reason: str
  detail: str


def encode_png(array: np.ndarray, compress_level: int = 1) -> bytes:
  """PNG bytes of a `[H, W, C]` uint8 array (C = 1 or 3). Level 1: fast, and decoding is as fast."""
  array = np.asarray(array, np.uint8)
  img = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
  buf = io.BytesIO()
  img.save(buf, format="PNG", compress_level=compress_level)
  return buf.getvalue()


IMAGE_FORMATS = ("png", "jpeg")


def encode_jpeg(array: np.ndarray, quality: int = 95) -> bytes:
  """JPEG bytes of a `[H, W, 3]` uint8 array (4:4:4 chroma: no colour bleeding at face edges)."""
  buf = io.BytesIO()
  Image.fromarray(np.asarray(array, np.uint8)).save(buf, format="JPEG", quality=quality, subsampling=0)
  return buf.getvalue()


def encode_image(array: np.ndarray, image_format: str, jpeg_quality: int = 95) -> bytes:
  """`image_format` "png" (lossless) or "jpeg" (lossy, about 3x faster to decode)."""
  if image_format == "png":
    return encode_png(array)
  if image_format == "jpeg":
    return encode_jpeg(array, jpeg_quality)
  raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")


def decode_image(data: bytes, channels: int) -> np.ndarray:
  """`[H, W, channels]` uint8 array from PNG or JPEG (any PIL-readable) bytes."""
  with Image.open(io.BytesIO(data)) as img:
    img = img.convert("L" if channels == 1 else "RGB")
    arr = np.asarray(img)
  return arr[..., None] if channels == 1 else arr


def tile_parts(part_mask: np.ndarray) -> np.ndarray:
  """`[R, R, P]` -> `[R, R * P, 1]`: the parts side by side, so one grayscale PNG holds them."""
  r, _, p = part_mask.shape
  return np.ascontiguousarray(part_mask.transpose(0, 2, 1).reshape(r, p * r, 1))


def untile_parts(tiled: np.ndarray, num_parts: int) -> np.ndarray:
  """Inverse of `tile_parts`: `[R, R * P, 1]` -> `[R, R, P]`."""
  r = tiled.shape[0]
  return np.ascontiguousarray(tiled.reshape(r, num_parts, r).transpose(0, 2, 1))


def _pack(chunks: list) -> tuple:
  offsets = np.cumsum([0] + [len(c) for c in chunks]).astype(np.int64)
  return np.frombuffer(b"".join(chunks), np.uint8), offsets


def _unpack(data: np.ndarray, offsets: np.ndarray) -> list:
  raw = data.tobytes()
  return [raw[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]


class FrameCache:
  """The per-input-file cache in `root`, a local folder or a URL (see module docstring)."""

  def __init__(self, root):
    self.root = paths.as_path(root)
    self.root.mkdir(parents=True, exist_ok=True)

  @staticmethod
  def key(source: str, fingerprint: str) -> str:
    """Cache key of an input file: its relative path plus a fingerprint of its content & params."""
    digest = hashlib.sha256(f"{source}\0{fingerprint}".encode()).hexdigest()[:24]
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in pathlib.Path(source).stem)[:40]
    return f"{stem}-{digest}"

  def has(self, key: str) -> bool:
    return (self.root / f"{key}.json").exists()

  def save(self, key: str, result) -> None:
    """Stores a PreparedFile or a Skipped under `key` (arrays first, then the marker .json)."""
    if isinstance(result, PreparedFile):
      arrays = {"landmarks": np.asarray(result.landmarks, np.float32),
                "frame_indices": np.asarray(result.frame_indices, np.int32)}
      for name in ("images", "masks", "part_masks"):
        arrays[f"{name}_data"], arrays[f"{name}_offsets"] = _pack(getattr(result, name))
      buf = io.BytesIO()  # np.savez seeks, which a bucket's upload stream cannot
      np.savez(buf, **arrays)
      paths.write_atomically(self.root / f"{key}.npz", lambda f: f.write(buf.getvalue()))
      meta = {"status": "ok", "source": result.source, "identity": result.identity, "video_id": result.video_id,
              "is_video": result.is_video, "num_frames": result.num_frames, "notes": list(result.notes)}
    else:
      meta = {"status": "skipped", **dataclasses.asdict(result)}
    paths.write_atomically(self.root / f"{key}.json", lambda f: f.write(json.dumps(meta, indent=1).encode()))

  def load_meta(self, key: str) -> dict:
    return json.loads((self.root / f"{key}.json").read_text())

  def load(self, key: str):
    """The PreparedFile or Skipped stored under `key`."""
    meta = self.load_meta(key)
    if meta["status"] == "skipped":
      return Skipped(meta["source"], meta["identity"], meta["reason"], meta["detail"])
    with np.load(io.BytesIO((self.root / f"{key}.npz").read_bytes())) as z:
      lists = {name: _unpack(z[f"{name}_data"], z[f"{name}_offsets"]) for name in ("images", "masks", "part_masks")}
      return PreparedFile(source=meta["source"], identity=meta["identity"], video_id=meta["video_id"],
                          is_video=meta["is_video"], frame_indices=z["frame_indices"], landmarks=z["landmarks"],
                          notes=meta["notes"], **lists)
