"""Reenactment of files: one source photo with one driving photo or video (`reenact_file`, what
`facegen-reenact` and the web app run), and many pairs of them in one go (`run_batch`).

    pairs = plan_pairs("photos/", "clips/", "out/")             # every photo with every driver
    rows = run_batch(Reenactor.from_checkpoint("weights/demo_128"), pairs, Options(), "out/report.csv")

A batch writes one row per pair into its report (`REPORT_FIELDS`: the output, its frames, the
frames without a face, the time, or why the pair was skipped) as each pair ends; a pair whose
files are bad (missing, unreadable, no face, no frames) is skipped with that reason and the rest
go on; an output that exists is kept unless `overwrite`.
"""

import copy
import csv
import dataclasses
import os
import time
from typing import List, Optional, Sequence

from absl import logging
from PIL import Image

from facegen_jax.inference.personalize import personalize
from facegen_jax.inference.reenactor import Reenactor, side_by_side_frame
from facegen_jax.io.video import VIDEO_EXTENSIONS
from facegen_jax.landmarks import load_image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
REPORT_FIELDS = ("source", "driving", "output", "status", "frames", "frames_without_face", "seconds", "reason")
# What a bad input raises: missing files (FileNotFoundError is an OSError), unreadable or faceless
# ones (ValueError; NoFaceError is one), images past PIL's decompression-bomb limit.
INPUT_ERRORS = (OSError, ValueError, Image.DecompressionBombError)


@dataclasses.dataclass(frozen=True)
class Options:
  """How a pair is reenacted (the flags of `facegen-reenact`, the controls of the web app)."""

  motion: str = "relative"  # driving videos: "relative" (to their first frame) or "absolute"
  blend: bool = False  # detail blend (docs/method.md)
  paste_back: bool = True  # the face pasted back into the full photo, else the crop
  color_match: bool = False  # paste-back matches the face's colours to the photo's
  side_by_side: bool = False  # source | driving | output
  finetune_steps: int = 0  # one-shot personalization on the source photo first
  max_frames: Optional[int] = None  # only the first N driving frames
  detect_every: int = 5  # videos: run the face detector every N frames, track in between
  smoothing: bool = True  # videos: temporal smoothing of the driving landmarks
  grid_frames: int = 5  # videos: driving frames in the grid picture


@dataclasses.dataclass(frozen=True)
class Result:
  """What `reenact_file` wrote."""

  output: str
  kind: str  # "image" or "video"
  frames: int
  frames_without_face: int = 0
  fps: Optional[float] = None
  has_audio: bool = False
  grid: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Pair:
  source: str
  driving: str
  output: str


def file_kind(path: str) -> str:
  """"image" or "video" by the extension of `path`; ValueError naming the known ones otherwise."""
  ext = os.path.splitext(path)[1].lower()
  if ext in VIDEO_EXTENSIONS:
    return "video"
  if ext in IMAGE_EXTENSIONS:
    return "image"
  raise ValueError(f"{path}: unknown extension {ext!r}; images: {', '.join(IMAGE_EXTENSIONS)}, "
                   f"videos: {', '.join(VIDEO_EXTENSIONS)}")


def for_source(reenactor: Reenactor, source_image, options: Options) -> Reenactor:
  """The reenactor a source is run with: personalized on it when `options.finetune_steps` > 0,
  with the paste-back colour matching of `options` (the given reenactor is left as it is)."""
  if options.finetune_steps > 0:
    reenactor = personalize(reenactor, source_image, options.finetune_steps)
  else:
    reenactor = copy.copy(reenactor)
  reenactor.color_match = options.color_match
  return reenactor


def _save_image(path: str, image) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".partial" + os.path.splitext(path)[1]
  Image.fromarray(image).save(tmp)
  os.replace(tmp, path)


def reenact_file(reenactor: Reenactor, source_image, driving_path: str, output_path: str, options: Options, *,
                 overwrite: bool = False, grid_path: Optional[str] = None, progress: bool = True) -> Result:
  """Reenacts the photo `source_image` (`[H, W, 3]` uint8, or its path) with the photo or video at
  `driving_path` into `output_path` (of the same kind: an image, or a video with the driving
  clip's frame rate and audio). `reenactor` is used as given (see `for_source`). `grid_path`: a
  PNG of a few driving frames over their outputs (driving videos only)."""
  driving_kind, output_kind = file_kind(driving_path), file_kind(output_path)
  if driving_kind != output_kind:
    raise ValueError(f"a driving {driving_kind} makes an output {driving_kind}: give {output_path} "
                     f"{'a video' if driving_kind == 'video' else 'an image'} extension")
  if grid_path and driving_kind != "video":
    raise ValueError("the grid picture draws driving frames over their outputs: it needs a driving video")
  if os.path.exists(output_path) and not overwrite:
    raise FileExistsError(f"{output_path} exists; --overwrite replaces it")
  if isinstance(source_image, (str, os.PathLike)):
    source_image = load_image(source_image)
  if driving_kind == "image":
    driving_image = load_image(driving_path)
    out = reenactor.reenact_image(source_image, driving_image, blend=options.blend, paste_back=options.paste_back)
    if options.side_by_side:
      out = side_by_side_frame([source_image, driving_image, out])
    _save_image(output_path, out)
    return Result(output_path, "image", 1)
  report = reenactor.reenact_video(
      source_image, driving_path, output_path, motion=options.motion, blend=options.blend,
      paste_back=options.paste_back, side_by_side=options.side_by_side, detect_every=options.detect_every,
      smoothing=options.smoothing, max_frames=options.max_frames, overwrite=overwrite, progress=progress,
      grid_path=grid_path, grid_frames=options.grid_frames)
  return Result(report.output, "video", report.frames, report.frames_without_face, report.fps, report.has_audio,
                report.grid)


def _media_files(folder: str, kinds: Sequence[str]) -> List[str]:
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"folder {folder} does not exist")
  found = []
  for name in sorted(os.listdir(folder)):
    path = os.path.join(folder, name)
    try:
      if os.path.isfile(path) and file_kind(path) in kinds:
        found.append(path)
    except ValueError:
      continue  # not a photo or a clip (a report, a README): not an input
  return found


def output_name(source: str, driving: str) -> str:
  """`<source stem>__<driving stem>` with .mp4 for a driving video, .png for a driving photo."""
  stem = lambda p: os.path.splitext(os.path.basename(p))[0]  # pylint: disable=unnecessary-lambda-assignment
  return f"{stem(source)}__{stem(driving)}{'.mp4' if file_kind(driving) == 'video' else '.png'}"


def plan_pairs(source_dir: Optional[str], driving_dir: Optional[str], output_dir: str,
               pairs_csv: Optional[str] = None, source: Optional[str] = None) -> List[Pair]:
  """The pairs of a batch, in order.

  Args:
    source_dir: folder of source photos.
    driving_dir: folder of driving photos and videos.
    output_dir: where the outputs go (named by `output_name` unless the CSV names them).
    pairs_csv: a CSV with a header and columns `source`, `driving` (and optionally `output`); paths
      relative to `source_dir` / `driving_dir` (default: the CSV's folder) / `output_dir`. Without
      it: every photo of `source_dir` (or the one photo `source`) with every file of `driving_dir`.
    source: one source photo for every driver (instead of `source_dir`).

  Raises:
    FileNotFoundError: a folder or the CSV is missing. ValueError: the CSV lacks its columns, or
    there is no pair at all. (A pair whose files are missing is planned; `run_batch` skips it.)
  """
  if pairs_csv is not None:
    if not os.path.isfile(pairs_csv):
      raise FileNotFoundError(f"pairs file {pairs_csv} does not exist")
    base = os.path.dirname(os.path.abspath(pairs_csv))
    with open(pairs_csv, newline="", encoding="utf-8") as f:
      rows = list(csv.DictReader(f))
    if not rows or not {"source", "driving"} <= set(rows[0]):
      raise ValueError(f"{pairs_csv} needs a header row with the columns source,driving (and optionally output) "
                       "and one row per pair")
    pairs = []
    for row in rows:
      src = os.path.join(source_dir or base, row["source"].strip())
      drv = os.path.join(driving_dir or base, row["driving"].strip())
      out = (row.get("output") or "").strip()
      try:
        out = os.path.join(output_dir, out or output_name(src, drv))
      except ValueError:  # an unknown extension: the pair is reported as skipped with that reason
        out = os.path.join(output_dir, os.path.basename(src) + "__" + os.path.basename(drv))
      pairs.append(Pair(src, drv, out))
  else:
    if driving_dir is None:
      raise ValueError("a batch needs a folder of drivers (--driving_dir) or a pairs file (--pairs)")
    sources = [source] if source is not None else _media_files(source_dir, ("image",))
    drivers = _media_files(driving_dir, ("image", "video"))
    pairs = [Pair(s, d, os.path.join(output_dir, output_name(s, d))) for s in sources for d in drivers]
  if not pairs:
    raise ValueError(f"no pairs: no photos in {source_dir or source} or no photos/videos in {driving_dir}")
  return pairs


@dataclasses.dataclass
class Row:
  """One line of the report."""

  source: str
  driving: str
  output: str
  status: str  # "done", "exists" (kept; --overwrite replaces it) or "skipped" (bad input: see reason)
  frames: Optional[int] = None
  frames_without_face: Optional[int] = None
  seconds: Optional[float] = None
  reason: str = ""


def run_batch(reenactor: Reenactor, pairs: Sequence[Pair], options: Options, report_path: str, *,
              overwrite: bool = False, progress: bool = True) -> List[Row]:
  """Runs every pair (one progress bar over the pairs), writing each one's Row into the CSV at
  `report_path` as it ends. A source is loaded (and personalized) once for the pairs in a row
  that share it. Returns the rows."""
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  os.makedirs(os.path.dirname(os.path.abspath(report_path)), exist_ok=True)
  rows, current = [], (None, None, None)  # (source path, its image, its reenactor)
  with open(report_path, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, REPORT_FIELDS)
    writer.writeheader()
    for pair in tqdm(pairs, unit="pair", desc="reenact", disable=not progress):
      start = time.perf_counter()
      row = Row(pair.source, pair.driving, pair.output, "done")
      if os.path.exists(pair.output) and not overwrite:
        row.status, row.reason = "exists", "the output exists; --overwrite replaces it"
      else:
        try:
          if current[0] != pair.source:
            current = (None, None, None)  # a bad source is not retried as the previous one
            image = load_image(pair.source)
            current = (pair.source, image, for_source(reenactor, image, options))
          result = reenact_file(current[2], current[1], pair.driving, pair.output, options, overwrite=overwrite,
                                progress=False)
          row.frames, row.frames_without_face = result.frames, result.frames_without_face
        except INPUT_ERRORS as e:
          row.status, row.reason = "skipped", str(e)
          logging.warning("skipped %s with %s: %s", pair.source, pair.driving, e)
        row.seconds = round(time.perf_counter() - start, 2)
      writer.writerow(dataclasses.asdict(row))
      f.flush()
      rows.append(row)
  return rows
