"""From a folder of clips and photos to a FaceFrames TFDS dataset (the body of prepare_data.py).

The input folder and the output folder may each be a local path or a URL (`gs://bucket/x`):
paths go through etils.epath (`facegen_jax.io.paths`). An input file at a URL is decoded from a
temporary local copy; a URL output's cache and summary are written there directly, and its
dataset is built in a local temporary folder and then uploaded (ArrayRecord writes local files
only, google/array_record#120).

Steps:
1. `find_inputs`: every video (`VIDEO_EXTENSIONS`) and photo (`IMAGE_EXTENSIONS`) under the input
   folder. Identity: the file name's prefix before `__` if it has one
   (`lp_d18_d19_man__liveportrait__d18.mp4` -> `lp_d18_d19_man`); else, VoxCeleb-style
   `identity/video/clip.mp4` (3 or more levels deep), the top folder; else the file's folder
   name. Video id: the path relative to the input folder without its extension.
2. Each file is turned into a `frames.PreparedFile` by `extract.prepare_file` (frames, landmarks,
   crop, masks) in a pool of worker processes, with a progress bar (rate and ETA). Results,
   including "skipped" verdicts, are cached in `<output>/cache/<options>/`, keyed by the file's
   path, size, mtime and the options, so a rerun only processes new or changed files. Unexpected
   errors are reported as `error` and not cached (a rerun retries them; "skipped" verdicts such as
   `no face` are cached and only retried with `retry_skipped`).
3. The dataset is built from the cache into a temporary folder inside `<output>` (`.build-*`) and
   moved into place (`<output>/face_frames/r<R>/<version>`) only when complete; a failed build
   leaves the previous dataset (or nothing) behind, never a half-written split, and the next run
   removes the temporary folders of a killed one. A URL output gets the finished folder uploaded
   with its `dataset_info.json` last (`_publish`). If the cached files and split options did not
   change since the last build, the build is skipped.
4. `<output>/summary.json`, written by every run (also when no file was usable: then there is no
   dataset and `prepare_dataset` raises ValueError pointing at it): counts (files, frames,
   identities, per split) and every skipped file with its reason (`unreadable`, `no face`,
   `too small`, `error`) and detail, and notes (several faces: the largest was taken; frames
   without a face dropped).

Scale-out (`beam=True`): the per-file work runs inside the TFDS Apache Beam pipeline instead of
the local pool (each Beam worker processes files and fills the same cache if it is on a shared
file system). Locally it runs on Beam's DirectRunner (`beam_options` default:
`--runner=DirectRunner --direct_num_workers=0 --direct_running_mode=multi_processing`). On a
cluster pass the runner's options, with the input, output and cache on storage every worker can
read (GCS, HDFS, NFS) and facegen-jax installed on the workers (`--setup_file=./setup.py`):
  Dataflow: `--runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp`
  Spark:    `--runner=SparkRunner --spark_master_url=spark://HOST:7077` (or PortableRunner with a
            Spark job server: `--runner=PortableRunner --job_endpoint=HOST:8099`)
  Flink:    `--runner=FlinkRunner --flink_master=HOST:8081 --environment_type=LOOPBACK`
Beam does not know the per-video frame counts before it runs, so after a Beam build the video
table is made by one pass over the written records. With a URL output (Dataflow: `gs://`) the
Beam workers write no shards (ArrayRecord cannot write to a bucket): the pipeline prepares every
file into the cache at the URL, and the driver then builds the dataset from the cache as a run
without Beam does (copying encoded crops; the detection is what the workers did). A worker's
unexpected error is written to `<cache>/errors/<key>.json` (outside the cache proper, so a rerun
retries the file), read into the summary and deleted by the driver; an input with neither a cache
entry nor an error record after the run (e.g. its worker died) is listed as `error` too. So every
input file is in the summary.
"""

import dataclasses
import hashlib
import json
import multiprocessing
import os
import pathlib
import shutil
import tempfile
import time
import traceback
import uuid
from typing import Optional, Sequence

import tensorflow_datasets as tfds
import tqdm
from absl import logging
from etils import epath

from facegen_jax.data import extract
from facegen_jax.data import frames as frames_lib
from facegen_jax.data import reading
from facegen_jax.data import tfds_builder
from facegen_jax.io import paths

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SKIP_ERROR = "error"  # an unexpected failure (not cached; retried on the next run)
BEAM_LOST_DETAIL = "error during Beam processing (see the worker logs); rerun to retry"
SUMMARY_FILE = "summary.json"
_COMPLETE_MARKER = "dataset_info.json"  # a version folder without it is incomplete (`reading.find_builder_dir`)


@dataclasses.dataclass(frozen=True)
class InputFile:
  path: str  # absolute
  rel: str  # relative to the input folder, "/"-separated
  identity: str
  video_id: str
  is_video: bool


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
  """How files become frames (part of the cache key: changing one reprocesses every file).

  Attributes:
    resolution: crop size R.
    frame_step: keep every k-th frame of a clip.
    max_frames: keep at most this many frames per clip.
    min_face_size: skip a file whose face box is smaller than this (pixels, median over a clip).
    crop_scale: crop side / face size (FOMM-style expansion around the face).
    detector: landmark backend (`landmarks.detectors.BACKENDS`).
    detect_every: in clips, run the detector every N frames and track in between.
    smoothing: One-Euro smoothing of clip landmarks over time (`landmarks.smoothing`).
    image_format: face crops stored as "png" (lossless, the default) or "jpeg" (`jpeg_quality`,
      4:4:4; about 3x faster to decode, which is what bounds the training pipeline on few cores).
      Masks are always PNG.
  """
  resolution: int = 256
  frame_step: int = 4
  max_frames: int = 32
  min_face_size: int = 64
  crop_scale: float = 1.8
  detector: str = "dlib"
  detect_every: int = 10
  smoothing: bool = True
  image_format: str = "png"
  jpeg_quality: int = 95

  def __post_init__(self):
    if self.image_format not in frames_lib.IMAGE_FORMATS:
      raise ValueError(f"image_format must be one of {frames_lib.IMAGE_FORMATS}, got {self.image_format!r}")
    if not 1 <= self.jpeg_quality <= 100:
      raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")

  def fingerprint(self) -> str:
    """Every option: a cache made with other options (or by a version with fewer) is not reused."""
    return json.dumps(dataclasses.asdict(self), sort_keys=True)


def identity_of(rel: pathlib.PurePosixPath, input_name: str) -> str:
  """The identity of input file `rel` (relative path; see module docstring)."""
  if "__" in rel.stem:
    return rel.stem.split("__")[0]
  if len(rel.parts) >= 3:
    return rel.parts[0]
  return rel.parts[-2] if len(rel.parts) == 2 else input_name


def find_inputs(input_dir) -> list:
  """Every clip and photo under `input_dir` (a local folder or a URL), sorted by relative path.
  Files and folders whose name starts with "." are left out."""
  root = paths.as_path(input_dir if paths.is_url(input_dir) else pathlib.Path(input_dir).resolve())
  if not root.is_dir():
    raise FileNotFoundError(f"input folder {input_dir} does not exist")
  found = []
  for name in paths.files_under(root):
    rel = pathlib.PurePosixPath(name)
    ext = rel.suffix.lower()
    if any(part.startswith(".") for part in rel.parts) or ext not in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS:
      continue
    found.append(InputFile(path=str(root / name), rel=str(rel), identity=identity_of(rel, root.name),
                           video_id=str(rel.with_suffix("")), is_video=ext in VIDEO_EXTENSIONS))
  return found


def _file_fingerprint(inp: InputFile, options: PrepareOptions) -> str:
  """Size, modification time (a local file's in ns, an object's as its store gives it) and options."""
  if paths.is_url(inp.path):
    st = paths.as_path(inp.path).stat()
    return f"{st.length}:{st.mtime}:{options.fingerprint()}"
  st = os.stat(inp.path)
  return f"{st.st_size}:{st.st_mtime_ns}:{options.fingerprint()}"


def cache_dir(output_dir, options: PrepareOptions) -> epath.Path:
  digest = hashlib.sha256(options.fingerprint().encode()).hexdigest()[:10]
  return paths.as_path(output_dir) / "cache" / f"r{options.resolution}-{digest}"


def _process_one(args):
  """Pool worker: prepares one file into the cache. Returns (key, meta dict)."""
  inp, options, cache_root, key = args
  cache = frames_lib.FrameCache(cache_root)
  try:
    result = extract.prepare_file(inp, options)
  except Exception as e:  # pylint: disable=broad-except
    logging.error("unexpected error on %s:\n%s", inp.path, traceback.format_exc())
    return key, {"status": "skipped", "source": inp.rel, "identity": inp.identity, "reason": SKIP_ERROR,
                 "detail": f"{type(e).__name__}: {e}"}
  cache.save(key, result)
  return key, cache.load_meta(key)


def _error_path(cache_root, key: str) -> epath.Path:
  """Where a Beam worker records an unexpected error on file `key` (not a cache entry: retried)."""
  return paths.as_path(cache_root) / "errors" / f"{key}.json"


@dataclasses.dataclass(frozen=True)
class BeamFrameSource:
  """A `tfds_builder.FrameSource` that prepares its file on a Beam worker (through the cache)."""
  inp: InputFile
  options: PrepareOptions
  cache_root: str
  key: str
  num_frames: Optional[int] = None
  reprocess: bool = False  # process even if cached (`retry_skipped` on a cached "skipped" verdict)

  @property
  def identity(self):
    return self.inp.identity

  @property
  def video_id(self):
    return self.inp.video_id

  def load(self):
    cache = frames_lib.FrameCache(self.cache_root)
    if self.reprocess or not cache.has(self.key):
      _, meta = _process_one((self.inp, self.options, self.cache_root, self.key))
      error = _error_path(self.cache_root, self.key)
      if meta["status"] == "skipped" and meta["reason"] == SKIP_ERROR:  # not cached: for the summary
        error.parent.mkdir(parents=True, exist_ok=True)
        _write_json(error, meta)
        return frames_lib.Skipped(self.inp.rel, self.inp.identity, SKIP_ERROR, meta["detail"])
      error.unlink(missing_ok=True)  # a retried bundle succeeded after an error
    return cache.load(self.key)


def _beam_results(inputs, keys, cache: frames_lib.FrameCache) -> dict:
  """key -> meta of every input after a Beam run (see module docstring); deletes the error records."""
  metas = {}
  for inp in inputs:
    key = keys[inp.rel]
    error = _error_path(cache.root, key)
    if error.exists():
      metas[key] = json.loads(error.read_text())
      error.unlink()
    elif cache.has(key):
      metas[key] = cache.load_meta(key)
    else:
      metas[key] = {"status": "skipped", "source": inp.rel, "identity": inp.identity, "reason": SKIP_ERROR,
                    "detail": BEAM_LOST_DETAIL}
  try:
    (cache.root / "errors").rmdir()
  except OSError:  # absent, or records of another run's files
    pass
  return metas


def prepare_dataset(input_dir, output_dir, options: PrepareOptions = PrepareOptions(), *,
                    test_fraction: float = 0.1, test_identities: Sequence[str] = (), workers: int = 0,
                    retry_skipped: bool = False, beam: bool = False, beam_options: Sequence[str] = (),
                    progress: bool = True) -> dict:
  """Runs steps 1-4 of the module docstring; returns the summary (also in `<output>/summary.json`).

  Args:
    input_dir, output_dir: folders (see module docstring).
    options: frame sampling, detection and crop settings.
    test_fraction, test_identities: the identity split (`tfds_builder.split_identities`).
    workers: processes for step 2 (0 = one per CPU core).
    retry_skipped: reprocess files whose cached verdict is "skipped".
    beam: do step 2 and the writing with Apache Beam (`beam_options`: its pipeline flags).
    progress: show a progress bar.
  """
  start = time.time()
  output = paths.as_path(output_dir)
  output.mkdir(parents=True, exist_ok=True)
  remove_stale_builds(output)
  inputs = find_inputs(input_dir)
  if not inputs:
    raise ValueError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) or images ({', '.join(IMAGE_EXTENSIONS)}) "
                     f"found under {input_dir}")
  cache = frames_lib.FrameCache(cache_dir(output, options))
  others = sorted(str(p) for p in (output / "cache").glob("r*-*") if p.is_dir() and str(p) != str(cache.root))
  if others:
    logging.warning("not reusing the frame caches %s (made with other options, or by an older version): every "
                    "file is prepared again into %s; delete them to free the space", ", ".join(others), cache.root)
  keys = {inp.rel: cache.key(inp.rel, _file_fingerprint(inp, options)) for inp in inputs}
  metas, todo, cached = {}, [], 0
  for inp in inputs:
    key = keys[inp.rel]
    if cache.has(key) and not (retry_skipped and cache.load_meta(key)["status"] == "skipped"):
      metas[key] = cache.load_meta(key)
      cached += 1
    else:
      todo.append(inp)
  logging.info("%d input files: %d cached, %d to process", len(inputs), cached, len(todo))

  # The split is decided over every input identity, so a person's split does not depend on which
  # of the files happened to be skipped, nor on the build mode.
  splits = tfds_builder.split_identities([i.identity for i in inputs], test_fraction, test_identities)
  config = tfds_builder.FaceFramesConfig(resolution=options.resolution, test_fraction=test_fraction,
                                         test_identities=[i for i, s in splits.items() if s == "test"],
                                         image_format=options.image_format)
  if beam:
    for inp in inputs:  # error records left by an interrupted run would be taken for this run's
      _error_path(cache.root, keys[inp.rel]).unlink(missing_ok=True)
    retry = {inp.rel for inp in todo if cache.has(keys[inp.rel])}
    entries = [BeamFrameSource(inp, options, str(cache.root), keys[inp.rel], reprocess=inp.rel in retry)
               for inp in inputs]
  if beam and not paths.is_url(output):
    builder_dir = _build(output, config, entries, beam=True, beam_options=beam_options, fingerprint=None)
    metas = _beam_results(inputs, keys, cache)
    processed = len(todo)
    built = True
  else:
    processed = 0
    if beam:  # a URL output: Beam fills the cache, the shards are written here (see module docstring)
      _beam_fill_cache([e for e in entries if e.inp in todo], beam_options)
      metas = _beam_results(inputs, keys, cache)
      processed = len(todo)
    elif todo:
      jobs = [(inp, options, str(cache.root), keys[inp.rel]) for inp in todo]
      n = workers or os.cpu_count() or 1
      bar = tqdm.tqdm(total=len(jobs), desc="preparing files", unit="file", disable=not progress, smoothing=0.1)
      with multiprocessing.get_context("spawn").Pool(min(n, len(jobs))) as pool:
        for key, meta in pool.imap_unordered(_process_one, jobs):
          metas[key] = meta
          processed += 1
          bar.update(1)
          bar.set_postfix(frames=sum(m.get("num_frames", 0) for m in metas.values()))
      bar.close()
    ok = sorted((k for k, m in metas.items() if m["status"] == "ok" and m["num_frames"] > 0),
                key=lambda k: metas[k]["source"])
    if not ok:
      summary = _summary(inputs, metas, None, processed=processed, cached=cached, built=False,
                         seconds=time.time() - start)
      _write_json(output / SUMMARY_FILE, summary)
      log_skipped_and_notes(summary, output / SUMMARY_FILE)
      raise ValueError(f"none of the {len(inputs)} input files under {input_dir} gave a usable face; "
                       f"see the skipped files and their reasons in {output / SUMMARY_FILE}")
    entries = [tfds_builder.CachedFrames(str(cache.root), k, metas[k]["identity"], metas[k]["video_id"],
                                         metas[k]["num_frames"]) for k in ok]
    fingerprint = hashlib.sha256(json.dumps([ok, sorted(config.test_identities)]).encode()).hexdigest()
    builder_dir = _existing_build(output, config, fingerprint)
    built = builder_dir is None
    if built:
      builder_dir = _build(output, config, entries, beam=False, beam_options=(), fingerprint=fingerprint)
  summary = _summary(inputs, metas, builder_dir, processed=processed, cached=cached, built=built,
                     seconds=time.time() - start)
  _write_json(output / SUMMARY_FILE, summary)
  return summary


def read_summary(output_dir) -> dict:
  """The `summary.json` of the last run of `prepare_dataset` into `output_dir`."""
  return json.loads((paths.as_path(output_dir) / SUMMARY_FILE).read_text())


def remove_stale_builds(output: epath.Path) -> None:
  """Deletes the temporary folders (`.build-*`, `.old-*`) a killed build left in `output` (a URL
  output has none: its builds happen in a local temporary folder)."""
  if paths.is_url(output):
    return
  for stale in sorted(output.glob(".build-*")) + sorted(output.glob(".old-*")):
    if stale.is_dir():
      logging.info("removing %s, left by an interrupted build", stale)
      shutil.rmtree(stale, ignore_errors=True)


def _beam_fill_cache(entries: Sequence[BeamFrameSource], beam_options: Sequence[str]) -> None:
  """Prepares `entries` into their cache on Beam workers (`BeamFrameSource.load`), writing nothing else."""
  if not entries:
    return
  beam_lib = _import_beam()
  with beam_lib.Pipeline(options=_beam_pipeline_options(beam_lib, beam_options)) as pipeline:
    _ = (pipeline | beam_lib.Create(list(entries)) | beam_lib.Map(_prepare_into_cache))


def _prepare_into_cache(entry: BeamFrameSource) -> None:
  entry.load()  # processes the file into the cache (or records its error) unless it is cached


def _import_beam():
  try:
    import apache_beam as beam_lib  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError("--beam needs Apache Beam: pip install apache-beam") from e
  return beam_lib


def _beam_pipeline_options(beam_lib, beam_options: Sequence[str]):
  flags = list(beam_options) or ["--runner=DirectRunner", "--direct_num_workers=0",
                                 "--direct_running_mode=multi_processing"]
  return beam_lib.options.pipeline_options.PipelineOptions(flags)


def _existing_build(output: epath.Path, config, fingerprint: str) -> Optional[epath.Path]:
  """The dataset folder if it was built from exactly these cached files and options, else None."""
  final = output / tfds_builder.DATASET_NAME / config.name / str(tfds_builder.FaceFrames.VERSION)
  meta = final / "metadata.json"
  if meta.exists() and json.loads(meta.read_text()).get("fingerprint") == fingerprint:
    logging.info("dataset %s is up to date; not rebuilt", final)
    return final
  return None


def _build(output: epath.Path, config, entries, *, beam: bool, beam_options: Sequence[str],
           fingerprint: Optional[str]) -> epath.Path:
  """Builds into `<output>/.build-*` (a URL output: a local temporary folder, as ArrayRecord writes
  local files only) and moves the finished version folder into place (`_publish`)."""
  url = paths.is_url(output)
  tmp = epath.Path(tempfile.mkdtemp(prefix="facegen_build_")) if url else output / f".build-{uuid.uuid4().hex[:8]}"
  rel = f"{tfds_builder.DATASET_NAME}/{config.name}/{tfds_builder.FaceFrames.VERSION}"
  final = output / rel
  try:
    builder = tfds_builder.FaceFrames(entries=entries, beam=beam, data_dir=str(tmp), config=config)
    download_config = tfds.download.DownloadConfig(try_download_gcs=False)
    if beam:
      beam_lib = _import_beam()
      download_config = tfds.download.DownloadConfig(
          try_download_gcs=False, beam_options=_beam_pipeline_options(beam_lib, beam_options))
    builder.download_and_prepare(download_config=download_config, file_format="array_record")
    built = tmp / rel
    meta_path = built / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["fingerprint"] = fingerprint
    if not meta.get("splits"):  # Beam: frame counts were unknown while building
      meta["splits"] = {}
      for split in builder.info.splits:
        source = builder.as_data_source(split, decoders={k: tfds.decode.SkipDecoding() for k in reading.IMAGE_FEATURES})
        table = reading.scan_video_table(source)
        meta["splits"][split] = {"video_ids": list(table.video_ids), "identities": list(table.identities),
                                 "num_frames": [int(n) for n in table.num_frames]}
    _write_json(meta_path, meta)
    _publish(output, built, final)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  logging.info("dataset written to %s", final)
  return final


def _publish(output: epath.Path, built: epath.Path, final: epath.Path) -> None:
  """Puts the finished version folder `built` at `final`, replacing what is there. Local: two
  renames. A URL (an object store has no folders to rename): the old version's dataset_info.json is
  deleted first, then the rest of it, then the new files are uploaded with dataset_info.json last,
  so a reader (`reading.find_builder_dir` wants that file) never takes a half-copied version."""
  if paths.is_url(final):
    if final.exists():
      (final / _COMPLETE_MARKER).unlink(missing_ok=True)
      final.rmtree()
    count = paths.copy_tree(built, final, last=(_COMPLETE_MARKER,))
    logging.info("uploaded %d files of the dataset to %s", count, final)
    return
  final.parent.mkdir(parents=True, exist_ok=True)
  old = None
  if final.exists():
    old = output / f".old-{uuid.uuid4().hex[:8]}"
    os.rename(final, old)
  os.rename(built, final)
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)


def _summary(inputs, metas, builder_dir: Optional[epath.Path], *, processed, cached, built, seconds) -> dict:
  """The summary of a run; `builder_dir` None when no file was usable (no dataset: no splits)."""
  by_rel = {m["source"]: m for m in metas.values()}
  info = json.loads((builder_dir / "metadata.json").read_text()) if builder_dir is not None else {
      "splits": {}, "identity_split": {}}
  ok = [m for m in by_rel.values() if m["status"] == "ok"]
  skipped = [{"file": m["source"], "reason": m["reason"], "detail": m["detail"]}
             for m in sorted(by_rel.values(), key=lambda m: m["source"]) if m["status"] == "skipped"]
  notes = [{"file": m["source"], "note": n} for m in sorted(ok, key=lambda m: m["source"]) for n in m["notes"]]
  splits = {s: {"identities": len(set(t["identities"])), "videos": len(t["video_ids"]),
                "frames": int(sum(t["num_frames"]))} for s, t in info["splits"].items()}
  reasons = {}
  for s in skipped:
    reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
  return {
      "dataset_dir": str(builder_dir) if builder_dir is not None else None,
      "files": {"found": len(inputs), "videos": sum(i.is_video for i in inputs),
                "photos": sum(not i.is_video for i in inputs), "processed_now": processed, "from_cache": cached,
                "used": len(ok), "skipped": len(skipped), "skipped_by_reason": reasons},
      "frames": int(sum(m["num_frames"] for m in ok)),
      "identities": len({m["identity"] for m in ok}),
      "splits": splits,
      "identity_split": info["identity_split"],
      "dataset_rebuilt": built,
      "seconds": round(seconds, 1),
      "skipped": skipped,
      "notes": notes,
  }


def log_skipped_and_notes(summary: dict, summary_path, max_files: int = 20) -> None:
  """Logs every skipped file (warning) and the notes of used files (info: one line per file, at most
  `max_files` lines, then one line pointing to `summary_path` for the rest)."""
  for item in summary["skipped"]:
    logging.warning("skipped %s: %s (%s)", item["file"], item["reason"], item["detail"])
  notes = {}
  for item in summary["notes"]:
    notes.setdefault(item["file"], []).append(item["note"])
  for file, texts in list(notes.items())[:max_files]:
    logging.info("note on %s: %s", file, "; ".join(texts))
  if len(notes) > max_files:
    logging.info("... and %d more files with notes, see %s", len(notes) - max_files, summary_path)


def _write_json(path: epath.Path, data) -> None:
  paths.write_atomically(path, lambda f: f.write(json.dumps(data, indent=1, sort_keys=False).encode()))
