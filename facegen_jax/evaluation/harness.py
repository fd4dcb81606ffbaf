"""One evaluation run: clips in (video files or a prepared dataset), the four report files out
(experiments/evaluate.py calls this)."""

import dataclasses
import os
import random
from typing import Dict, List, Optional, Sequence, Tuple

import tqdm

from facegen_jax.evaluation import baselines, clips as clips_lib, exported_nets, face_analysis, protocols, report
from facegen_jax.evaluation.baselines import Method
from facegen_jax.io.video import VIDEO_EXTENSIONS

MODEL = "model"
METHOD_NAMES = (MODEL, *baselines.BASELINES)


def build_methods(names: Sequence[str], checkpoint: Optional[str],
                  compare: Optional[Dict[str, str]] = None) -> Dict[str, Method]:
  """The requested methods, then the models of `compare` ({row name: workdir or export}), with
  every baseline added: each report carries their rows."""
  unknown = [n for n in names if n not in METHOD_NAMES]
  if unknown:
    raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(METHOD_NAMES)}")
  methods: Dict[str, Method] = {}
  if MODEL in names:
    if not checkpoint:
      raise ValueError("--method=model needs --checkpoint=DIR (a training workdir or an export directory)")
    methods[MODEL] = protocols.make_model_method(checkpoint)
  for name, path in (compare or {}).items():
    if name in METHOD_NAMES:
      raise ValueError(f"--compare={name}=...: {name!r} names a built-in method; give the model another name")
    methods[name] = protocols.make_model_method(path)
  methods.update(baselines.BASELINES)
  return methods


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
             dataset_landmarks: str = "detect", compare: Optional[Dict[str, str]] = None) -> Dict[str, str]:
  """Runs `protocol` over the clips `videos` names and writes the report into `output`.

  `videos`: a folder of video files, one video file, or a dataset prepared by
  experiments/prepare_data.py, whose `split` is evaluated (`clips.find_clips`; `dataset_landmarks`
  says whose landmarks its clips carry). Returns {file name: path} of metrics.json, metrics.md,
  per_video.csv, grid.png. `compare` adds other models as rows ({name: workdir or export}).
  `feature_nets` replaces the default landmark detector / identity net (tests).
  """
  if protocol not in protocols.PROTOCOLS:
    raise ValueError(f"--protocol={protocol}: choose one of {protocols.PROTOCOLS}")
  if resolution < 64:
    raise ValueError(f"--resolution={resolution} is too small for face landmarks; use 256 (the field's standard)")
  sources, source_info = clips_lib.find_clips(videos, split, resolution, dataset_landmarks)
  method_fns = build_methods(methods, checkpoint, compare)
  if feature_nets is None:
    feature_nets = protocols.FeatureNets(face_analysis.default_landmark_fn(), face_analysis.default_identity_net())
  feature_nets = dataclasses.replace(
      feature_nets,
      fid_features=exported_nets.fid_feature_fn(fid_weights) if fid_weights else feature_nets.fid_features,
      lpips=exported_nets.lpips_fn(lpips_weights) if lpips_weights else feature_nets.lpips)

  if protocol == "cross":
    by_name = {c.name: c for c in sources}
    if pairs_csv:
      pairs = [(_clip_name(a, by_name), _clip_name(b, by_name)) for a, b in protocols.read_pairs(pairs_csv)]
    else:
      pairs = _random_pairs(sources, num_pairs, seed)
    needed = sorted({n for pair in pairs for n in pair})
    missing = [n for n in needed if n not in by_name]
    if missing:
      shown = ", ".join(list(by_name)[:10]) + (f", ... ({len(by_name)} in all)" if len(by_name) > 10 else "")
      raise ValueError(f"{pairs_csv} names clips not in {videos}: {missing} (clips there: {shown})")
    sources = [by_name[n] for n in needed]

  loaded = [c.load(feature_nets.landmark_fn, resolution, max_frames)
            for c in tqdm.tqdm(sources, desc="reading clips", unit="clip", disable=not progress)]
  if protocol == "self":
    results = protocols.self_reenactment(loaded, method_fns, feature_nets, resolution, progress)
  else:
    results = protocols.cross_identity({c.name: c for c in loaded}, pairs, method_fns, feature_nets, resolution,
                                       motion, progress)
  info = {
      "videos": os.path.abspath(videos),
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
    info.update(motion=motion, pairs=[f"{a}->{b}" for a, b in pairs])
  return report.write_all(results, output, info)


def _random_pairs(sources: Sequence[clips_lib.ClipSource], num_pairs: int, seed: int) -> List[Tuple[str, str]]:
  """Random (source, driving) pairs; of different people when the clips' identities are known
  (a prepared dataset) and there are two or more, else of different clips."""
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
