"""The two evaluation protocols of the field, run on any set of methods.

- **self-reenactment** (VoxCeleb protocol of FOMM and its successors): each test clip's first frame
  (with a face) is the source; every later frame is driven by its own landmarks and compared with
  the real frame (L1, PSNR, SSIM, AKD, AED, CSIM, LPIPS, FID).
- **cross-identity**: the first frame of one clip drives with the frames of another; there is no
  ground truth, so identity is measured against the source (CSIM, AED) and pose against the
  driving landmarks (AKD).

A method is `method(source_image, source_landmarks, driving_image, driving_landmarks) -> image`
(baselines.Method); `make_model_method(checkpoint_dir)` wraps the trained model as one.
"""

import csv
import dataclasses
import os
import random
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tqdm

from facegen_jax.evaluation import face_analysis, metrics
from facegen_jax.evaluation.baselines import Method
from facegen_jax.evaluation.clip import Clip
from facegen_jax.inference import Reenactor
from facegen_jax.inference import motion as motion_lib
from facegen_jax.nets.base import FrozenNet

PROTOCOLS = ("self", "cross")
# Per-method summary columns, in report order; "lower"/"higher" is better.
METRICS = {"l1": "lower", "psnr": "higher", "ssim": "higher", "lpips": "lower", "akd": "lower", "akd_failed": "lower",
           "aed": "lower", "aed_sq_l2": "lower", "csim": "higher", "fid": "lower"}


def make_model_method(checkpoint_dir: str) -> Method:
  """The trained model as a method, through facegen_jax.inference.Reenactor.

  The Reenactor is loaded with `Reenactor.from_checkpoint(checkpoint_dir)` (a training workdir or
  an export) and asked, per frame, for `reenact_face(source_image, source_landmarks,
  driving_landmarks) -> uint8 [R, R, 3]`: the source crop in the pose of the driving landmarks.
  """
  if not os.path.isdir(checkpoint_dir):
    raise FileNotFoundError(f"--checkpoint={checkpoint_dir} is not a directory: pass a training workdir or an export")
  try:
    reenactor = Reenactor.from_checkpoint(checkpoint_dir)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"checkpoint {checkpoint_dir} failed to load ({type(e).__name__}: {e}); check that it was "
                     "written by experiments/train.py or experiments/export.py with the config stored beside it") from e

  def model(source_image, source_landmarks, driving_image, driving_landmarks):
    del driving_image
    return reenactor.reenact_face(source_image, source_landmarks, driving_landmarks)

  def extras(source_image, source_landmarks, driving_landmarks):
    """The generator's other images for the picture grid ("warped", "blend_mask" with motion)."""
    out = reenactor.face_outputs(source_image, source_landmarks, driving_landmarks)
    return {k: v for k, v in out.items() if k != "generated"}

  model.extras = extras
  return model


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
    per_video: rows {"video", "method", "frames", <metric>: value}.
    samples: rows of a picture grid: (label, source, driving, {method: output}), uint8 [R, R, 3]; a
      method with an `extras(source, source_landmarks, driving_landmarks) -> {name: image}`
      attribute adds its images as "method: name".
    skipped: notes on frames left out (no face on the real frame).
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

  def reduce(self, resolution: int, with_ground_truth: bool, feature_nets: FeatureNets) -> Dict[str, object]:
    row: Dict[str, object] = {"frames": len(self.ref_landmarks)}
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


def _run(jobs, methods: Dict[str, Method], feature_nets: FeatureNets, protocol: str, resolution: int,
         skipped: List[str], progress: bool) -> Results:
  """`jobs`: (label, source, source_landmarks, [(driving, driving_landmarks, target_landmarks, real)])."""
  total = sum(len(frames) for *_, frames in jobs) * len(methods)
  bar = tqdm.tqdm(total=total, desc=f"{protocol}-reenactment", unit="frame", disable=not progress)
  totals = {name: _Accumulator() for name in methods}
  per_video, samples, all_reals = [], [], []
  with_gt = protocol == "self"
  for label, source, source_lm, frames in jobs:
    if not frames:
      skipped.append(f"{label}: no driving frame with a face")
      continue
    if feature_nets.fid_features is not None:
      all_reals.extend(real if real is not None else driving for driving, _, _, real in frames)
    sample_at = len(frames) // 2
    sample = (label, source, frames[sample_at][0], {})
    for name, method in methods.items():
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
      per_video.append({"video": label, "method": name, **acc.reduce(resolution, with_gt, feature_nets)})
      totals[name].merge(acc)
    samples.append(sample)
  bar.close()
  if not per_video:
    raise ValueError(f"nothing to evaluate: {'; '.join(skipped)}")
  summary = {}
  for name, acc in totals.items():
    summary[name] = acc.reduce(resolution, with_gt, feature_nets)
    summary[name]["fid"] = _fid_value(acc, all_reals, feature_nets)
  return Results(protocol, resolution, list(methods), summary, per_video, samples, skipped)


def self_reenactment(clips: Sequence[Clip], methods: Dict[str, Method], feature_nets: FeatureNets,
                     resolution: int, progress: bool = True) -> Results:
  """Each clip's first frame with a face is the source; every later frame with a face is driven by
  its own landmarks and compared with itself. Frames without a face are listed in `skipped`."""
  jobs, skipped = [], []
  for clip in clips:
    first = _first_with_face(clip)
    if first:
      skipped.append(f"{clip.name}: frames 0-{first - 1} show no face; frame {first} is the source")
    frames = []
    for i in range(first + 1, len(clip.frames)):
      if clip.landmarks[i] is None:
        skipped.append(f"{clip.name}: frame {i} shows no face")
        continue
      frames.append((clip.frames[i], clip.landmarks[i], clip.landmarks[i], clip.frames[i]))
    jobs.append((clip.name, clip.frames[first], clip.landmarks[first], frames))
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


def cross_identity(clips: Dict[str, Clip], pairs: Sequence[Tuple[str, str]], methods: Dict[str, Method],
                   feature_nets: FeatureNets, resolution: int, motion: str = "absolute",
                   progress: bool = True) -> Results:
  """The first face frame of clip `source` takes the pose of each face frame of clip `driving`.

  `motion="absolute"` asks for the driving landmarks themselves; "relative" for the source's
  landmarks moved as the driver moves (FOMM's relative transfer, facegen_jax.inference.motion).
  AKD is measured against the landmarks asked for.
  """
  jobs, skipped = [], []
  for source_name, driving_name in pairs:
    for name in (source_name, driving_name):
      if name not in clips:
        raise ValueError(f"pair ({source_name}, {driving_name}) names {name!r}, which is not among the clips "
                         f"({', '.join(sorted(clips))})")
    source, driving = clips[source_name], clips[driving_name]
    s = _first_with_face(source)
    d0 = _first_with_face(driving)
    frames = []
    for i, (image, lm) in enumerate(zip(driving.frames, driving.landmarks)):
      if lm is None:
        skipped.append(f"{driving.name}: frame {i} shows no face")
        continue
      target = motion_lib.transfer(source.landmarks[s], lm, driving.landmarks[d0], motion)
      frames.append((image, lm, target, None))
    jobs.append((f"{source_name}->{driving_name}", source.frames[s], source.landmarks[s], frames))
  return _run(jobs, methods, feature_nets, "cross", resolution, skipped, progress)
