"""SYNTHETIC faces: procedural cartoon faces drawn from random 68-point landmarks.

Not real data. They exist for tests, smoke runs and the `tiny` config: each "identity" is a
random skin, hair and background colour and face shape; each "frame" of it a random head pose
(shift, scale, roll) and expression (mouth opening, brow raise). The iterator yields exactly the
batch dictionary of `facegen_jax.data.batch` (the same one the real TFDS/grain pipeline yields),
with the three sample kinds of the real pipeline: (a) two frames of one identity, (b) two
identities, (c) one frame with its own landmarks randomly perturbed.

Sample `i` is a pure function of `(seed, i)`, so the iterator state is just the next index.
"""

from typing import Optional

import numpy as np
from PIL import Image, ImageDraw

from facegen_jax.data import batch as batch_lib
from facegen_jax.landmarks import layout
from facegen_jax.landmarks.perturb import perturb_landmarks

MEAN_FACE = layout.MEAN_FACE

_MOUTH_LOWER = list(range(55, 60)) + list(range(65, 68))  # points that move down when the mouth opens
_BROWS = list(range(17, 27))


def _identity(rng: np.random.Generator) -> dict:
  return {
      "skin": rng.integers(90, 240, 3),
      "hair": rng.integers(0, 120, 3),
      "background": rng.integers(0, 256, 3),
      "lips": np.array([rng.integers(120, 220), rng.integers(30, 90), rng.integers(40, 100)]),
      "iris": rng.integers(0, 140, 3),
      "shape": np.array([rng.uniform(0.85, 1.1), rng.uniform(0.9, 1.15)]),  # x, y stretch
  }


def random_landmarks(rng: np.random.Generator, ident: dict, resolution: int) -> np.ndarray:
  """A random head pose and expression of `ident`: `[68, 2]` float32 pixel coordinates."""
  pts = MEAN_FACE * ident["shape"]
  pts = pts.copy()
  pts[_MOUTH_LOWER, 1] += rng.uniform(0.0, 0.08)
  pts[_BROWS, 1] -= rng.uniform(0.0, 0.04)
  angle = rng.uniform(-0.25, 0.25)
  rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], np.float32)
  scale = rng.uniform(0.5, 0.62) * resolution
  centre = resolution / 2 + rng.uniform(-0.06, 0.06, 2) * resolution
  return ((pts @ rot.T) * scale + centre).astype(np.float32)


def draw_face(landmarks: np.ndarray, ident: dict, resolution: int) -> np.ndarray:
  """Draws a cartoon face for `landmarks` `[68, 2]`. Returns `[R, R, 3]` uint8."""
  ss = 2  # supersampling for smooth edges
  img = Image.new("RGB", (resolution * ss, resolution * ss), tuple(int(c) for c in ident["background"]))
  d = ImageDraw.Draw(img)
  p = landmarks.astype(np.float64) * ss
  pt = lambda idx: [tuple(q) for q in p[idx]]
  jaw = p[0:17]
  top = p[17:27][::-1] - np.array([0, 0.12 * (p[8, 1] - p[27, 1])])  # forehead above the brows
  d.polygon([tuple(q) for q in np.concatenate([jaw, top])], fill=tuple(int(c) for c in ident["skin"]))
  hair = tuple(int(c) for c in ident["hair"])
  width = max(1, int(0.02 * resolution * ss))
  d.line(pt(range(17, 22)), fill=hair, width=width * 2)
  d.line(pt(range(22, 27)), fill=hair, width=width * 2)
  for eye in (range(36, 42), range(42, 48)):
    d.polygon(pt(eye), fill=(245, 245, 245))
    c = p[list(eye)].mean(0)
    r = 0.35 * (p[list(eye)][:, 0].max() - p[list(eye)][:, 0].min())
    d.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=tuple(int(v) for v in ident["iris"]))
  shade = tuple(int(c * 0.7) for c in ident["skin"])
  d.line(pt(range(27, 31)), fill=shade, width=width)
  d.line(pt(range(31, 36)), fill=shade, width=width)
  d.polygon(pt(range(48, 60)), fill=tuple(int(c) for c in ident["lips"]))
  d.polygon(pt(range(60, 68)), fill=(60, 20, 30))
  return np.asarray(img.resize((resolution, resolution), Image.BILINEAR))


class SyntheticFaces:
  """Deterministic iterator of SYNTHETIC training batches (see module docstring).

  Args:
    resolution: image size R.
    batch_size: samples per `next()`.
    mask_per_part: one mask channel per landmark part instead of one.
    seed: base seed.
    kind_ratios: probabilities of sample kinds (a) same identity, (b) other identity, (c) perturbed.
    perturb: kind (c) magnitudes, `perturb_landmarks` keyword arguments (fractions of the face size).
    num_identities: size of the identity pool (small pools let tiny models overfit).
    process_index, process_count: this process's share of every global batch (for multi-host
      runs: process k takes samples k * batch_size ... of each global batch).
  """

  def __init__(self, resolution: int, batch_size: int, *, mask_per_part: bool = False, seed: int = 0,
               kind_ratios=(0.5, 0.25, 0.25), perturb: Optional[dict] = None, num_identities: int = 64,
               process_index: int = 0, process_count: int = 1):
    self.resolution, self.batch_size, self.mask_per_part = resolution, batch_size, mask_per_part
    self.seed, self.num_identities = seed, num_identities
    self.perturb = dict(feature_shift=0.05, contour_shift=0.03, feature_scale=0.1) if perturb is None else dict(perturb)
    ratios = np.asarray(kind_ratios, np.float64)
    if ratios.shape != (3,) or ratios.min() < 0 or ratios.sum() <= 0:
      raise ValueError(f"kind_ratios must be 3 non-negative numbers, got {kind_ratios}")
    self.kind_ratios = ratios / ratios.sum()
    self.process_index, self.process_count = process_index, process_count
    self._index = 0  # first sample of the next global batch

  def _ident(self, k: int) -> dict:
    return _identity(np.random.default_rng([self.seed, 1, k]))

  def sample(self, i: int) -> dict:
    """Sample `i` as a dict of unbatched arrays."""
    r = self.resolution
    rng = np.random.default_rng([self.seed, 0, i])
    kind = batch_lib.SampleKind(int(rng.choice(3, p=self.kind_ratios)))
    src_id = int(rng.integers(self.num_identities))
    ident = self._ident(src_id)
    src_lm = random_landmarks(rng, ident, r)
    source = draw_face(src_lm, ident, r)
    target = None
    if kind == batch_lib.SampleKind.SAME_VIDEO:  # another "frame" of the same identity is the ground truth
      drv_lm = random_landmarks(rng, ident, r)
      target = draw_face(drv_lm, ident, r)
    elif kind == batch_lib.SampleKind.OTHER_PERSON:  # the pose of another identity
      other = self._ident(int((src_id + 1 + rng.integers(self.num_identities - 1)) % self.num_identities))
      drv_lm = random_landmarks(rng, other, r)
    else:  # its own landmarks randomly perturbed
      drv_lm = perturb_landmarks(src_lm, rng, image_size=r, **self.perturb)
    return batch_lib.make_sample(kind, source, src_lm, drv_lm, mask_per_part=self.mask_per_part, target=target)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    first = self._index + self.process_index * self.batch_size
    samples = [self.sample(first + j) for j in range(self.batch_size)]
    self._index += self.batch_size * self.process_count
    return {k: np.stack([s[k] for s in samples]) for k in samples[0]}

  def get_state(self) -> dict:
    return {"next_index": self._index}

  def set_state(self, state: dict) -> None:
    self._index = int(state["next_index"])
