"""A trained generator ready for inference, loaded from a training workdir or an export.

Two on-disk forms:
- a training workdir (`config.json` + `checkpoints/<step>/`): the newest checkpoint's EMA
  generator weights (or the raw ones) with the generator's running batch statistics;
- an export directory (`config.json` + `generator.msgpack`), written by `export()`: a single
  small file with just the inference weights, suitable for shipping.

The exported programs (StableHLO, ONNX) run `float_outputs` of `for_export()`'s model; their
runtimes share `check_inputs`, `uint8_outputs` and, with motion, the float64 landmark flow
(`models.motion.host_flow`: `landmarks.tps.host_flow` or `landmarks.pwa.host_flow`, the `tps_flow` input) with `outputs` (inference/export_formats.py,
inference/runtimes.py).
"""

import functools
import json
import os
from typing import Optional

import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from facegen_jax.io import checkpoints, images
from facegen_jax.models import factory, motion

EXPORT_FILE = "generator.msgpack"
EXPORT_INFO = "export.json"  # where the weights came from: training step, EMA or raw


def load_config(path: str) -> ml_collections.ConfigDict:
  """The config.json of a workdir or export directory."""
  config_path = os.path.join(path, "config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(
        f"{config_path} not found: --checkpoint must be a training workdir (made by experiments/train.py) or an "
        "export directory (made by experiments/export.py), both of which hold config.json")
  with open(config_path) as f:
    try:
      return ml_collections.ConfigDict(json.load(f))
    except json.JSONDecodeError as e:
      raise ValueError(f"{config_path} is not valid JSON ({e}); restore it from the training run") from e


def init_generator_variables(config: ml_collections.ConfigDict, rng: jnp.ndarray) -> dict:
  """Freshly initialised generator variables `{"params", "batch_stats"}` for `config`."""
  r, m = int(config.resolution), factory.mask_channels(config)
  lm = jnp.zeros((1, 68, 2))
  variables = factory.build_generator(config).init(rng, jnp.zeros((1, r, r, 3)), jnp.zeros((1, r, r, m)), lm, lm,
                                                   train=False)
  return {"params": variables["params"], "batch_stats": variables["batch_stats"]}


def generator_shapes(config: ml_collections.ConfigDict) -> dict:
  """Shapes and dtypes of the generator's variables for `config` (nothing is computed)."""
  return jax.eval_shape(lambda: init_generator_variables(config, jax.random.PRNGKey(0)))


def _check_shapes(variables, like, where: str) -> None:
  """flax's msgpack restore takes any array for a leaf: a shape or dtype that differs from the
  config's model is caught here, not as an obscure error inside the first generator call."""
  bad = []
  for (key, got), want in zip(jax.tree_util.tree_leaves_with_path(variables), jax.tree.leaves(like)):
    got_shape, got_dtype = tuple(getattr(got, "shape", ())), getattr(got, "dtype", None)
    if got_shape != tuple(want.shape) or got_dtype != want.dtype:
      bad.append(f"{jax.tree_util.keystr(key)}: {got_dtype}{list(got_shape)}, config wants {want.dtype}{list(want.shape)}")
  if bad:
    shown = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
    raise ValueError(f"{where} does not match the model of the config.json beside it ({shown}): was it exported "
                     "from a run with another config? Export it again with export.py, or restore that config.json")


def output_names(config: ml_collections.ConfigDict) -> tuple:
  """The images the generator of `config` makes, in the order exported programs return them."""
  names = ("generated",)
  if config.model.motion != "none":
    names += ("warped",) + (("blend_mask",) if config.model.motion_blend else ())
  return names


def check_inputs(resolution: int, mask_channels: int, sources, masks, source_landmarks, driving_landmarks):
  """The generator's inputs as arrays (landmarks float32), or ValueError naming the one whose
  shape is wrong: sources `[B, R, R, 3]`, masks `[B, R, R, M]`, landmarks `[B, 68, 2]`."""
  sources, masks = np.asarray(sources), np.asarray(masks)
  b = sources.shape[0] if sources.ndim == 4 else 0
  source_landmarks = np.asarray(source_landmarks, np.float32)
  driving_landmarks = np.asarray(driving_landmarks, np.float32)
  for name, lm in (("source_landmarks", source_landmarks), ("driving_landmarks", driving_landmarks)):
    if lm.shape != (b, 68, 2):
      raise ValueError(f"{name} must be [{b}, 68, 2] crop pixels, got {lm.shape}")
  r, m = resolution, mask_channels
  if sources.ndim != 4 or sources.shape[1:] != (r, r, 3):
    raise ValueError(f"sources must be [B, {r}, {r}, 3] uint8 face crops, got {sources.shape}")
  if masks.shape != sources.shape[:3] + (m,):
    raise ValueError(f"masks must be [B, {r}, {r}, {m}], got {masks.shape}")
  return sources, masks, source_landmarks, driving_landmarks


def uint8_outputs(out: dict) -> dict:
  """Float outputs (images in [-1, 1], "blend_mask" `[B, R, R, 1]` in [0, 1]) -> uint8 `[B, R, R, 3]`
  images (the blend mask grey, white = the warp kept); numpy in, numpy out, jax in, jax out."""
  result = {}
  for k, v in out.items():
    if k == "blend_mask":
      xp = np if isinstance(v, np.ndarray) else jnp
      result[k] = xp.repeat(images.to_uint8_image(v * 2.0 - 1.0), 3, axis=-1)
    else:
      result[k] = images.to_uint8_image(v)
  return result


class GeneratorModel:
  """`model(sources, masks, source_landmarks, driving_landmarks) -> images`: the generator in inference mode, jitted.

  Attributes:
    config: the training config.
    variables: {"params", "batch_stats"} of the generator.
    info: where the weights came from ({"step", "weights": "ema"|"raw"}), empty if unknown.
  """

  def __init__(self, config: ml_collections.ConfigDict, variables: dict, info: Optional[dict] = None):
    self.config, self.variables, self.info = config, variables, dict(info or {})
    self.generator = factory.build_generator(config)
    self.resolution = int(config.resolution)
    self.mask_per_part = bool(config.mask_per_part)
    self.mask_channels = factory.mask_channels(config)

  @classmethod
  def load(cls, path: str, use_ema: bool = True) -> "GeneratorModel":
    """From a training workdir (newest checkpoint) or an export directory."""
    if not os.path.isdir(path):
      raise FileNotFoundError(f"checkpoint path {path} is not a directory (a training workdir or an export)")
    config = load_config(path)
    export = os.path.join(path, EXPORT_FILE)
    if os.path.exists(export):
      like = generator_shapes(config)
      with open(export, "rb") as f:
        try:
          variables = flax.serialization.from_bytes(like, f.read())
        except Exception as e:  # pylint: disable=broad-except
          raise ValueError(f"{export} does not match {path}/config.json or is damaged: {e}") from e
      _check_shapes(variables, like, export)
      checkpoints.check_finite(variables, export)
      variables = jax.tree.map(jnp.asarray, variables)
      info_path = os.path.join(path, EXPORT_INFO)
      info = {}
      if os.path.exists(info_path):
        with open(info_path) as f:
          info = json.load(f)
    else:
      variables, info = checkpoints.restore_generator(path, generator_shapes(config), use_ema)
      variables = jax.tree.map(jnp.asarray, variables)
    return cls(config, variables, info)

  def export(self, path: str) -> str:
    """Writes config.json + generator.msgpack (+ export.json: step, EMA or raw) into `path`;
    returns the weights file."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
      f.write(self.config.to_json_best_effort(indent=2))
    with open(os.path.join(path, EXPORT_INFO), "w") as f:
      json.dump(self.info, f, indent=2)
    out = os.path.join(path, EXPORT_FILE)
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
      f.write(flax.serialization.to_bytes(jax.device_get(self.variables)))
    os.replace(tmp, out)
    return out

  def for_export(self) -> "GeneratorModel":
    """The same weights in a generator that exports: XLA's own convolutions (the CPU back-ends'
    oneDNN custom calls cannot leave the process)."""
    config = ml_collections.ConfigDict(self.config.to_dict())
    config.model.conv_impl = "xla"
    return GeneratorModel(config, self.variables, self.info)

  @property
  def output_names(self) -> tuple:
    return output_names(self.config)

  @property
  def motion_smoothing(self) -> Optional[float]:
    """The spline's ridge with motion, None without (the generator then takes no `tps_flow`)."""
    return None if self.config.model.motion == "none" else float(self.config.model.motion_smoothing)

  @property
  def motion(self) -> str:
    """`config.model.motion`: which landmark flow the generator warps by."""
    return str(self.config.model.motion)

  def tps_flow(self, source_landmarks, driving_landmarks) -> Optional[np.ndarray]:
    """The `tps_flow` input of `float_outputs` (float64 `models.motion.host_flow` of the config's
    motion), None without motion."""
    if self.motion_smoothing is None:
      return None
    return motion.host_flow(source_landmarks, driving_landmarks, self.resolution, self.motion_smoothing, self.motion)

  def float_outputs(self, variables: dict, sources, masks, source_landmarks, driving_landmarks, tps_flow=None) -> dict:
    """The images of `output_names` from float inputs: sources in [-1, 1], masks in [0, 1],
    landmarks in crop pixels, with motion `tps_flow` (`tps_flow()`; None solves the spline in the
    graph, in float32); images in [-1, 1], "blend_mask" `[B, R, R, 1]` in [0, 1]."""
    out = self.generator.apply(variables, sources, masks, source_landmarks, driving_landmarks, train=False,
                               tps_flow=tps_flow)
    return {k: out[k] for k in self.output_names}

  @functools.cached_property
  def _apply(self):
    def apply(variables, sources, masks, source_landmarks, driving_landmarks, tps_flow):
      return uint8_outputs(self.float_outputs(variables, images.to_float_image(sources), images.to_float_mask(masks),
                                              source_landmarks, driving_landmarks, tps_flow))
    return jax.jit(apply)

  def outputs(self, sources: np.ndarray, masks: np.ndarray, source_landmarks: np.ndarray,
              driving_landmarks: np.ndarray) -> dict:
    """Every image the generator makes, uint8 `[B, R, R, 3]`: "generated" and, with motion,
    "warped" (the source warped into the pose) and "blend_mask" (grey, white = the warp kept).
    Arguments as `__call__`."""
    sources, masks, source_landmarks, driving_landmarks = check_inputs(
        self.resolution, self.mask_channels, sources, masks, source_landmarks, driving_landmarks)
    out = self._apply(self.variables, sources, masks, source_landmarks, driving_landmarks,
                      self.tps_flow(source_landmarks, driving_landmarks))
    return {k: np.asarray(v) for k, v in out.items()}

  def __call__(self, sources: np.ndarray, masks: np.ndarray, source_landmarks: np.ndarray,
               driving_landmarks: np.ndarray) -> np.ndarray:
    """Args: sources `[B, R, R, 3]` uint8 face crops; masks `[B, R, R, M]` uint8 driving masks;
    source_landmarks, driving_landmarks `[B, 68, 2]` crop pixels (x, y) of the sources' faces and
    of the poses the masks were rendered from.

    Returns: generated faces `[B, R, R, 3]` uint8.
    """
    return self.outputs(sources, masks, source_landmarks, driving_landmarks)["generated"]
