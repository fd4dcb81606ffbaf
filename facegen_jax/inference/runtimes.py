"""Runs a generator from any export: `load_generator(path)` picks the runtime.

Runtimes (`RUNTIMES`):
- "jax": `GeneratorModel` (a training workdir, or an export folder with generator.msgpack);
- "jax_export": generator.jax, the serialized StableHLO program, through `jax.export`;
- "onnxruntime": generator.onnx through onnxruntime (execution providers: `$FACEGEN_ORT_PROVIDERS`,
  comma-separated, else CUDA where onnxruntime-gpu offers it, then CPU; TensorRT only when asked:
  `FACEGEN_ORT_PROVIDERS=TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider`).

`path` may be a program file (`model.onnx`, `model.jax`, each with its contract `F.json` beside
it) or a folder: "auto" takes generator.msgpack / a workdir first, then generator.jax, then
generator.onnx. An `ExportedGenerator` has `GeneratorModel`'s inference interface (resolution,
mask_per_part, mask_channels, output_names, info, outputs, __call__, tps_flow), so the Reenactor's
landmarks, motion, blend and paste-back run unchanged on it; with motion it computes the program's
`tps_flow` input with the JAX runtime's function (`GeneratorModel.tps_flow`: float64 numpy). Before use the program file is checked against
its contract (sha256, input shapes, outputs) and, in a folder, the contract against config.json.
"""

import json
import os
from typing import Optional

import numpy as np

from facegen_jax.inference import export_formats
from facegen_jax.inference.generator_model import (EXPORT_FILE, GeneratorModel, check_inputs, load_config,
                                                   output_names, uint8_outputs)
from facegen_jax.io import images
from facegen_jax.models import factory

RUNTIMES = ("auto", "jax", "jax_export", "onnxruntime")
_FORMAT_RUNTIME = {"jax": "jax_export", "onnx": "onnxruntime"}
_EXTENSION_FORMAT = {os.path.splitext(f)[1]: fmt for fmt, f in export_formats.PROGRAM_FILES.items()}
PROVIDERS_ENV = "FACEGEN_ORT_PROVIDERS"


def read_contract(program: str) -> dict:
  """The contract beside `program`, checked against the file's sha256; ValueError /
  FileNotFoundError naming the file and what differs."""
  path = export_formats.contract_path(program)
  if not os.path.exists(program):
    raise FileNotFoundError(f"{program} not found")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: an exported generator needs the contract export.py writes beside "
                            f"it; export again with experiments/export.py")
  try:
    with open(path) as f:
      c = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e}); export again with experiments/export.py") from e
  missing = [k for k in ("format", "sha256", "resolution", "mask_channels", "mask_per_part", "inputs", "outputs")
             if k not in c]
  if missing:
    raise ValueError(f"{path} lacks {', '.join(missing)}; export again with experiments/export.py")
  digest = export_formats.sha256(program)
  if digest != c["sha256"]:
    raise ValueError(f"{program} is damaged or was replaced: its sha256 {digest[:12]}... differs from the "
                     f"{c['sha256'][:12]}... {os.path.basename(path)} recorded at export; export again")
  return c


def _check_against_config(contract: dict, program: str, config) -> None:
  """An export folder's program must be the model of the config.json beside it."""
  want = {"resolution": int(config.resolution), "mask_channels": factory.mask_channels(config),
          "motion": str(config.model.motion), "outputs": list(output_names(config))}
  have = dict(contract, outputs=[o["name"] for o in contract["outputs"]])
  bad = [f"{k} {have.get(k)!r} vs {v!r}" for k, v in want.items() if have.get(k) != v]
  if bad:
    raise ValueError(f"{program} does not match the config.json beside it ({'; '.join(bad)}, contract vs config): "
                     "it was exported from another model; export again into this folder")


def _shape_mismatch(program: str, got: list, contract: dict) -> None:
  """`got`: per input, its shape with the batch dimension as None. Raises naming what differs."""
  want = [[None] + list(i["shape"][1:]) for i in contract["inputs"]]
  if [list(g) for g in got] != want:
    raise ValueError(f"{program} takes inputs {got}, but its contract {os.path.basename(program)}.json says {want} "
                     "(batch first): the file and its contract come from different exports; export again")


class ExportedGenerator:
  """An exported generator program with `GeneratorModel`'s inference interface.

  Attributes:
    path: the program file; contract: its contract (export_formats);
    runtime: "jax_export" or "onnxruntime"; config: the config.json beside it, or None.
  """

  def __init__(self, path: str, runtime: str, config=None, providers: Optional[list] = None):
    self.path, self.runtime, self.config = path, runtime, config
    self.contract = read_contract(path)
    fmt = {"jax_export": "jax", "onnxruntime": "onnx"}[runtime]
    if self.contract["format"] != fmt:
      raise ValueError(f"{path}: its contract says format {self.contract['format']!r}, not {fmt!r}")
    if config is not None:
      _check_against_config(self.contract, path, config)
    self.resolution = int(self.contract["resolution"])
    self.mask_per_part = bool(self.contract["mask_per_part"])
    self.mask_channels = int(self.contract["mask_channels"])
    self.output_names = tuple(o["name"] for o in self.contract["outputs"])
    self.input_names = tuple(i["name"] for i in self.contract["inputs"])
    self.motion_smoothing = None
    if export_formats.FLOW_INPUT in self.input_names:
      if not isinstance(self.contract.get("tps"), dict) or "smoothing" not in self.contract["tps"]:
        raise ValueError(f"{export_formats.contract_path(path)} has a {export_formats.FLOW_INPUT} input but no "
                         "tps.smoothing to compute it with; export again with experiments/export.py")
      self.motion_smoothing = float(self.contract["tps"]["smoothing"])
    self.motion = str(self.contract.get("motion", "landmark_tps"))
    self.info = dict(self.contract.get("weights", {}))
    self._run = self._load_jax() if runtime == "jax_export" else self._load_onnx(providers)

  def _load_jax(self):
    import jax  # pylint: disable=import-outside-toplevel
    with open(self.path, "rb") as f:
      data = f.read()
    try:
      exported = jax.export.deserialize(bytearray(data))
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f"{self.path} is not a serialized jax.export program ({type(e).__name__}: {e}); "
                       "export again") from e
    got = [[None if not isinstance(d, int) else d for d in a.shape] for a in exported.in_avals]
    _shape_mismatch(self.path, got, self.contract)
    if len(exported.out_avals) != len(self.output_names):
      raise ValueError(f"{self.path} returns {len(exported.out_avals)} images but its contract names "
                       f"{list(self.output_names)}; export again")
    call = jax.jit(exported.call)
    return lambda *inputs: [np.asarray(o) for o in call(*inputs)]

  def _load_onnx(self, providers: Optional[list]):
    try:
      import onnxruntime as ort  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise ValueError(f"{self.path} needs onnxruntime: pip install -e '.[onnx]' (or onnxruntime-gpu)") from e
    providers = providers or onnx_providers(ort.get_available_providers())
    try:
      session = ort.InferenceSession(self.path, providers=providers)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f"onnxruntime cannot load {self.path} ({type(e).__name__}: {e}); export again") from e
    got = [[d if isinstance(d, int) else None for d in i.shape] for i in session.get_inputs()]
    _shape_mismatch(self.path, got, self.contract)
    names = [o.name for o in session.get_outputs()]
    if names != list(self.output_names):
      raise ValueError(f"{self.path} returns {names} but its contract names {list(self.output_names)}; export again")
    input_names = [i.name for i in session.get_inputs()]
    if input_names != list(self.input_names):
      raise ValueError(f"{self.path} takes {input_names} but its contract names {list(self.input_names)}; export again")
    self.providers = session.get_providers()
    return lambda *inputs: session.run(None, dict(zip(input_names, inputs)))

  @property
  def variables(self):
    """An exported program has its weights baked in: nothing to fine-tune (personalization)."""
    raise ValueError(f"{self.path} is an exported program with its weights baked in; personalization "
                     "(--finetune_steps) needs the weights: use a training workdir or a msgpack export")

  tps_flow = GeneratorModel.tps_flow  # the same float64 host flow (reads resolution, motion_smoothing, motion)

  def float_outputs(self, sources, masks, source_landmarks, driving_landmarks) -> dict:
    """The program's outputs (`output_names` -> float32 numpy) for float32 inputs (with motion,
    the `tps_flow` input computed from the landmarks)."""
    inputs = [sources, masks, source_landmarks, driving_landmarks]
    flow = self.tps_flow(source_landmarks, driving_landmarks)
    inputs += [] if flow is None else [flow]
    return dict(zip(self.output_names, self._run(*(np.ascontiguousarray(x, np.float32) for x in inputs))))

  def outputs(self, sources: np.ndarray, masks: np.ndarray, source_landmarks: np.ndarray,
              driving_landmarks: np.ndarray) -> dict:
    """As `GeneratorModel.outputs`: uint8 inputs and images."""
    sources, masks, source_landmarks, driving_landmarks = check_inputs(
        self.resolution, self.mask_channels, sources, masks, source_landmarks, driving_landmarks)
    out = self.float_outputs(images.to_float_image(sources), images.to_float_mask(masks), source_landmarks,
                             driving_landmarks)
    return uint8_outputs(out)

  def __call__(self, sources, masks, source_landmarks, driving_landmarks) -> np.ndarray:
    return self.outputs(sources, masks, source_landmarks, driving_landmarks)["generated"]


def onnx_providers(available) -> list:
  """The execution providers to ask onnxruntime for: `$FACEGEN_ORT_PROVIDERS`, else CUDA (where
  available) and CPU."""
  env = os.environ.get(PROVIDERS_ENV, "")
  if env:
    wanted = [p.strip() for p in env.split(",") if p.strip()]
    missing = [p for p in wanted if p not in available]
    if missing:
      raise ValueError(f"${PROVIDERS_ENV} asks for {missing}, which this onnxruntime lacks (it has {list(available)})")
    return wanted
  return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def _folder_runtime(path: str) -> str:
  if os.path.exists(os.path.join(path, EXPORT_FILE)) or os.path.isdir(os.path.join(path, "checkpoints")):
    return "jax"
  for fmt in ("jax", "onnx"):
    if os.path.exists(os.path.join(path, export_formats.PROGRAM_FILES[fmt])):
      return _FORMAT_RUNTIME[fmt]
  raise FileNotFoundError(f"{path} holds no generator: expected a training workdir (checkpoints/) or an export "
                          f"folder with {EXPORT_FILE}, {export_formats.PROGRAM_FILES['jax']} or "
                          f"{export_formats.PROGRAM_FILES['onnx']} (experiments/export.py writes them)")


def load_generator(path: str, use_ema: bool = True, runtime: str = "auto", providers: Optional[list] = None):
  """A GeneratorModel or ExportedGenerator for `path` (see module docstring)."""
  if runtime not in RUNTIMES:
    raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
  if os.path.isfile(path):
    fmt = _EXTENSION_FORMAT.get(os.path.splitext(path)[1].lower())
    if fmt is None:
      raise ValueError(f"{path}: a generator file must end in {' or '.join(_EXTENSION_FORMAT)} (an export of "
                       "experiments/export.py); a folder may be a training workdir or an export")
    if runtime not in ("auto", _FORMAT_RUNTIME[fmt]):
      raise ValueError(f"{path} is a {fmt} export; runtime {runtime!r} cannot run it")
    return ExportedGenerator(path, _FORMAT_RUNTIME[fmt], providers=providers)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"checkpoint path {path} does not exist (a training workdir, an export folder, "
                            "or a .onnx / .jax export)")
  if runtime == "auto":
    runtime = _folder_runtime(path)
  if runtime == "jax":
    return GeneratorModel.load(path, use_ema=use_ema)
  fmt = {v: k for k, v in _FORMAT_RUNTIME.items()}[runtime]
  program = os.path.join(path, export_formats.PROGRAM_FILES[fmt])
  if not os.path.exists(program):
    raise FileNotFoundError(f"{program} not found: runtime {runtime!r} needs it; write it with "
                            f"`experiments/export.py --format={fmt}`")
  return ExportedGenerator(program, runtime, config=load_config(path), providers=providers)
