r"""Times the PyTorch reference (benchmarks/torch_reference.py) on request, in a process of its own.

benchmarks/run.py starts this process once and alternates its timed calls with the JAX ones, call
by call, so PyTorch and JAX are measured under the same load on a shared machine. It is a process
of its own because PyTorch and the oneDNN convolutions of facegen_jax/models/conv/onednn.py share
one libgomp inside one process: once oneDNN had run, PyTorch's small-op steps were up to 3x slower.

Protocol: one JSON object a line on stdin, one JSON object a line in reply:
  {"op": "matmul", "n": 1536, "repeats": 5}                              -> {"seconds": best call}
  {"op": "train" | "infer", "config": "default", "res": 128, "batch": 4,
   "warm_seconds": 0.3, "calls": 2, "dtype": "float32"}                  -> {"seconds": [per timed call]}
  {"op": "threads"}                                                      -> {"threads": n}
"dtype" "bfloat16" runs the forward passes under `torch.autocast("cpu", torch.bfloat16)`, PyTorch's
own mixed precision (float32 parameters, bfloat16 convolutions). The first "train"/"infer"
request of each (config, res, batch, dtype) builds the model. Every such
request first makes untimed calls for `warm_seconds` (at least one), then times `calls` calls back
to back (see common.warm_then_time). Errors are replied as {"error": "..."}; end of input ends the
process.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=wrong-import-position
import torch  # pylint: disable=wrong-import-position

from benchmarks import common  # pylint: disable=wrong-import-position
from benchmarks import torch_reference  # pylint: disable=wrong-import-position


def torch_inputs(batch_np: dict):
  """(source, target, driving_mask, target_mask) NCHW float tensors from a uint8 NHWC batch."""
  img = lambda k: torch.from_numpy(batch_np[k].transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1)
  msk = lambda k: torch.from_numpy(batch_np[k].transpose(0, 3, 1, 2).astype(np.float32) / 255)
  return img("source"), img("target"), msk("driving_mask"), msk("target_mask")


def build(op: str, name: str, res: int, batch: int, dtype: str = "float32"):
  """A no-argument callable running one PyTorch train step or one generator inference."""
  if dtype not in ("float32", "bfloat16"):
    raise ValueError(f"unknown dtype {dtype!r}: float32 or bfloat16")
  config = common.benchmark_config(name, res, batch)
  source, target, driving_mask, target_mask = torch_inputs(common.synthetic_batch(config, batch))
  autocast = torch.bfloat16 if dtype == "bfloat16" else None
  if op == "train":
    step = torch_reference.TorchTrainStep(config, autocast=autocast)
    return lambda: step(source, target, driving_mask, target_mask)
  generator = torch_reference.Generator(config).eval()

  def infer():
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast is not None):
      return generator(source, driving_mask)["generated"]

  return infer


def handle(request: dict, cache: dict) -> dict:
  op = request["op"]
  if op == "threads":
    return {"threads": torch.get_num_threads()}
  if op == "matmul":
    n = int(request.get("n", 1536))
    a, b = torch.randn(n, n), torch.randn(n, n)
    return {"seconds": common.best_time(lambda: a @ b, int(request.get("repeats", 5)))}
  if op in ("train", "infer"):
    key = (op, request["config"], int(request["res"]), int(request["batch"]), request.get("dtype", "float32"))
    if key not in cache:
      cache[key] = build(*key)
    return {"seconds": common.warm_then_time(cache[key], float(request.get("warm_seconds", 0.3)),
                                             int(request.get("calls", 1)))}
  raise ValueError(f"unknown op {op!r}")


def main():
  # Replies go to the original stdout; anything a library prints goes to stderr instead.
  replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
  os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
  torch.set_num_threads(os.cpu_count())
  cache = {}
  for line in sys.stdin:
    if not line.strip():
      continue
    try:
      reply = handle(json.loads(line), cache)
    except Exception as e:  # pylint: disable=broad-except
      reply = {"error": f"{type(e).__name__}: {e}"}
    replies.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
  main()
