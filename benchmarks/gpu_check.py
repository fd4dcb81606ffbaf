r"""The accelerator figures benchmarks/gpu_check.sh collects, as JSON.

  python benchmarks/gpu_check.py --what=train [--config=default] [--resolution=256] [--batch=8] --out=FILE
  python benchmarks/gpu_check.py --what=infer --export=DIR [--batch=32] --out=FILE

--what=train: the jitted G+D train step of facegen_jax.train.step (benchmarks/run.py's set-up:
synthetic batches, identity and perceptual losses off) in float32 and bfloat16 (compute_dtype),
its FLOPs from XLA's cost analysis and their share of this device's bfloat16 matmul peak, measured
in the same run; beside it the PyTorch reference of benchmarks/torch_reference.py (the same layers)
on CUDA when torch sees a GPU (else on the CPU, marked so), float32 and bfloat16 autocast. Times
are the best of --repeats calls after a warm-up.

--what=infer: frames/s of an exported generator (experiments/export.py) at --batch, JAX float32
and bfloat16 (the export's config with compute_dtype changed), including the copy of the frames
to the host; with onnxruntime installed and a `generator.onnx` in the export, its CUDA provider
(or the CPU one where CUDA is not available) as well.
"""

import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
from absl import flags  # pylint: disable=wrong-import-position

from benchmarks import common  # pylint: disable=wrong-import-position
from benchmarks.run import jax_train  # pylint: disable=wrong-import-position
from facegen_jax import entry  # pylint: disable=wrong-import-position

_WHAT = flags.DEFINE_enum("what", None, ["train", "infer"], "Which figures.")
_CONFIG = flags.DEFINE_string("config", "default", "--what=train: experiments/configs/<name>.py.")
_RESOLUTION = flags.DEFINE_integer("resolution", 256, "--what=train: image size.")
_BATCH = flags.DEFINE_integer("batch", None, "Images per call (default: 8 for train, 32 for infer).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per figure (the best counts).")
_MATMUL_N = flags.DEFINE_integer("matmul_n", 8192, "--what=train: side of the bfloat16 peak matmul.")
_EXPORT = flags.DEFINE_string("export", None, "--what=infer: an export directory.")
_OUT = flags.DEFINE_string("out", None, "JSON file to write.")
flags.mark_flags_as_required(["what", "out"])


def bf16_matmul_peak(n: int, repeats: int) -> float:
  """This device's bfloat16 matmul rate in FLOP/s (`[n, n] @ [n, n]`, float32 accumulation)."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.bfloat16)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.bfloat16)
  f = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
  return 2.0 * n**3 / common.best_time(lambda: f(a, b), repeats)


def torch_train_seconds(name: str, res: int, batch: int, dtype: str, repeats: int):
  """(best seconds of one PyTorch reference train step, device) or (None, reason)."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
    from benchmarks import torch_reference, torch_timer  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    return None, f"no PyTorch ({e})"
  device = "cuda" if torch.cuda.is_available() else "cpu"
  config = common.benchmark_config(name, res, batch)
  inputs = [x.to(device) for x in torch_timer.torch_inputs(common.synthetic_batch(config, batch))]
  with torch.device(device):
    step = torch_reference.TorchTrainStep(config, autocast=torch.bfloat16 if dtype == "bfloat16" else None)

  def run():
    step(*inputs)  # returns floats: synchronises with the device
  return common.best_time(run, repeats), device


def train_figures() -> dict:
  name, res = _CONFIG.value, _RESOLUTION.value
  batch, repeats = _BATCH.value or 8, _REPEATS.value
  peak = bf16_matmul_peak(_MATMUL_N.value, repeats)
  rows = []
  for dtype in ("float32", "bfloat16"):
    config = common.benchmark_config(name, res, batch, compute_dtype=dtype)
    run, flops, mem = jax_train(config, common.synthetic_batch(config, batch))
    seconds = common.best_time(run, repeats, warmup=1)
    del run
    torch_seconds, torch_device = torch_train_seconds(name, res, batch, dtype, repeats)
    rows.append({"dtype": dtype, "jax_step_s": seconds, "jax_images_per_s": batch / seconds,
                 "xla_flops_per_step": flops, "share_of_bf16_matmul_peak": flops / seconds / peak,
                 "xla_memory_mib": mem / 2**20, "torch_step_s": torch_seconds, "torch_device": torch_device,
                 "jax_over_torch_time": seconds / torch_seconds if torch_seconds else None})
    print(json.dumps(rows[-1]), flush=True)
  return {"config": name, "resolution": res, "batch": batch, "bf16_matmul_peak_flops": peak, "rows": rows}


def onnx_frames_per_s(export: str, inputs: tuple, repeats: int):
  """(frames/s of `generator.onnx` in onnxruntime, provider) or (None, reason)."""
  path = os.path.join(export, "generator.onnx")
  try:
    import onnxruntime  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None, "onnxruntime not installed"
  if not os.path.exists(path):
    return None, f"no {path}"
  available = onnxruntime.get_available_providers()
  provider = "CUDAExecutionProvider" if "CUDAExecutionProvider" in available else "CPUExecutionProvider"
  session = onnxruntime.InferenceSession(path, providers=[provider])
  feed = {i.name: np.asarray(x) for i, x in zip(session.get_inputs(), inputs)}
  return len(inputs[0]) / common.best_time(lambda: session.run(None, feed), repeats), provider


def infer_figures() -> dict:
  from facegen_jax.inference.generator_model import GeneratorModel  # pylint: disable=import-outside-toplevel
  from facegen_jax.models import factory  # pylint: disable=import-outside-toplevel
  batch, repeats = _BATCH.value or 32, _REPEATS.value
  model = GeneratorModel.load(_EXPORT.value)
  config = model.config
  faces = common.synthetic_batch(config, batch)
  if factory.mask_channels(config) != faces["driving_mask"].shape[-1]:
    raise ValueError(f"{_EXPORT.value}: mask channels of the export differ from the synthetic batch")
  inputs = (faces["source"], faces["driving_mask"], faces["source_landmarks"], faces["driving_landmarks"])
  result = {"export": _EXPORT.value, "batch": batch, "resolution": int(config.resolution)}
  for dtype in ("float32", "bfloat16"):
    cfg = config.copy_and_resolve_references()
    with cfg.unlocked():
      cfg.compute_dtype = dtype
    typed = GeneratorModel(cfg, model.variables)
    typed(*inputs)  # compiles
    result[f"jax_{dtype}_frames_per_s"] = batch / common.best_time(lambda m=typed: m(*inputs), repeats)
  result["onnxruntime_frames_per_s"], result["onnxruntime"] = onnx_frames_per_s(_EXPORT.value, inputs, repeats)
  print(json.dumps(result), flush=True)
  return result


def main(argv):
  del argv
  started = time.time()
  figures = train_figures() if _WHAT.value == "train" else infer_figures()
  figures.update(device=str(jax.devices()[0].device_kind), platform=jax.default_backend(), jax=jax.__version__,
                 host=platform.node(), seconds=time.time() - started)
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  with open(_OUT.value, "w") as f:
    json.dump(figures, f, indent=2)


if __name__ == "__main__":
  entry.run(main)
