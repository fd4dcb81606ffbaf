"""Video reading and writing with PyAV, keeping the driving clip's frame rate and audio track.

Clips are read as they are displayed: a display rotation (the display matrix phones write for
portrait video, or ffmpeg's `-display_rotation`) is applied to every decoded frame, and `probe`
reports the displayed size. Written clips carry no rotation (their frames are upright).
"""

import dataclasses
import fractions
import itertools
import os
from typing import Iterable, Iterator, Optional

import numpy as np

# File extensions read as video clips (lower case), everywhere a path may be a clip or a photo.
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  """What a clip is: frame rate (exact fraction), frame count (estimated when the container
  does not say), size as displayed (after `rotation`), whether it carries an audio track, and the
  display rotation (degrees counterclockwise, a multiple of 90) the reader applies."""

  path: str
  fps: fractions.Fraction
  num_frames: int
  width: int
  height: int
  has_audio: bool
  rotation: int = 0


def _open(path: str):
  import av  # pylint: disable=import-outside-toplevel
  if not os.path.exists(path):
    raise FileNotFoundError(f"video {path} does not exist")
  try:
    container = av.open(path)
  except av.error.FFmpegError as e:  # pylint: disable=no-member
    raise ValueError(f"cannot read video {path}: {e}. Is it a complete video file (mp4, mov, avi, mkv, webm)?") from e
  if not container.streams.video:
    container.close()
    raise ValueError(f"{path} has no video stream")
  return container


def _quarter_turns(frame) -> int:
  """The frame's display rotation in counterclockwise quarter turns (0..3)."""
  degrees = getattr(frame, "rotation", 0) or 0
  return int(round(float(degrees) / 90.0)) % 4


def _upright(frame) -> np.ndarray:
  """`[H, W, 3]` uint8 RGB of a decoded frame, as displayed."""
  image = frame.to_ndarray(format="rgb24")
  turns = _quarter_turns(frame)
  return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def probe(path: str) -> VideoInfo:
  """Reads a clip's VideoInfo, decoding at most its first frame (for the display rotation)."""
  import av  # pylint: disable=import-outside-toplevel
  container = _open(path)
  try:
    stream = container.streams.video[0]
    fps = stream.average_rate or stream.guessed_rate or fractions.Fraction(25)
    frames = stream.frames
    if not frames and stream.duration is not None and stream.time_base is not None:
      frames = int(round(float(stream.duration * stream.time_base) * float(fps)))
    try:
      turns = _quarter_turns(next(container.decode(video=0)))
    except (StopIteration, av.error.FFmpegError):  # pylint: disable=no-member  # read_frames reports it
      turns = 0
    width, height = stream.codec_context.width, stream.codec_context.height
    if turns % 2:
      width, height = height, width
    return VideoInfo(path, fractions.Fraction(fps), int(frames or 0), width, height, bool(container.streams.audio),
                     rotation=90 * turns)
  finally:
    container.close()


def read_frames(path: str, max_frames: Optional[int] = None) -> Iterator[np.ndarray]:
  """Yields the clip's frames as `[H, W, 3]` uint8 RGB, as displayed (display rotation applied).
  A clip that fails to decode raises ValueError naming the file and the frame."""
  import av  # pylint: disable=import-outside-toplevel
  container = _open(path)
  count = 0
  try:
    for frame in container.decode(video=0):
      if max_frames is not None and count >= max_frames:
        return
      yield _upright(frame)
      count += 1
  except av.error.FFmpegError as e:  # pylint: disable=no-member
    raise ValueError(f"video {path} is damaged: decoding failed after frame {count}: {e}") from e
  finally:
    container.close()
  if count == 0:
    raise ValueError(f"video {path} has no decodable frames")


def write_video(path: str, frames: Iterable[np.ndarray], fps: fractions.Fraction,
                audio_from: Optional[str] = None, crf: int = 18) -> int:
  """Encodes `frames` (`[H, W, 3]` uint8 RGB) as H.264 at `fps`, copying the audio track of
  `audio_from` (if it has one) unchanged, up to the end of the last frame. Writes to a temporary file renamed on success, so a
  failure never leaves a half-written output. Returns the number of frames written."""
  import av  # pylint: disable=import-outside-toplevel
  frames = iter(frames)
  first = next(frames, None)
  if first is None:
    raise ValueError(f"no frames to write to {path}")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.partial{os.path.splitext(path)[1]}"
  out = av.open(tmp, mode="w")
  src = av.open(audio_from) if audio_from is not None else None
  count = 0
  try:
    stream = out.add_stream("libx264", rate=fractions.Fraction(fps))
    stream.pix_fmt = "yuv420p"
    stream.options = {"crf": str(crf)}
    stream.width, stream.height = first.shape[1] // 2 * 2, first.shape[0] // 2 * 2  # yuv420p: even sizes
    # Every stream must exist before the first packet is muxed (that writes the header).
    audio_in = src.streams.audio[0] if src is not None and src.streams.audio else None
    audio_out = out.add_stream_from_template(audio_in) if audio_in is not None else None
    for image in itertools.chain([first], frames):
      image = np.ascontiguousarray(image[:stream.height, :stream.width])
      for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
        out.mux(packet)
      count += 1
    for packet in stream.encode():
      out.mux(packet)
    if audio_in is not None:
      end = count / float(fps)  # seconds of video written
      for packet in src.demux(audio_in):
        if packet.dts is None:
          continue
        if packet.pts is not None and float(packet.pts * packet.time_base) >= end:
          break
        packet.stream = audio_out
        out.mux(packet)
  except BaseException:
    out.close()
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  finally:
    if src is not None:
      src.close()
  out.close()
  os.replace(tmp, path)
  return count
