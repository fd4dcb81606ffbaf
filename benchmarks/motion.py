r"""What the landmark-driven motion costs: train step and generator inference with `model.motion`
"landmark_tps" and "landmark_pwa" against "none", in one run, calls interleaved.

  python benchmarks/motion.py [--cases=demo@128x8,default@256x4] [--repeats=5] [--out=BENCHMARKS.md]

For each case (experiments/configs/<name>.py at a resolution and batch, synthetic batches, the
identity and perceptual losses off as in benchmarks/run.py), the three models are compiled, then
timed in alternating rounds (forward, then backward order; the best call of each counts), so drift
in the machine's load reaches them alike. The train step solves the flow in its graph, as training
does; inference with motion counts what inference runs: the float64 host flow
(`models.motion.host_flow`, numpy) from the landmarks, then the generator taking it as `tps_flow`. Prints a markdown table; with --out, writes it into that file
between the `<!-- motion:begin -->` and `<!-- motion:end -->` lines (appended if absent).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
from absl import flags  # pylint: disable=wrong-import-position

from benchmarks import common  # pylint: disable=wrong-import-position
from benchmarks.run import cpu_model  # pylint: disable=wrong-import-position
from facegen_jax import entry  # pylint: disable=wrong-import-position
from facegen_jax.models import factory, motion as motion_lib  # pylint: disable=wrong-import-position
from facegen_jax.train import sharding, state as state_lib, step as step_lib  # pylint: disable=wrong-import-position

_CASES = flags.DEFINE_list("cases", ["demo@128x8", "default@256x4"], "config@RESOLUTIONxBATCH cases to time.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed rounds per case (best call counts).")
_OUT = flags.DEFINE_string("out", "", "Markdown file whose motion section is replaced (empty: print only).")
BEGIN, END = "<!-- motion:begin -->", "<!-- motion:end -->"
MOTIONS = ("none", "landmark_tps", "landmark_pwa")


def parse_case(case: str):
  name, size = case.split("@")
  res, batch = size.split("x")
  return name, int(res), int(batch)


def train_call(config):
  """One warmed-up call of the jitted train step (it returns the step's metrics)."""
  batch_np = common.synthetic_batch(config, config.global_batch_size)
  mesh = sharding.make_mesh(jax.devices()[:1])
  step = sharding.jit_train_step(step_lib.make_train_step(config), mesh)
  holder = {"state": sharding.replicate(state_lib.create_train_state(config), mesh)}
  batch, frozen = sharding.shard_batch(batch_np, mesh), step_lib.LossNets().frozen_params()

  def run():
    holder["state"], metrics, _ = step(holder["state"], batch, frozen)
    return metrics

  common.block(run())
  return run


def infer_call(config, batch: int):
  """One warmed-up call of generator inference: with motion, the host flow and the jitted generator."""
  generator = factory.build_generator(config)
  g_vars, _, g_in, _ = common.init_models(config, batch)
  motion = str(config.model.motion)
  fn = jax.jit(lambda v, *x, flow=None: generator.apply(v, *x, train=False, tps_flow=flow)["generated"])
  if motion == "none":
    run = lambda: fn(g_vars, *g_in)  # noqa: E731
  else:
    src_lm, drv_lm = np.asarray(g_in[2]), np.asarray(g_in[3])
    smoothing = float(config.model.motion_smoothing)
    run = lambda: fn(g_vars, *g_in, flow=motion_lib.host_flow(src_lm, drv_lm, config.resolution,  # noqa: E731
                                                              smoothing, motion))
  common.block(run())
  return run


def time_case(name: str, res: int, batch: int, repeats: int) -> dict:
  calls = {}
  for motion in MOTIONS:
    config = common.benchmark_config(name, res, batch)
    config.model.motion = motion
    calls[("train", motion)] = train_call(config)
    calls[("infer", motion)] = infer_call(config, batch)
  best = {key: float("inf") for key in calls}
  for r in range(repeats):
    order = list(calls) if r % 2 == 0 else list(reversed(calls))
    for key in order:
      best[key] = min(best[key], min(common.warm_then_time(calls[key], 0.2, 2)))
  return best


def table(results) -> str:
  lines = [f"CPU: {cpu_model()}, {os.cpu_count()} cores; jax {jax.__version__}; best call of interleaved rounds.", "",
           "Inference with motion includes the float64 host flow.", "",
           "| config | resolution | batch | motion | train step (s) | / none | "
           "generator inference (ms/image) | / none |",
           "|---|---|---|---|---|---|---|---|"]
  for (name, res, batch), best in results:
    t0, i0 = best[("train", "none")], best[("infer", "none")] / batch * 1e3
    for motion in MOTIONS:
      t1, i1 = best[("train", motion)], best[("infer", motion)] / batch * 1e3
      lines.append(f"| {name} | {res} | {batch} | {motion} | {t1:.3f} | {t1 / t0:.2f}x | {i1:.1f} | {i1 / i0:.2f}x |")
  return "\n".join(lines)


def write_section(path: str, body: str) -> None:
  common.write_section(path, BEGIN, END, "Cost of the landmark-driven motion (`benchmarks/motion.py`)", body)


def main(argv):
  del argv
  results = []
  for case in _CASES.value:
    name, res, batch = parse_case(case)
    results.append(((name, res, batch), time_case(name, res, batch, _REPEATS.value)))
    print(f"timed {case}", flush=True)
  body = table(results)
  print(body)
  if _OUT.value:
    write_section(_OUT.value, body)


if __name__ == "__main__":
  entry.run(main)
