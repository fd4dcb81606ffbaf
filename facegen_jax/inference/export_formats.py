"""Exported generators: files that run without this package, and the contract beside each.

`export(model, folder, formats)` writes, for each of `FORMATS`:
- "msgpack": config.json + generator.msgpack + export.json (`GeneratorModel.export`; this
  package and JAX load it);
- "jax": generator.jax, a serialized `jax.export` program (StableHLO) with a symbolic batch
  dimension, lowered for CPU and CUDA; `jax.export.deserialize(bytes).call(...)` runs it;
- "onnx": generator.onnx (jax2onnx), with a dynamic batch axis, checked with `onnx.checker`;
  onnxruntime runs it (CPU here; the CUDA and TensorRT execution providers where installed).

Both programs are `GeneratorModel.for_export()`'s `float_outputs` with the weights baked in, on
XLA's own convolutions. With motion, the TPS system is solved as the JAX generator solves it
(LAPACK's LU; cuSOLVER's on CUDA) in the jax format, and by Gaussian elimination with partial
pivoting in the ONNX graph (`models.motion.solve_elimination`: ONNX has no linear solve, and
jax2onnx turns `lu` into per-element scatters, minutes to convert). The system is ill-conditioned
in float32 (condition number ~6e5 on real faces), so two solvers' rounding moves the warp by
~0.02 px and the ONNX images of a generator with motion differ from JAX's by up to ~0.02 (of
[-1, 1]) where the face moves; without motion, or with the landmarks unmoved, they agree to
~1e-5 (tests/export_formats_test.py). Inputs are float32: sources `[B, R, R, 3]` in [-1, 1], masks `[B, R, R, M]` in [0, 1],
source and driving landmarks `[B, 68, 2]` in crop pixels; outputs the images of
`output_names` (in [-1, 1]; "blend_mask" `[B, R, R, 1]` in [0, 1]).

Each program file `F` has `F.json` beside it, its contract: format, sha256 of `F`, resolution,
mask channels, the inputs and outputs with shapes and value ranges, where the weights came from,
and the versions that wrote it. `inference/runtimes.py` checks a file against it before use.
"""

import hashlib
import json
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from facegen_jax.inference.generator_model import GeneratorModel

FORMATS = ("msgpack", "jax", "onnx")
PROGRAM_FILES = {"jax": "generator.jax", "onnx": "generator.onnx"}
CONTRACT_SUFFIX = ".json"
INPUT_NAMES = ("sources", "masks", "source_landmarks", "driving_landmarks")
BATCH = "batch"  # the name of the symbolic / dynamic batch dimension
JAX_PLATFORMS = ("cpu", "cuda")
ONNX_OPSET = 23


def parse_formats(value: str) -> tuple:
  """"msgpack,onnx" -> ("msgpack", "onnx"); ValueError naming an unknown format."""
  formats = tuple(f.strip() for f in value.split(",") if f.strip())
  unknown = [f for f in formats if f not in FORMATS]
  if unknown or not formats:
    raise ValueError(f"--format={value!r}: choose one or more of {', '.join(FORMATS)} (comma-separated)")
  return formats


def contract_path(program: str) -> str:
  return program + CONTRACT_SUFFIX


def sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def input_specs(model: GeneratorModel, batch) -> list:
  """Shapes `(batch, ...)` of the four inputs, in INPUT_NAMES order."""
  r, m = model.resolution, model.mask_channels
  return [(batch, r, r, 3), (batch, r, r, m), (batch, 68, 2), (batch, 68, 2)]


def contract(model: GeneratorModel, fmt: str, program: str) -> dict:
  """The contract of `program` (an exported file of `model`) as written beside it."""
  r = model.resolution
  ranges = {"sources": [-1.0, 1.0], "masks": [0.0, 1.0], "source_landmarks": [0.0, float(r)],
            "driving_landmarks": [0.0, float(r)]}
  meanings = {
      "sources": "source face crops, RGB, uint8 / 127.5 - 1",
      "masks": "driving face masks rendered from driving_landmarks (landmarks.masks.render_masks), uint8 / 255",
      "source_landmarks": "68 (x, y) landmarks of the source crops, crop pixels (pixel centres at integers)",
      "driving_landmarks": "68 (x, y) landmarks of the driving pose, crop pixels",
  }
  inputs = [{"name": n, "shape": [BATCH] + list(s[1:]), "dtype": "float32", "range": ranges[n], "meaning": meanings[n]}
            for n, s in zip(INPUT_NAMES, input_specs(model, BATCH))]
  outputs = [{"name": n, "shape": [BATCH, r, r, 1 if n == "blend_mask" else 3], "dtype": "float32",
              "range": [0.0, 1.0] if n == "blend_mask" else [-1.0, 1.0]} for n in model.output_names]
  versions = {"jax": jax.__version__}
  if fmt == "onnx":
    import jax2onnx  # pylint: disable=import-outside-toplevel
    import onnx  # pylint: disable=import-outside-toplevel
    versions.update(jax2onnx=getattr(jax2onnx, "__version__", "unknown"), onnx=onnx.__version__, opset=ONNX_OPSET)
  return {"format": fmt, "file": os.path.basename(program), "sha256": sha256(program), "resolution": r,
          "mask_per_part": model.mask_per_part, "mask_channels": model.mask_channels,
          "motion": str(model.config.model.motion), "tps_solve": TPS_SOLVES[fmt], "inputs": inputs, "outputs": outputs,
          "weights": dict(model.info), "written_by": versions}


TPS_SOLVES = {"jax": "lapack", "onnx": "elimination"}  # how each format's program solves the TPS system


def _program_fn(model: GeneratorModel, fmt: str):
  """`fn(sources, masks, source_landmarks, driving_landmarks) -> tuple of output_names` with the
  weights as constants, on the exportable generator of format `fmt`."""
  exportable = model.for_export(TPS_SOLVES[fmt])
  variables, names = exportable.variables, exportable.output_names

  def fn(sources, masks, source_landmarks, driving_landmarks):
    out = exportable.float_outputs(variables, sources, masks, source_landmarks, driving_landmarks)
    return tuple(out[k] for k in names)
  return fn


def _write_atomic(path: str, data: bytes) -> None:
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def _write_contract(model: GeneratorModel, fmt: str, program: str) -> None:
  _write_atomic(contract_path(program), json.dumps(contract(model, fmt, program), indent=2).encode())


def export_jax(model: GeneratorModel, folder: str, platforms: Sequence[str] = JAX_PLATFORMS) -> str:
  """Writes generator.jax (+ its contract) into `folder`; returns its path."""
  (batch,) = jax.export.symbolic_shape(BATCH)
  specs = [jax.ShapeDtypeStruct(s, jnp.float32) for s in input_specs(model, batch)]
  exported = jax.export.export(jax.jit(_program_fn(model, "jax")), platforms=tuple(platforms))(*specs)
  path = os.path.join(folder, PROGRAM_FILES["jax"])
  _write_atomic(path, bytes(exported.serialize()))
  _write_contract(model, "jax", path)
  return path


def export_onnx(model: GeneratorModel, folder: str) -> str:
  """Writes generator.onnx (+ its contract) into `folder`, checked by `onnx.checker`; returns its path."""
  try:
    import onnx  # pylint: disable=import-outside-toplevel
    from jax2onnx import to_onnx  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ValueError(f"the onnx format needs {e.name}: pip install -e '.[onnx]' (onnx, onnxruntime, jax2onnx)") from e
  proto = to_onnx(_program_fn(model, "onnx"), input_specs(model, BATCH), model_name="facegen_generator", opset=ONNX_OPSET,
                  input_names=list(INPUT_NAMES), output_names=list(model.output_names))
  # jax2onnx 0.17.1 annotates some NCHW intermediates with their NHWC shapes; the annotations are
  # optional, so they are dropped and the checker's full shape inference derives every shape anew.
  del proto.graph.value_info[:]
  onnx.checker.check_model(proto, full_check=True)
  path = os.path.join(folder, PROGRAM_FILES["onnx"])
  _write_atomic(path, proto.SerializeToString())
  _write_contract(model, "onnx", path)
  return path


def export(model: GeneratorModel, folder: str, formats: Sequence[str] = ("msgpack",)) -> list:
  """Writes each of `formats` of `model` into `folder` (config.json and export.json always);
  returns the files written."""
  unknown = [f for f in formats if f not in FORMATS]
  if unknown:
    raise ValueError(f"unknown export format(s) {unknown}; choose from {FORMATS}")
  os.makedirs(folder, exist_ok=True)
  written = [model.export(folder)]  # config.json, export.json, generator.msgpack
  if "msgpack" not in formats:  # the programs stand alone: keep only what describes them
    os.remove(written.pop())
  if "jax" in formats:
    written.append(export_jax(model, folder))
  if "onnx" in formats:
    written.append(export_onnx(model, folder))
  return written


def reference_outputs(model: GeneratorModel, fmt: str, sources, masks, source_landmarks, driving_landmarks) -> dict:
  """What the program of format `fmt` computes, run in JAX: float outputs as numpy."""
  fn = jax.jit(_program_fn(model, fmt))
  out = fn(*(jnp.asarray(x, jnp.float32) for x in (sources, masks, source_landmarks, driving_landmarks)))
  return {k: np.asarray(v) for k, v in zip(model.output_names, out)}
