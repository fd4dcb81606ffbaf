r"""How good each landmark flow is before any training: the warp an untrained warp-correcting
generator outputs, per `model.motion`, beside the classical landmark warp, on held-out pairs.

  python benchmarks/flows.py --configs=experiments/configs/faces.py,experiments/configs/demo.py \
      [--num_samples=128] [--out=BENCHMARKS.md]

For each config (its prepared dataset must exist: experiments/prepare_data.py), the pairs are the
training loop's own evaluation pairs (`evaluation/during_training.py`: two frames of one held-out
clip, or a held-out photo and its perturbed landmarks). Each flow is scored as the generator with
`model.motion_residual` outputs it at initialisation (its residual decoder starts at zero and its
refiner's residual flow too: the image is the source warped by the flow, in the graph), against
`evaluation/baselines.py`'s landmark-warp (a Delaunay mesh per source, in numpy). Prints a
markdown table; with --out, writes it between `<!-- flows:begin -->` and `<!-- flows:end -->`.
"""

import copy
import importlib.util
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=wrong-import-position
from absl import flags  # pylint: disable=wrong-import-position

from benchmarks import common  # pylint: disable=wrong-import-position
from facegen_jax import entry  # pylint: disable=wrong-import-position
from facegen_jax.evaluation.during_training import Evaluator  # pylint: disable=wrong-import-position
from facegen_jax.inference.generator_model import init_generator_variables  # pylint: disable=wrong-import-position
from facegen_jax.train import sharding  # pylint: disable=wrong-import-position

_CONFIGS = flags.DEFINE_list("configs", ["experiments/configs/faces.py", "experiments/configs/demo.py"],
                             "Config files whose prepared test split gives the pairs.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 128, "Pairs per config (rounded up to whole batches).")
_OUT = flags.DEFINE_string("out", "", "Markdown file whose flows section is replaced (empty: print only).")
BEGIN, END = "<!-- flows:begin -->", "<!-- flows:end -->"
FLOWS = ("landmark_tps", "landmark_pwa")


def score_config(path: str, num_samples: int) -> tuple:
  """(config, number of pairs, {method: scores}) for the config file at `path`."""
  spec = importlib.util.spec_from_file_location("flows_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.eval_num_samples = num_samples
  mesh, rows, targets = sharding.make_mesh(), {}, None
  for motion in FLOWS:
    flow_config = copy.deepcopy(config)
    flow_config.model.motion, flow_config.model.motion_residual = motion, True
    evaluator = Evaluator(flow_config, mesh)  # its generator is built here; its pairs are drawn alike (seeded)
    if targets is None:
      targets = [t.tobytes() for t in evaluator.targets()]
      rows["landmark-warp (baselines.py)"] = evaluator.reference()["landmark_warp"]
    elif [t.tobytes() for t in evaluator.targets()] != targets:
      raise RuntimeError(f"{path}: the evaluation pairs differ between two draws")
    rows[f"{motion} warp (untrained generator)"] = evaluator(
        init_generator_variables(flow_config, jax.random.PRNGKey(0)))
  return config, evaluator.num_samples, rows


def table(results) -> str:
  lines = ["Held-out pairs of each config's prepared test split, 128x128 uint8, scored as evaluate.py scores.", "",
           "| config | data | pairs | method | L1 | PSNR | SSIM |", "|---|---|---|---|---|---|---|"]
  for path, config, n, rows in results:
    for method, s in rows.items():
      lines.append(f"| {os.path.basename(path)} | {config.data.data_dir} | {n} | {method} | {s['l1']:.4f} | "
                   f"{s['psnr']:.2f} | {s['ssim']:.4f} |")
  return "\n".join(lines)


def main(argv):
  del argv
  results = []
  for path in _CONFIGS.value:
    config, n, rows = score_config(path, _NUM_SAMPLES.value)
    results.append((path, config, n, rows))
    print(f"scored {path}", flush=True)
  body = table(results)
  print(body)
  if _OUT.value:
    common.write_section(_OUT.value, BEGIN, END, "Landmark flows before training (`benchmarks/flows.py`)", body)


if __name__ == "__main__":
  entry.run(main)
