"""The two evaluation protocols of the field, run on any set of methods.

- **self-reenactment** (VoxCeleb protocol of FOMM and its successors): each test clip's first frame
  (with a face) is the source; every later frame is driven by its own landmarks and compared with
  the real frame (L1, PSNR, SSIM, AKD, AED, CSIM, LPIPS, FID).
- **cross-identity**: the first face frame of a source (a clip, or a photo: a one-frame clip)
  drives with the frames of another clip; there is no ground truth, so identity is measured
  against the source (CSIM, AED) and pose against the driving landmarks (AKD).

A method is `method(source_image, source_landmarks, driving_image, driving_landmarks) -> image`
(baselines.Method); `reenactor_method(reenactor)` wraps a trained model as one. A method that
needs per-source state has `for_source(source_image, source_landmarks) -> method`, called once per
clip (or pair) for the method that scores it; numbers that method carries as `clip_info`
({name: float}) join the clip's row, and their mean the summary. `Personalized` is one: the model
fine-tuned on each source before it drives it.

Driving frames without a face cannot be scored: each clip's row counts them (`frames_without_face`,
summed over the clips in the summary) beside the frames scored (`frames`).
"""

import csv
import dataclasses
import os
import platform
import random
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import jax
import numpy as np
import tqdm

from facegen_jax.evaluation import face_analysis, metrics
from facegen_jax.evaluation.baselines import Method
from facegen_jax.evaluation.clip import Clip
from facegen_jax.inference import Reenactor
from facegen_jax.inference import motion as motion_lib
from facegen_jax.inference.personalize import personalize
from facegen_jax.nets.base import FrozenNet

PROTOCOLS = ("self", "cross")
# Per-method summary columns, in report order; "lower"/"higher" is better.
METRICS = {"l1": "lower", "psnr": "higher", "ssim": "higher", "lpips": "lower", "akd": "lower", "akd_failed": "lower",
           "aed": "lower", "aed_sq_l2": "lower", "csim": "higher", "fid": "lower"}


def load_reenactor(checkpoint_dir: str) -> Reenactor:
  """`Reenactor.from_checkpoint(checkpoint_dir)` (a training workdir or an export), with errors
  that say what to pass."""
  if not os.path.isdir(checkpoint_dir):
    raise FileNotFoundError(f"--checkpoint={checkpoint_dir} is not a directory: pass a training workdir or an export")
  try:
    return Reenactor.from_checkpoint(checkpoint_dir)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"checkpoint {checkpoint_dir} failed to load ({type(e).__name__}: {e}); check that it was "
                     "written by experiments/train.py or experiments/export.py with the config stored beside it") from e


def reenactor_method(reenactor: Reenactor) -> Method:
  """A trained model as a method: per frame `reenactor.reenact_face(source_image, source_landmarks,
  driving_landmarks) -> uint8 [R, R, 3]`, the source crop in the pose of the driving landmarks."""

  def model(source_image, source_landmarks, driving_image, driving_landmarks):
    del driving_image
    return reenactor.reenact_face(source_image, source_landmarks, driving_landmarks)

  def extras(source_image, source_landmarks, driving_landmarks):
    """The generator's other images for the picture grid ("warped", "blend_mask" with motion)."""
    out = reenactor.face_outputs(source_image, source_landmarks, driving_landmarks)
    return {k: v for k, v in out.items() if k != "generated"}

  model.extras = extras
  return model


def personalized_name(name: str, steps: int) -> str:
  """The report row of model `name` fine-tuned for `steps` steps on each source."""
  return f"{name} + personalization ({steps} step{'' if steps == 1 else 's'})"


class Personalized:
  """A model fine-tuned on each source before it drives it (one-shot personalization,
  facegen_jax/inference/personalize.py), a per-source method: `for_source` fine-tunes a copy of
  `reenactor` for `steps` steps on the source crop alone (nothing of the frames it is scored on)
  and returns it as the clip's method, with `clip_info = {"personalization_seconds": wall time of
  the fine-tuning}` (loading its loss networks and compiling its step included, as
  `reenact.py --finetune_steps` spends it). Every source starts from `reenactor`'s weights."""

  def __init__(self, reenactor: Reenactor, steps: int, progress: bool = False):
    if steps < 1:
      raise ValueError(f"personalization needs at least one fine-tuning step, got {steps}")
    self.reenactor, self.steps, self.progress = reenactor, int(steps), progress

  def for_source(self, source_image: np.ndarray, source_landmarks: np.ndarray) -> Method:
    start = time.perf_counter()
    tuned = personalize(self.reenactor, source_image, self.steps, source_landmarks=source_landmarks,
                        progress=self.progress)
    method = reenactor_method(tuned)
    method.clip_info = {"personalization_seconds": time.perf_counter() - start}
    return method


def device_name() -> str:
  """What JAX computes on: the accelerator's kind, or the CPU's model name."""
  device = jax.devices()[0]
  if device.platform != "cpu":
    return device.device_kind
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
  except OSError:
    names = []
  return names[0] if names else platform.processor() or "CPU"


@dataclasses.dataclass
class FeatureNets:
  """What scores identity and pose, plus the optional FID / LPIPS networks.

  Attributes:
    landmark_fn: image -> [68, 2] or None.
    identity_net: FrozenNet whose embedding is the identity code.
    fid_features: `images [N, H, W, 3] uint8 -> [N, D]` Inception features, or None.
    lpips: `(a, b) uint8 [N, H, W, 3] -> [N]` distances, or None.
  """

  landmark_fn: face_analysis.LandmarkFn
  identity_net: FrozenNet
  fid_features: Optional[Callable[[np.ndarray], np.ndarray]] = None
  lpips: Optional[Callable[[np.ndarray, np.ndarray], np.ndarray]] = None


@dataclasses.dataclass
class Results:
  """Attributes:
    protocol: "self" or "cross".
    resolution: evaluation size R.
    methods: method names in order.
    summary: method -> metric -> value (a number, or metrics.NOT_COMPUTED).
    per_video: rows {"video", "method", "frames" (scored), "frames_without_face" (driving frames
      left out: no face found on them), <metric>: value, and a per-source method's `clip_info`}.
    samples: rows of a picture grid: (label, source, driving, {method: output}), uint8 [R, R, 3]; a
      method with an `extras(source, source_landmarks, driving_landmarks) -> {name: image}`
      attribute adds its images as "method: name".
    skipped: notes on frames left out (no face on the real frame), one line per clip.
  """

  protocol: str
  resolution: int
  methods: List[str]
  summary: Dict[str, Dict[str, object]]
  per_video: List[Dict[str, object]]
  samples: List[Tuple[str, np.ndarray, np.ndarray, Dict[str, np.ndarray]]]
  skipped: List[str]


def _check_output(name: str, out: np.ndarray, like: np.ndarray) -> np.ndarray:
  out = np.asarray(out)
  if out.shape != like.shape or out.dtype != np.uint8:
    raise ValueError(f"method {name} returned {out.dtype} {out.shape}; methods must return uint8 {like.shape}")
  return out


class _Accumulator:
  """Per-frame scores of one (video, method), reduced to the report's numbers."""

  def __init__(self):
    self.l1, self.psnr, self.ssim, self.lpips = [], [], [], []
    self.pred_landmarks, self.ref_landmarks = [], []
    self.emb_out, self.emb_ref = [], []
    self.outputs = []

  def merge(self, other: "_Accumulator"):
    for key, value in vars(other).items():
      getattr(self, key).extend(value)

  def reduce(self, resolution: int, with_ground_truth: bool, feature_nets: FeatureNets,
             frames_without_face: int) -> Dict[str, object]:
    row: Dict[str, object] = {"frames": len(self.ref_landmarks), "frames_without_face": frames_without_face}
    if with_ground_truth:
      row.update(l1=float(np.mean(self.l1)), psnr=float(np.mean(self.psnr)), ssim=float(np.mean(self.ssim)))
      row["lpips"] = float(np.mean(self.lpips)) if feature_nets.lpips is not None else metrics.NOT_COMPUTED
    scores = metrics.akd(self.pred_landmarks, self.ref_landmarks, resolution)
    row.update(akd=scores["akd"], akd_failed=scores["akd_failed"])
    emb_out, emb_ref = np.stack(self.emb_out), np.stack(self.emb_ref)
    row.update(aed=metrics.aed(emb_out, emb_ref), aed_sq_l2=metrics.aed_sq_l2(emb_out, emb_ref),
               csim=metrics.csim(emb_out, emb_ref))
    return row


def _score_frame(acc: _Accumulator, feature_nets: FeatureNets, output: np.ndarray, target_landmarks: np.ndarray,
                 identity_image: np.ndarray, identity_landmarks: np.ndarray, real: Optional[np.ndarray]):
  """Scores one output. `target_landmarks`: the pose asked for; `identity_image`: whose identity
  the output must keep; `real`: the ground-truth frame (self-reenactment) or None."""
  if real is not None:
    acc.l1.append(metrics.l1(output, real))
    acc.psnr.append(metrics.psnr(output, real))
    acc.ssim.append(metrics.ssim(output, real))
    if feature_nets.lpips is not None:
      acc.lpips.append(float(np.asarray(feature_nets.lpips(output[None], real[None]))[0]))
  if feature_nets.fid_features is not None:
    acc.outputs.append(output)
  found = feature_nets.landmark_fn(output)
  acc.pred_landmarks.append(found)
  acc.ref_landmarks.append(target_landmarks)
  # The identity net aligns faces by their landmarks; where none are found on the output, it is
  # aligned by the pose it was asked to take.
  emb = face_analysis.embed(feature_nets.identity_net, np.stack([output, identity_image]),
                            np.stack([found if found is not None else target_landmarks, identity_landmarks]))
  acc.emb_out.append(emb[0])
  acc.emb_ref.append(emb[1])


def _fid_value(acc: _Accumulator, reals: Sequence[np.ndarray], feature_nets: FeatureNets):
  if feature_nets.fid_features is None:
    return metrics.NOT_COMPUTED
  return metrics.fid(np.stack(reals), np.stack(acc.outputs), feature_nets.fid_features)


def _first_with_face(clip: Clip) -> int:
  for i, lm in enumerate(clip.landmarks):
    if lm is not None:
      return i
  raise ValueError(f"no face found in any crop of {clip.name}")


def _numbers(indices: Sequence[int]) -> str:
  """[1, 3, 4, 5] -> "1, 3-5"."""
  runs: List[List[int]] = []
  for i in indices:
    if runs and i == runs[-1][1] + 1:
      runs[-1][1] = i
    else:
      runs.append([i, i])
  return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _faceless_note(clip: Clip, faceless: Sequence[int], source: Optional[int] = None) -> List[str]:
  """The `skipped` line of a clip's frames without a face (none if there are none)."""
  if not faceless:
    return []
  one = len(faceless) == 1
  note = (f"{clip.name}: {'frame' if one else 'frames'} {_numbers(faceless)} ({len(faceless)} of {len(clip.frames)}) "
          f"{'shows' if one else 'show'} no face")
  return [note + (f"; frame {source} is the source" if source else "")]


class _Job(NamedTuple):
  """One clip (or pair) to score: its row label, the source, and the driving frames with a face as
  (driving, driving_landmarks, target_landmarks, real frame or None)."""

  label: str
  source: np.ndarray
  source_landmarks: np.ndarray
  frames: List[Tuple[np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray]]]
  frames_without_face: int


def _for_source(method, source: np.ndarray, source_landmarks: np.ndarray) -> Method:
  """The method that scores one source: its own, for a per-source method (`for_source`)."""
  for_source = getattr(method, "for_source", None)
  return for_source(source, source_landmarks) if for_source is not None else method


def _run(jobs: Sequence[_Job], methods: Dict[str, Method], feature_nets: FeatureNets, protocol: str,
         resolution: int, skipped: List[str], progress: bool) -> Results:
  total = sum(len(job.frames) for job in jobs) * len(methods)
  bar = tqdm.tqdm(total=total, desc=f"{protocol}-reenactment", unit="frame", disable=not progress)
  totals = {name: _Accumulator() for name in methods}
  clip_info: Dict[str, List[Dict[str, float]]] = {name: [] for name in methods}
  per_video, samples, all_reals = [], [], []
  with_gt = protocol == "self"
  for label, source, source_lm, frames, faceless in jobs:
    if not frames:
      skipped.append(f"{label}: no driving frame with a face")
      continue
    if feature_nets.fid_features is not None:
      all_reals.extend(real if real is not None else driving for driving, _, _, real in frames)
    sample_at = len(frames) // 2
    sample = (label, source, frames[sample_at][0], {})
    for name, method in methods.items():
      method = _for_source(method, source, source_lm)
      acc = _Accumulator()
      for i, (driving, driving_lm, target_lm, real) in enumerate(frames):
        output = _check_output(name, method(source, source_lm, driving, target_lm), driving)
        _score_frame(acc, feature_nets, output, target_lm, real if with_gt else source,
                     driving_lm if with_gt else source_lm, real)
        if i == sample_at:
          sample[3][name] = output
          for key, image in getattr(method, "extras", lambda *_: {})(source, source_lm, target_lm).items():
            sample[3][f"{name}: {key}"] = image
        bar.update(1)
      info = dict(getattr(method, "clip_info", {}))
      clip_info[name].append(info)
      per_video.append({"video": label, "method": name, **acc.reduce(resolution, with_gt, feature_nets, faceless),
                        **info})
      totals[name].merge(acc)
    samples.append(sample)
  bar.close()
  if not per_video:
    raise ValueError(f"nothing to evaluate: {'; '.join(skipped)}")
  summary = {}
  for name, acc in totals.items():
    # Every clip's faceless frames, a clip with none scored too.
    summary[name] = acc.reduce(resolution, with_gt, feature_nets, sum(job.frames_without_face for job in jobs))
    summary[name]["fid"] = _fid_value(acc, all_reals, feature_nets)
    for key in sorted({k for info in clip_info[name] for k in info}):
      summary[name][key] = float(np.mean([info[key] for info in clip_info[name] if key in info]))
  return Results(protocol, resolution, list(methods), summary, per_video, samples, skipped)


def self_reenactment(clips: Sequence[Clip], methods: Dict[str, Method], feature_nets: FeatureNets,
                     resolution: int, progress: bool = True) -> Results:
  """Each clip's first frame with a face is the source; every later frame with a face is driven by
  its own landmarks and compared with itself. Frames without a face (before the source too) are
  counted (`frames_without_face`) and listed in `skipped`."""
  jobs, skipped = [], []
  for clip in clips:
    first = _first_with_face(clip)
    faceless = [i for i, lm in enumerate(clip.landmarks) if lm is None]
    skipped.extend(_faceless_note(clip, faceless, source=first))
    frames = [(clip.frames[i], clip.landmarks[i], clip.landmarks[i], clip.frames[i])
              for i in range(first + 1, len(clip.frames)) if clip.landmarks[i] is not None]
    jobs.append(_Job(clip.name, clip.frames[first], clip.landmarks[first], frames, len(faceless)))
  return _run(jobs, methods, feature_nets, "self", resolution, skipped, progress)


def read_pairs(csv_path: str) -> List[Tuple[str, str]]:
  """(source, driving) video names from a CSV with a `source,driving` header."""
  with open(csv_path, newline="") as f:
    reader = csv.DictReader(f)
    if not reader.fieldnames or not {"source", "driving"} <= set(reader.fieldnames):
      raise ValueError(f"{csv_path} must be a CSV with a header naming the columns source,driving")
    return [(row["source"].strip(), row["driving"].strip()) for row in reader]


def random_pairs(names: Sequence[str], num_pairs: int, seed: int = 0) -> List[Tuple[str, str]]:
  """`num_pairs` (source, driving) pairs of different clips, drawn with `seed`."""
  if len(names) < 2:
    raise ValueError(f"cross-identity needs at least two clips, got {len(names)}")
  rng = random.Random(seed)
  all_pairs = [(a, b) for a in names for b in names if a != b]
  return rng.sample(all_pairs, min(num_pairs, len(all_pairs)))


def cross_identity(sources: Dict[str, Clip], drivings: Dict[str, Clip], pairs: Sequence[Tuple[str, str]],
                   methods: Dict[str, Method], feature_nets: FeatureNets, resolution: int, motion: str = "absolute",
                   progress: bool = True) -> Results:
  """The first face frame of source `a` (`sources[a]`: a clip, or a photo's one-frame clip) takes
  the pose of each face frame of clip `drivings[b]`, for each pair (a, b) of `pairs`.

  `motion="absolute"` asks for the driving landmarks themselves; "relative" for the source's
  landmarks moved as the driver moves from its first face frame (FOMM's relative transfer,
  facegen_jax.inference.motion). AKD is measured against the landmarks asked for. Driving frames
  without a face are counted (`frames_without_face`) and listed in `skipped`, once per clip.
  """
  jobs, skipped, noted = [], [], set()
  for source_name, driving_name in pairs:
    for name, clips in ((source_name, sources), (driving_name, drivings)):
      if name not in clips:
        raise ValueError(f"pair ({source_name}, {driving_name}) names {name!r}, which is not among the clips "
                         f"({', '.join(sorted(clips))})")
    source, driving = sources[source_name], drivings[driving_name]
    s = _first_with_face(source)
    d0 = _first_with_face(driving)
    faceless = [i for i, lm in enumerate(driving.landmarks) if lm is None]
    if driving_name not in noted:
      noted.add(driving_name)
      skipped.extend(_faceless_note(driving, faceless))
    frames = [(image, lm, motion_lib.transfer(source.landmarks[s], lm, driving.landmarks[d0], motion), None)
              for image, lm in zip(driving.frames, driving.landmarks) if lm is not None]
    jobs.append(_Job(f"{source_name}->{driving_name}", source.frames[s], source.landmarks[s], frames, len(faceless)))
  return _run(jobs, methods, feature_nets, "cross", resolution, skipped, progress)
