"""Exported generators: files that run without this package, and the contract beside each.

`export(model, folder, formats)` writes, for each of `FORMATS`:
- "msgpack": config.json + generator.msgpack + export.json (`GeneratorModel.export`; this
  package and JAX load it);
- "jax": generator.jax, a serialized `jax.export` program (StableHLO) with a symbolic batch
  dimension, lowered for CPU and CUDA; `jax.export.deserialize(bytes).call(...)` runs it;
- "onnx": generator.onnx (jax2onnx), with a dynamic batch axis, its transposed convolutions
  rewritten as sub-pixel convolutions (`subpixel_transposed_convs`), checked with `onnx.checker`;
  onnxruntime runs it (CPU here; the CUDA and TensorRT execution providers where installed).

Both programs are `GeneratorModel.for_export()`'s `float_outputs` with the weights baked in, on
XLA's own convolutions. Inputs are float32: sources `[B, R, R, 3]` in [-1, 1], masks `[B, R, R, M]`
in [0, 1], source and driving landmarks `[B, 68, 2]` in crop pixels and, with motion, `tps_flow`
`[B, R/2, R/2, 2]`: the thin-plate spline's flow of those landmarks, which the caller computes in
float64 (`landmarks.tps.host_flow`, numpy only; the JAX runtime calls the same function), so the
programs hold no linear solve: in float32 the spline loses up to 0.2 px to rounding where two
driving landmarks nearly coincide, and two programs would lose it differently (landmarks/tps.py).
Outputs: the images of `output_names` (in [-1, 1]; "blend_mask" `[B, R, R, 1]` in [0, 1]).

Each program file `F` has `F.json` beside it, its contract: format, sha256 of `F`, resolution,
mask channels, the inputs and outputs with shapes and value ranges, with motion how to compute
`tps_flow` ("tps": the function, size, smoothing), where the weights came from, and the versions
that wrote it. `inference/runtimes.py` checks a file against it before use.
"""

import hashlib
import json
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from facegen_jax.inference.generator_model import GeneratorModel
from facegen_jax.landmarks import tps

FORMATS = ("msgpack", "jax", "onnx")
PROGRAM_FILES = {"jax": "generator.jax", "onnx": "generator.onnx"}
CONTRACT_SUFFIX = ".json"
INPUT_NAMES = ("sources", "masks", "source_landmarks", "driving_landmarks")
FLOW_INPUT = "tps_flow"  # the fifth input of a generator with motion
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


def input_names(model: GeneratorModel) -> tuple:
  """INPUT_NAMES, and FLOW_INPUT with motion."""
  return INPUT_NAMES + ((FLOW_INPUT,) if model.motion_smoothing is not None else ())


def input_specs(model: GeneratorModel, batch) -> list:
  """Shapes `(batch, ...)` of the inputs, in `input_names` order."""
  r, m = model.resolution, model.mask_channels
  specs = [(batch, r, r, 3), (batch, r, r, m), (batch, 68, 2), (batch, 68, 2)]
  if model.motion_smoothing is not None:
    f = tps.flow_size(r)
    specs.append((batch, f, f, 2))
  return specs


def contract(model: GeneratorModel, fmt: str, program: str) -> dict:
  """The contract of `program` (an exported file of `model`) as written beside it."""
  r = model.resolution
  ranges = {"sources": [-1.0, 1.0], "masks": [0.0, 1.0], "source_landmarks": [0.0, float(r)],
            "driving_landmarks": [0.0, float(r)], FLOW_INPUT: [-2.0, 2.0]}
  meanings = {
      "sources": "source face crops, RGB, uint8 / 127.5 - 1",
      "masks": "driving face masks rendered from driving_landmarks (landmarks.masks.render_masks), uint8 / 255",
      "source_landmarks": "68 (x, y) landmarks of the source crops, crop pixels (pixel centres at integers)",
      "driving_landmarks": "68 (x, y) landmarks of the driving pose, crop pixels",
      FLOW_INPUT: "for each pixel of the R/2 frame in the driving pose, the normalized (x, y) of the source to "
                  "read: the function this contract's tps.function names, (source_landmarks, driving_landmarks, "
                  "resolution[, smoothing]) (float64 numpy, cast to float32); smoothing is tps.smoothing where given",
  }
  inputs = [{"name": n, "shape": [BATCH] + list(s[1:]), "dtype": "float32", "range": ranges[n], "meaning": meanings[n]}
            for n, s in zip(input_names(model), input_specs(model, BATCH))]
  outputs = [{"name": n, "shape": [BATCH, r, r, 1 if n == "blend_mask" else 3], "dtype": "float32",
              "range": [0.0, 1.0] if n == "blend_mask" else [-1.0, 1.0]} for n in model.output_names]
  versions = {"jax": jax.__version__}
  if fmt == "onnx":
    import jax2onnx  # pylint: disable=import-outside-toplevel
    import onnx  # pylint: disable=import-outside-toplevel
    versions.update(jax2onnx=getattr(jax2onnx, "__version__", "unknown"), onnx=onnx.__version__, opset=ONNX_OPSET)
  return {"format": fmt, "file": os.path.basename(program), "sha256": sha256(program), "resolution": r,
          "mask_per_part": model.mask_per_part, "mask_channels": model.mask_channels,
          "motion": str(model.config.model.motion), "inputs": inputs, "outputs": outputs,
          "weights": dict(model.info), "written_by": versions, **_tps_entry(model)}


def _tps_entry(model: GeneratorModel) -> dict:
  """With motion, how the caller computes the `tps_flow` input."""
  if model.motion_smoothing is None:
    return {}
  if str(model.config.model.motion) == "landmark_pwa":
    return {"tps": {"function": "facegen_jax.landmarks.pwa.host_flow", "size": tps.flow_size(model.resolution),
                    "smoothing": model.motion_smoothing, "anchors_per_side": tps.ANCHORS_PER_SIDE}}  # smoothing unused
  return {"tps": {"function": "facegen_jax.landmarks.tps.host_flow", "size": tps.flow_size(model.resolution),
                  "smoothing": model.motion_smoothing, "anchors_per_side": tps.ANCHORS_PER_SIDE}}


def _program_fn(model: GeneratorModel):
  """`fn(sources, masks, source_landmarks, driving_landmarks[, tps_flow]) -> tuple of output_names`
  with the weights as constants, on the exportable generator."""
  exportable = model.for_export()
  variables, names = exportable.variables, exportable.output_names

  def fn(sources, masks, source_landmarks, driving_landmarks, *tps_flow):
    out = exportable.float_outputs(variables, sources, masks, source_landmarks, driving_landmarks, *tps_flow)
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
  exported = jax.export.export(jax.jit(_program_fn(model)), platforms=tuple(platforms))(*specs)
  path = os.path.join(folder, PROGRAM_FILES["jax"])
  _write_atomic(path, bytes(exported.serialize()))
  _write_contract(model, "jax", path)
  return path


def _constant(name: str, producers: dict, initializers: dict):
  """The value of graph tensor `name` as numpy if only constants make it (an initializer, or nodes
  of constants: jax2onnx feeds a kernel through Slice and Transpose), else None."""
  from onnx import numpy_helper  # pylint: disable=import-outside-toplevel
  from onnx.reference import ReferenceEvaluator  # pylint: disable=import-outside-toplevel
  if name in initializers:
    return numpy_helper.to_array(initializers[name])
  node = producers.get(name)
  if node is None:
    return None
  args = {i: _constant(i, producers, initializers) for i in node.input if i}
  if any(v is None for v in args.values()):
    return None
  return ReferenceEvaluator(node).run(None, args)[list(node.output).index(name)]


def _phase_taps(r: int, pad: int, k: int) -> tuple:
  """Output row `2 m + r` of a stride-2 transposed convolution (kernel `k`, padding `pad` before)
  reads input row `m + (r + pad - t) // 2` with tap t, for the taps t of parity `r + pad`: (those
  taps ordered by input row, padding before, padding after) of the stride-1 convolution that
  computes this phase."""
  taps = sorted((t for t in range(k) if (r + pad - t) % 2 == 0), key=lambda t: (r + pad - t) // 2)
  return taps, -((r + pad - taps[0]) // 2), (r + pad - taps[-1]) // 2


def _folded_batch_norm(node, consumers: dict, producers: dict, initializers: dict):
  """(scale [C], shift [C], the BatchNormalization node) when the only reader of `node`'s output is
  an inference-mode BatchNormalization with constant statistics, else None."""
  readers = consumers.get(node.output[0], [])
  if len(readers) != 1 or readers[0].op_type != "BatchNormalization" or len(readers[0].output) != 1:
    return None
  bn = readers[0]
  from onnx import helper  # pylint: disable=import-outside-toplevel
  attrs = {a.name: helper.get_attribute_value(a) for a in bn.attribute}
  if set(attrs) - {"epsilon", "momentum", "training_mode"} or attrs.get("training_mode", 0):
    return None
  gamma, beta, mean, var = (_constant(i, producers, initializers) for i in bn.input[1:5])
  if any(v is None for v in (gamma, beta, mean, var)):
    return None
  scale = gamma / np.sqrt(var + attrs.get("epsilon", 1e-5))
  return scale, beta - mean * scale, bn


def subpixel_transposed_convs(proto) -> int:
  """Rewrites each stride-2 ConvTranspose of `proto` whose output is exactly twice its input
  (the decoders' 4x4 ones) as its four output phases: four stride-1 2x2 Convs of the undilated
  input with a quarter of the kernel each, concatenated and interleaved by DepthToSpace (DCR),
  the same sums (models/conv/xla_rewrites.py does the same in JAX); a batch norm reading only the
  transposed convolution's output is folded into the phases' kernels and biases (a per-channel
  affine map commutes with the interleave). onnxruntime's CPU ConvTranspose scatters through
  col2im; its Conv runs MLAS's blocked kernels. Returns how many were rewritten."""
  from onnx import helper, numpy_helper  # pylint: disable=import-outside-toplevel
  graph = proto.graph
  initializers = {i.name: i for i in graph.initializer}
  producers = {o: n for n in graph.node for o in n.output}
  consumers = {}
  for n in graph.node:
    for i in n.input:
      consumers.setdefault(i, []).append(n)
  nodes, folded, count = [], set(), 0
  for node in graph.node:
    if id(node) in folded:
      continue
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    kernel = None
    if node.op_type == "ConvTranspose" and attrs.get("strides") == [2, 2] and attrs.get("group", 1) == 1 \
        and attrs.get("dilations", [1, 1]) == [1, 1] and set(attrs) <= {"strides", "group", "dilations", "pads",
                                                                         "output_padding", "kernel_shape"}:
      kernel = _constant(node.input[1], producers, initializers)  # [C_in, C_out, kh, kw]
    if kernel is not None:
      pads, extra = attrs.get("pads", [0, 0, 0, 0]), attrs.get("output_padding", [0, 0])
      size = kernel.shape[2:]
      phases = [[_phase_taps(r, pads[d], size[d]) for r in range(2)] for d in range(2)]
      doubles = all(size[d] - pads[d] - pads[d + 2] + extra[d] == 2 for d in range(2))
      bias = _constant(node.input[2], producers, initializers) if len(node.input) > 2 and node.input[2] else 0.0
      if not doubles or bias is None or any(lo < 0 or hi < 0 for axis in phases for _, lo, hi in axis):
        kernel = None
    if kernel is None:
      nodes.append(node)
      continue
    count += 1
    base = node.name or f"conv_transpose_{count}"
    scale, shift, output = np.ones(kernel.shape[1], kernel.dtype), np.zeros(kernel.shape[1], kernel.dtype), node.output[0]
    bn = _folded_batch_norm(node, consumers, producers, initializers)
    if bn is not None:
      scale, shift, bn_node = bn
      folded.add(id(bn_node))
      output = bn_node.output[0]
    bias_name = base + "_bias"
    graph.initializer.append(numpy_helper.from_array((bias * scale + shift).astype(kernel.dtype), bias_name))
    outputs = []
    for ry, (rows, top, bottom) in enumerate(phases[0]):
      for rx, (cols, left, right) in enumerate(phases[1]):
        name = f"{base}_phase_{ry}{rx}"
        weight = kernel[:, :, rows][:, :, :, cols].transpose(1, 0, 2, 3) * scale[:, None, None, None]  # [C_out, C_in, 2, 2]
        graph.initializer.append(numpy_helper.from_array(weight.astype(kernel.dtype), name + "_kernel"))
        nodes.append(helper.make_node("Conv", [node.input[0], name + "_kernel", bias_name], [name], name=name,
                                      pads=[top, left, bottom, right]))
        outputs.append(name)
    nodes.append(helper.make_node("Concat", outputs, [base + "_phases"], name=base + "_phases", axis=1))
    nodes.append(helper.make_node("DepthToSpace", [base + "_phases"], [output], name=base + "_interleave",
                                  blocksize=2, mode="DCR"))
  del graph.node[:]
  graph.node.extend(nodes)
  return count


def _prune(proto) -> None:
  """Drops the nodes and initializers of `proto`'s graph that no output depends on."""
  graph = proto.graph
  needed = {o.name for o in graph.output}
  kept = []
  for node in reversed(graph.node):
    if any(o in needed for o in node.output):
      kept.append(node)
      needed.update(i for i in node.input if i)
  del graph.node[:]
  graph.node.extend(reversed(kept))
  initializers = [i for i in graph.initializer if i.name in needed]
  del graph.initializer[:]
  graph.initializer.extend(initializers)


def export_onnx(model: GeneratorModel, folder: str, subpixel: bool = True) -> str:
  """Writes generator.onnx (+ its contract) into `folder`, checked by `onnx.checker`; returns its
  path. `subpixel`: the transposed convolutions as sub-pixel convolutions
  (`subpixel_transposed_convs`; False keeps jax2onnx's ConvTranspose, for comparison)."""
  try:
    import onnx  # pylint: disable=import-outside-toplevel
    from jax2onnx import to_onnx  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ValueError(f"the onnx format needs {e.name}: pip install -e '.[onnx]' (onnx, onnxruntime, jax2onnx)") from e
  proto = to_onnx(_program_fn(model), input_specs(model, BATCH), model_name="facegen_generator", opset=ONNX_OPSET,
                  input_names=list(input_names(model)), output_names=list(model.output_names))
  # jax2onnx 0.17.1 annotates some NCHW intermediates with their NHWC shapes; the annotations are
  # optional, so they are dropped and the checker's full shape inference derives every shape anew.
  del proto.graph.value_info[:]
  if subpixel and subpixel_transposed_convs(proto):
    _prune(proto)  # the old kernels' constant chains (Slice, Transpose) feed nothing now
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

