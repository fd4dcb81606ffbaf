"""One evaluation run: clips in (video files or a prepared dataset), the four report files out
(experiments/evaluate.py calls this)."""

import contextlib
import dataclasses
import os
import random
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import tqdm

from facegen_jax.evaluation import baselines, clips as clips_lib, exported_nets, face_analysis, protocols, report
from facegen_jax.data import reading, tfds_builder
from facegen_jax.evaluation.baselines import Method
from facegen_jax.io import paths
from facegen_jax.io.video import VIDEO_EXTENSIONS

MODEL = "model"
METHOD_NAMES = (MODEL, *baselines.BASELINES)


def build_methods(names: Sequence[str], checkpoint: Optional[str], compare: Optional[Dict[str, str]] = None,
                  finetune_steps: int = 0, progress: bool = False) -> Dict[str, Method]:
  """The requested methods, then the models of `compare` ({row name: workdir or export}), with
  every baseline added: each report carries their rows. With `finetune_steps`, the `model` row
  (`checkpoint`) is followed by its personalized row (`protocols.Personalized`, named by
  `personalized_name`); the `compare` models are not fine-tuned."""
  unknown = [n for n in names if n not in METHOD_NAMES]
  if unknown:
    raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(METHOD_NAMES)}")
  if finetune_steps < 0:
    raise ValueError(f"--finetune_steps={finetune_steps}: give 0 (off) or a number of fine-tuning steps")
  if finetune_steps and MODEL not in names:
    raise ValueError(f"--finetune_steps={finetune_steps} fine-tunes the model: add --method=model and --checkpoint")
  methods: Dict[str, Method] = {}
  if MODEL in names:
    if not checkpoint:
      raise ValueError("--method=model needs --checkpoint=DIR (a training workdir or an export directory)")
    reenactor = _load_reenactor(checkpoint)
    methods[MODEL] = protocols.reenactor_method(reenactor)
    if finetune_steps:
      methods[protocols.personalized_name(MODEL, finetune_steps)] = protocols.Personalized(
          reenactor, finetune_steps, progress)
  for name, path in (compare or {}).items():
    if name in METHOD_NAMES or name in methods:
      raise ValueError(f"--compare={name}=...: {name!r} names another row (a built-in method or the personalized "
                       "model); give the model another name")
    methods[name] = protocols.reenactor_method(_load_reenactor(path))
  methods.update(baselines.BASELINES)
  return methods


def _load_reenactor(path: str):
  """`protocols.load_reenactor` of a local folder or a URL (read from a local copy: `paths.local_checkpoint`)."""
  with paths.local_checkpoint(path) as local:
    return protocols.load_reenactor(local)


@contextlib.contextmanager
def _local_videos(videos: str, resolution: int) -> Iterator[str]:
  """A local path for `--videos`: itself if local; at a URL, a prepared dataset is mirrored
  (`reading.find_builder_dir`, `reading.stage_locally`), a clip or a folder of clips copied."""
  if not paths.is_url(videos):
    yield videos
    return
  folder = paths.as_path(videos)
  if (folder / "dataset_info.json").exists():
    yield str(reading.stage_locally(folder))
  elif (folder / tfds_builder.DATASET_NAME).is_dir():
    yield str(reading.find_builder_dir(videos, resolution))
  else:
    with paths.local_copy(videos, what="test clips") as local:
      yield local


def parse_compare(values: Sequence[str]) -> Dict[str, str]:
  """["NAME=DIR", ...] -> {NAME: DIR} (--compare)."""
  out = {}
  for value in values:
    name, sep, path = value.partition("=")
    if not sep or not name.strip() or not path.strip():
      raise ValueError(f"--compare={value!r}: write NAME=DIR (a row name and a training workdir or export)")
    out[name.strip()] = path.strip()
  return out


def evaluate(videos: str, output: str, methods: Sequence[str] = METHOD_NAMES, checkpoint: Optional[str] = None,
             protocol: str = "self", resolution: int = 256, max_frames: Optional[int] = None,
             pairs_csv: Optional[str] = None, num_pairs: int = 10, seed: int = 0, motion: str = "absolute",
             fid_weights: Optional[str] = None, lpips_weights: Optional[str] = None,
             feature_nets: Optional[protocols.FeatureNets] = None, progress: bool = True, split: str = "test",
             dataset_landmarks: str = "detect", compare: Optional[Dict[str, str]] = None,
             finetune_steps: int = 0, sources: Sequence[str] = ()) -> Dict[str, str]:
  """Runs `protocol` over the clips `videos` names and writes the report into `output`.

  `videos`: a folder of video files, one video file, or a dataset prepared by
  experiments/prepare_data.py, whose `split` is evaluated (`clips.find_clips`; `dataset_landmarks`
  says whose landmarks its clips carry). Returns {file name: path} of metrics.json, metrics.md,
  per_video.csv, grid.png. `compare` adds other models as rows ({name: workdir or export});
  `finetune_steps` adds the model fine-tuned on each source as its own row. Cross-identity pairs:
  with `sources` (photos, clips or folders of them, `clips.find_sources`), every source with every
  clip of `videos` of another person; else those of `pairs_csv`, else `num_pairs` random ones.
  `feature_nets` replaces the default landmark detector / identity net (tests).
  """
  if protocol not in protocols.PROTOCOLS:
    raise ValueError(f"--protocol={protocol}: choose one of {protocols.PROTOCOLS}")
  if resolution < 64:
    raise ValueError(f"--resolution={resolution} is too small for face landmarks; use 256 (the field's standard)")
  if sources and protocol != "cross":
    raise ValueError("--sources gives cross-identity sources: add --protocol=cross")
  if sources and pairs_csv:
    raise ValueError("--sources pairs every source with every clip of another person; leave out --pairs")
  with contextlib.ExitStack() as stack:  # URLs are read from local copies, removed at the end
    local_videos = stack.enter_context(_local_videos(videos, resolution))
    local_sources = [stack.enter_context(paths.local_copy(s, what="sources")) for s in sources]
    local = {name: stack.enter_context(paths.local_copy(path, what=name)) if path else None
             for name, path in (("pairs", pairs_csv), ("fid", fid_weights), ("lpips", lpips_weights))}
    clip_sources, source_info = clips_lib.find_clips(local_videos, split, resolution, dataset_landmarks)
    if paths.is_url(videos) and "dataset" in source_info:
      source_info["dataset"] = f"{videos} (read from its local mirror {source_info['dataset']})"
    source_files = clips_lib.find_sources(local_sources, dataset_landmarks) if sources else []
    method_fns = build_methods(methods, checkpoint, compare, finetune_steps, progress)
    if feature_nets is None:
      feature_nets = protocols.FeatureNets(face_analysis.default_landmark_fn(), face_analysis.default_identity_net())
    feature_nets = dataclasses.replace(
        feature_nets,
        fid_features=exported_nets.fid_feature_fn(local["fid"]) if fid_weights else feature_nets.fid_features,
        lpips=exported_nets.lpips_fn(local["lpips"]) if lpips_weights else feature_nets.lpips)

    same_person: List[str] = []
    if protocol == "cross":
      if source_files:
        pairs, same_person = _source_pairs(source_files, clip_sources)
        source_files = [c for c in source_files if c.name in {a for a, _ in pairs}]
        clip_sources = [c for c in clip_sources if c.name in {b for _, b in pairs}]
      else:
        by_name = {c.name: c for c in clip_sources}
        if pairs_csv:
          pairs = [(_clip_name(a, by_name), _clip_name(b, by_name)) for a, b in protocols.read_pairs(local["pairs"])]
        else:
          pairs = _random_pairs(clip_sources, num_pairs, seed)
        needed = sorted({n for pair in pairs for n in pair})
        missing = [n for n in needed if n not in by_name]
        if missing:
          shown = ", ".join(list(by_name)[:10]) + (f", ... ({len(by_name)} in all)" if len(by_name) > 10 else "")
          raise ValueError(f"{pairs_csv} names clips not in {videos}: {missing} (clips there: {shown})")
        clip_sources = [by_name[n] for n in needed]

    def read(items, what: str):
      return [c.load(feature_nets.landmark_fn, resolution, max_frames)
              for c in tqdm.tqdm(items, desc=f"reading {what}s", unit=what, disable=not progress)]

    loaded = read(clip_sources, "clip")
    if protocol == "self":
      results = protocols.self_reenactment(loaded, method_fns, feature_nets, resolution, progress)
    else:
      drivings = {c.name: c for c in loaded}
      by_source = {c.name: c for c in read(source_files, "source")} if source_files else drivings
      results = protocols.cross_identity(by_source, drivings, pairs, method_fns, feature_nets, resolution, motion,
                                         progress)
    info = {
        "videos": videos if paths.is_url(videos) else os.path.abspath(videos),
        **source_info,
        "clips": [c.name for c in loaded],
        "max_frames": max_frames,
        "checkpoint": checkpoint if MODEL in method_fns else None,
        "identity_net": feature_nets.identity_net.name,
        "akd_scale": f"pixels of a {protocols.metrics.AKD_RESOLUTION}x{protocols.metrics.AKD_RESOLUTION} crop",
        "fid": fid_weights or "not computed (pass --fid_weights)",
        "lpips": lpips_weights or "not computed (pass --lpips_weights)",
    }
    if protocol == "cross":
      if sources:
        info.update(sources=[c.name for c in source_files], same_person_pairs_left_out=same_person)
      info.update(motion=motion, pairs=[f"{a}->{b}" for a, b in pairs])
    if finetune_steps:
      info["personalization"] = _personalization_note(results, method_fns, finetune_steps)
    return report.write_all(results, output, info)


def _source_pairs(sources: Sequence[clips_lib.ClipSource], clips: Sequence[clips_lib.ClipSource]
                  ) -> Tuple[List[Tuple[str, str]], List[str]]:
  """Every (source, clip) pair of different people, and the "source->clip" pairs left out as one person's."""
  pairs, same = [], []
  for s in sources:
    for c in clips:
      if c.identity is not None and c.identity == s.identity:
        same.append(f"{s.name}->{c.name}")
      else:
        pairs.append((s.name, c.name))
  if not pairs:
    raise ValueError("every --sources source is the same person as every --videos clip (identity: the file name's "
                     "part before '__'); give sources or clips of other people")
  return pairs, same


def _personalization_note(results: protocols.Results, methods: Dict[str, Method], steps: int) -> str:
  """"N steps ..., mean X s per clip ... (device)": the report line of the personalized row."""
  tuned = next(n for n, m in methods.items() if isinstance(m, protocols.Personalized))
  unit = "clip" if results.protocol == "self" else "pair"
  return (f"{steps} step{'' if steps == 1 else 's'} on each {unit}'s source frame alone, mean "
          f"{results.summary[tuned]['personalization_seconds']:.2f} s per {unit} with compilation "
          f"({protocols.device_name()})")


def _random_pairs(sources: Sequence[clips_lib.ClipSource], num_pairs: int, seed: int) -> List[Tuple[str, str]]:
  """Random (source, driving) pairs; of different people when the clips' identities are known (a
  prepared dataset's, or the file names' `clips.file_identity`) and there are two or more, else of
  different clips."""
  names = [c.name for c in sources]
  identity = {c.name: c.identity for c in sources}
  if None not in identity.values() and len(set(identity.values())) >= 2:
    candidates = [(a, b) for a in names for b in names if identity[a] != identity[b]]
    return random.Random(seed).sample(candidates, min(num_pairs, len(candidates)))
  return protocols.random_pairs(names, num_pairs, seed)


def _clip_name(name: str, by_name: Dict[str, object]) -> str:
  """The clip a pairs-CSV entry means: its exact name (a dataset's video id may hold "/"), that name
  without a video extension, or the file name without one."""
  stem, ext = os.path.splitext(name)
  for candidate in (name, stem if ext.lower() in VIDEO_EXTENSIONS else name):
    if candidate in by_name:
      return candidate
  return _stem(name)


def _stem(name: str) -> str:
  base = os.path.basename(name)
  stem, ext = os.path.splitext(base)
  return stem if ext.lower() in VIDEO_EXTENSIONS else base
