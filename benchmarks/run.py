r"""All performance figures of facegen-jax from one run, side by side with PyTorch; writes BENCHMARKS.md.

  python benchmarks/run.py [--quick] [--resolutions=64,128,256] [--configs=tiny,default] [--batch=4]
                           [--baseline_resolutions=64,128] [--no_torch] [--no_others] [--out=BENCHMARKS.md]

For each model size (experiments/configs tiny.py and default.py, synthetic batches, identity and
perceptual losses off: their pretrained nets are not part of the GAN) and resolution:
  * train step images/s: the jitted G+D step of facegen_jax.train.step (conv_impl "auto", i.e.
    the oneDNN convolutions of models/conv/onednn.py on CPU) and, at --baseline_resolutions, with
    the XLA formulations of models/conv/xla_rewrites.py, with XLA's own convolutions, and in bfloat16
    (compute_dtype; float32 parameters);
  * generator inference images/s (`train=False`, jitted);
  * FLOPs per image from XLA's cost analysis of the compiled programs, and the achieved fraction
    of this machine's float32 matmul peak (the fastest of JAX's, NumPy's and PyTorch's matmuls),
    measured in the same run;
  * XLA's memory analysis of the compiled train step (arguments + outputs + temporaries);
  * the same train step and inference in PyTorch (benchmarks/torch_reference.py, same layers and
    FLOPs), timed in the same run by benchmarks/torch_timer.py in a child process, taking turns
    with JAX (see `interleaved`), and the JAX / PyTorch time ratios.
Then the other benchmark scripts (data pipeline, landmarks, identity net, end-to-end reenactment at
256x256) are run and their output is quoted. Times are the best of several calls (the machine may be shared: the least disturbed
call is the most faithful); ratios come from the same run. --quick: 64 and 128 only, fewer repeats,
no baseline and no other scripts.
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from benchmarks import common  # pylint: disable=wrong-import-position
from facegen_jax.models import factory  # pylint: disable=wrong-import-position
from facegen_jax.train import sharding, state as state_lib, step as step_lib  # pylint: disable=wrong-import-position

TORCH_TIMER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_timer.py")


def torch_version():
  """The installed torch's version, or None; torch itself is only imported by benchmarks/torch_timer.py."""
  try:
    return importlib.metadata.version("torch")
  except importlib.metadata.PackageNotFoundError:
    return None

OTHER_SCRIPTS = [  # (script, arguments)
    ("data_pipeline.py", ["--batches=20", "--workers=0,2"]),
    ("landmarks.py", ["--frames=90"]),
    ("identity_net.py", []),
    ("reenact.py", ["--frames=60"]),
]


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def cpu_flags() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      flags = next(line for line in f if line.startswith("flags")).split()
    return ", ".join(f for f in ("avx2", "fma", "avx512f", "amx_tile") if f in flags) or "none of avx2/fma/avx512"
  except (OSError, StopIteration):
    return "unknown"


def _compiled_train_step(config, batch_np):
  mesh = sharding.make_mesh(jax.devices()[:1])
  train_step = sharding.jit_train_step(step_lib.make_train_step(config), mesh)
  state = sharding.replicate(state_lib.create_train_state(config), mesh)
  batch = sharding.shard_batch(batch_np, mesh)
  frozen = step_lib.LossNets().frozen_params()
  return train_step.lower(state, batch, frozen).compile(), state, batch, frozen


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0))


def counted_flops(name, res, batch, batch_np=None, infer=False) -> float:
  """FLOPs per call from XLA's cost analysis of the program with the "fast" XLA formulations.

  XLA cannot see inside the oneDNN custom calls (it counts them as 0 FLOPs), and XLA's own
  transposed convolutions count the multiplications by the dilation zeros; the "fast" program does
  the same arithmetic as the oneDNN one, all in ops XLA counts.
  """
  config = common.benchmark_config(name, res, batch, conv_impl="fast")
  if infer:
    generator = factory.build_generator(config)
    g_vars, _, g_in, _ = common.init_models(config, batch)
    return common.xla_flops(jax.jit(lambda v, *x: generator.apply(v, *x, train=False)["generated"]), g_vars, *g_in)
  return _flops(_compiled_train_step(config, batch_np)[0])


def jax_train(config, batch_np):
  """(one-call function, FLOPs per step as XLA counts them, XLA bytes) of the jitted train step.

  The function runs one step and returns its metrics; it has made one warm-up call."""
  compiled, state, batch, frozen = _compiled_train_step(config, batch_np)
  mem = compiled.memory_analysis()
  mem_bytes = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
               - mem.alias_size_in_bytes) if mem is not None else float("nan")
  holder = {"state": state}

  def run():
    holder["state"], metrics, _ = compiled(holder["state"], batch, frozen)
    return metrics

  metrics = jax.device_get(run())
  if not np.isfinite(float(metrics["g/total"])):
    raise RuntimeError(f"non-finite generator loss at {config.resolution}")
  return run, _flops(compiled), mem_bytes


def jax_infer(config, batch_size):
  """(one-call function, FLOPs per call) of the generator at inference (running statistics), warmed up."""
  generator = factory.build_generator(config)
  g_vars, _, g_in, _ = common.init_models(config, batch_size)
  fn = jax.jit(lambda v, *x: generator.apply(v, *x, train=False)["generated"])
  flops = common.xla_flops(fn, g_vars, *g_in)
  run = lambda: fn(g_vars, *g_in)
  common.block(run())
  return run, flops


class TorchTimer:
  """benchmarks/torch_timer.py in a child process: PyTorch timings on request (see its docstring)."""

  def __init__(self):
    self.proc = subprocess.Popen([sys.executable, TORCH_TIMER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True, cwd=common.REPO_ROOT)

  def ask(self, **request) -> dict:
    self.proc.stdin.write(json.dumps(request) + "\n")
    self.proc.stdin.flush()
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError(f"benchmarks/torch_timer.py ended (exit code {self.proc.wait()}) on {request}; "
                         "its error is printed above")
    reply = json.loads(line)
    if "error" in reply:
      raise RuntimeError(f"benchmarks/torch_timer.py failed on {request}: {reply['error']}")
    return reply

  def seconds(self, op, name, res, batch, warm_seconds: float, calls: int, dtype: str = "float32") -> list:
    return self.ask(op=op, config=name, res=res, batch=batch, warm_seconds=warm_seconds, calls=calls,
                    dtype=dtype)["seconds"]

  def close(self):
    self.proc.stdin.close()
    self.proc.wait()


def interleaved(calls: dict, repeats: int, per_round: int = 2, warm_seconds: float = 0.3) -> dict:
  """The best of `repeats` timed calls of each timer, in rounds that alternate between the timers.

  `calls` maps a name to a function f(warm_seconds, n) that makes untimed calls for `warm_seconds`
  and then returns the seconds of each of `n` timed calls (common.warm_then_time). Each round gives
  every timer `per_round` timed calls, the order flipping every round, so PyTorch and JAX sample
  the same stretches of a shared machine's load and the ratio between them stays faithful. The
  warm-up before each turn matters: a process that idled while the other ran is slow for its first
  calls (see common.warm_then_time).
  """
  best = {k: float("inf") for k in calls}
  names = list(calls)
  for i in range(-(-repeats // per_round)):
    for k in (names if i % 2 == 0 else names[::-1]):
      best[k] = min([best[k]] + list(calls[k](warm_seconds, per_round)))
  return best


def against_torch(run, timer, op, name, res, batch, repeats, dtype="float32"):
  """(JAX seconds, PyTorch seconds or None): best calls of `run` and of PyTorch's `op`, in turns
  (dtype "bfloat16": PyTorch under bfloat16 autocast)."""
  calls = {"jax": lambda w, n: common.warm_then_time(run, w, n)}
  if timer is not None:
    calls["torch"] = lambda w, n: timer.seconds(op, name, res, batch, w, n, dtype)
  best = interleaved(calls, repeats)
  return best["jax"], best.get("torch")


def run_other(script, args, timeout):
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), script)
  if not os.path.exists(path):
    return None
  start = time.perf_counter()
  try:
    proc = subprocess.run([sys.executable, path] + args, capture_output=True, text=True, timeout=timeout,
                          check=False, cwd=os.path.dirname(os.path.dirname(path)))  # scripts name sample_data/
    text = proc.stdout.strip()
    if proc.returncode:
      text += f"\n[exit code {proc.returncode}] " + "\n".join(proc.stderr.strip().splitlines()[-5:])
  except subprocess.TimeoutExpired:
    text = f"[timed out after {timeout} s]"
  return f"$ python benchmarks/{script} {' '.join(args)}   ({time.perf_counter() - start:.0f} s)\n{text}"


def conv_backend() -> str:
  from facegen_jax.models import conv as fast_conv  # pylint: disable=import-outside-toplevel
  from facegen_jax.models.conv import onednn as onednn_conv  # pylint: disable=import-outside-toplevel
  impl = fast_conv.resolve_impl("auto")
  if impl == "onednn":
    limits = ", ".join(f"{dtype} under {onednn_conv.current_single_thread_mflop(dtype):g} MFLOP (${env})"
                       for dtype, env in onednn_conv.SINGLE_THREAD_ENV.items())
    return f"oneDNN {onednn_conv.version()} through XLA FFI custom calls; on one thread: {limits}"
  reason = onednn_conv.unavailable_reason()
  return f"{impl}" + (f" (oneDNN unavailable: {reason})" if reason else "")


def bf16_backend() -> str:
  from facegen_jax.models.conv import onednn as onednn_conv  # pylint: disable=import-outside-toplevel
  if onednn_conv.bf16_native():
    return "on oneDNN's bfloat16 primitives"
  return "on XLA: this CPU has no native oneDNN bfloat16 kernels"


def fmt(x, spec="{:.2f}"):
  return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else spec.format(x)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="64 and 128 only, fewer repeats, no baseline/others")
  parser.add_argument("--resolutions", default=None, help="comma list (default 64,128,256; quick 64,128)")
  parser.add_argument("--configs", default="tiny,default", help="model sizes: experiments/configs/NAME.py")
  parser.add_argument("--batch", type=int, default=4, help="images per step")
  parser.add_argument("--repeats", type=int, default=None, help="timed calls per figure (best kept)")
  parser.add_argument("--baseline_resolutions", default=None,
                      help="resolutions also timed with fast_conv and XLA's own convolutions (default 64,128; quick none)")
  parser.add_argument("--no_torch", action="store_true", help="skip PyTorch even when importable")
  parser.add_argument("--no_others", action="store_true", help="skip the other benchmark scripts")
  parser.add_argument("--other_timeout", type=int, default=300, help="seconds per other script")
  parser.add_argument("--out", default=os.path.join(common.REPO_ROOT, "BENCHMARKS.md"), help="markdown output")
  args = parser.parse_args()

  resolutions = [int(r) for r in (args.resolutions or ("64,128" if args.quick else "64,128,256")).split(",")]
  baseline = args.baseline_resolutions if args.baseline_resolutions is not None else ("" if args.quick else "64,128")
  baseline = {int(r) for r in baseline.split(",") if r}
  repeats = args.repeats or (2 if args.quick else 3)
  use_torch = torch_version() is not None and not args.no_torch
  started = time.perf_counter()
  load_start = os.getloadavg()

  timer = TorchTimer() if use_torch else None
  peaks = {"JAX": common.matmul_peak(), "NumPy": common.numpy_matmul_peak()}
  if use_torch:
    peaks["PyTorch"] = 2 * 1536**3 / timer.ask(op="matmul", n=1536, repeats=5)["seconds"]
  peak = max(peaks.values())
  print(f"float32 matmul peak: {peak / 1e9:.1f} GFLOP/s, the best of "
        + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in peaks.items()), flush=True)

  rows = []
  for name in args.configs.split(","):
    for res in resolutions:
      config = common.benchmark_config(name, res, args.batch)
      batch_np = common.synthetic_batch(config, args.batch)
      b = args.batch
      row = {"config": name, "res": res}
      run, _, mem = jax_train(config, batch_np)
      t, t_torch = against_torch(run, timer, "train", name, res, b, repeats)
      del run
      if res in baseline:
        run_fast, flops, _ = jax_train(common.benchmark_config(name, res, b, conv_impl="fast"), batch_np)
        t_fast = common.best_time(run_fast, repeats, warmup=0)
        del run_fast
        run_xla, _, _ = jax_train(common.benchmark_config(name, res, b, conv_impl="xla"), batch_np)
        t_xla = common.best_time(run_xla, repeats, warmup=0)
        del run_xla
        run_bf16, _, _ = jax_train(common.benchmark_config(name, res, b, compute_dtype="bfloat16"), batch_np)
        t_bf16, t_torch_bf16 = against_torch(run_bf16, timer, "train", name, res, b, repeats, "bfloat16")
        del run_bf16
        row.update(fast_ips=b / t_fast, xla_ips=b / t_xla, bf16_ips=b / t_bf16)
        if use_torch:
          row.update(torch_bf16_ips=b / t_torch_bf16, bf16_ratio=t_bf16 / t_torch_bf16)
      else:
        flops = counted_flops(name, res, b, batch_np)
      row.update(train_ips=b / t, train_s=t, train_gflop=flops / b / 1e9, train_peak=flops / t / peak, mem=mem / 2**20)
      if use_torch:
        row.update(torch_train_s=t_torch, train_ratio=t / t_torch, torch_train_peak=flops / t_torch / peak)

      run_inf, _ = jax_infer(config, b)
      t_inf, t_torch = against_torch(run_inf, timer, "infer", name, res, b, repeats)
      del run_inf
      inf_flops = counted_flops(name, res, b, infer=True)
      row.update(infer_ips=b / t_inf, infer_s=t_inf, infer_gflop=inf_flops / b / 1e9, infer_peak=inf_flops / t_inf / peak)
      if use_torch:
        row.update(torch_infer_s=t_torch, infer_ratio=t_inf / t_torch)
      rows.append(row)
      print(f"{name:8s} {res:4d}  train {row['train_ips']:7.2f} img/s ({100 * row['train_peak']:.0f}% of peak, "
            f"{row['train_gflop']:.2f} GFLOP/img)  infer {row['infer_ips']:7.2f} img/s"
            + (f"  | torch train {b / row['torch_train_s']:.2f} img/s ({100 * row['torch_train_peak']:.0f}% of peak), "
               f"infer {b / row['torch_infer_s']:.2f} img/s | JAX/torch train {row['train_ratio']:.2f}x, "
               f"infer {row['infer_ratio']:.2f}x" if use_torch else "")
            + (f"  | fast_conv {row['fast_ips']:.2f}, XLA convs {row['xla_ips']:.2f}, bfloat16 {row['bf16_ips']:.2f} img/s"
               if "xla_ips" in row else "")
            + (f" (torch bfloat16 {row['torch_bf16_ips']:.2f}, JAX/torch {row['bf16_ratio']:.2f}x)"
               if "bf16_ratio" in row else ""),
            flush=True)
  if timer is not None:
    timer.close()

  others = []
  if not args.no_others and not args.quick:
    for script, script_args in OTHER_SCRIPTS:
      out = run_other(script, script_args, args.other_timeout)
      if out is not None:
        print(out, flush=True)
        others.append(out)

  maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  write_markdown(args, rows, others, peak, peaks, maxrss_mb, load_start, os.getloadavg(),
                 time.perf_counter() - started, use_torch, repeats)


def write_markdown(args, rows, others, peak, peaks, maxrss_mb, load_start, load_end, seconds, use_torch,
                   repeats):
  lines = [
      "# Benchmarks",
      "",
      "Written by `benchmarks/run.py` (do not edit by hand). Command: `python benchmarks/run.py "
      + " ".join(sys.argv[1:]) + "`",
      "",
      f"- date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}; run took {seconds / 60:.1f} min",
      f"- machine: {cpu_model()}, {os.cpu_count()} cores ({cpu_flags()}), "
      f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, {platform.system()} "
      f"{platform.release()}",
      f"- software: Python {platform.python_version()}, jax {jax.__version__} ({jax.default_backend()}), "
      + (f"torch {torch_version()}" if torch_version() else "torch not installed"),
      f"- load average (1 min) at start {load_start[0]:.1f}, at end {load_end[0]:.1f}: the machine is shared, so "
      "absolute figures are noisy; ratios are measured within this one run",
      f"- float32 matmul peak measured in this run: {peak / 1e9:.1f} GFLOP/s, the fastest of "
      + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in peaks.items()) + " GFLOP/s ([1536, 1536] @ [1536, 1536])",
      f"- batch {args.batch}; times are the best of {repeats} calls after a warm-up"
      + ("; PyTorch and JAX take turns of 2 timed calls, each turn after 0.3 s of untimed calls" if use_torch else "")
      + f"; process peak RSS {maxrss_mb:.0f} MiB (JAX; PyTorch runs in a process of its own)",
      "",
      f"- convolutions (`conv_impl` \"auto\"): {conv_backend()}",
      "",
      "| config | res | train img/s | train img/s, fast_conv | train img/s, XLA convs | train img/s, bfloat16 | "
      "torch train img/s, bfloat16 | bfloat16 train JAX/torch | torch train img/s | "
      "train JAX/torch | train GFLOP/img | train % of peak | torch train % of peak | infer img/s | "
      "torch infer img/s | infer JAX/torch | infer GFLOP/img | infer % of peak | XLA train memory MiB |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    t_train = args.batch / r["torch_train_s"] if use_torch else None
    t_infer = args.batch / r["torch_infer_s"] if use_torch else None
    lines.append(
        f"| {r['config']} | {r['res']} | {fmt(r['train_ips'])} | {fmt(r.get('fast_ips'))} | {fmt(r.get('xla_ips'))} | "
        f"{fmt(r.get('bf16_ips'))} | {fmt(r.get('torch_bf16_ips'))} | {fmt(r.get('bf16_ratio'), '{:.2f}x')} | "
        f"{fmt(t_train)} | "
        f"{fmt(r.get('train_ratio'), '{:.2f}x')} | {fmt(r['train_gflop'])} | {fmt(100 * r['train_peak'], '{:.0f}%')} | "
        f"{fmt(100 * r['torch_train_peak'] if use_torch else None, '{:.0f}%')} | "
        f"{fmt(r['infer_ips'])} | {fmt(t_infer)} | {fmt(r.get('infer_ratio'), '{:.2f}x')} | {fmt(r['infer_gflop'])} | "
        f"{fmt(100 * r['infer_peak'], '{:.0f}%')} | {fmt(r['mem'], '{:.0f}')} |")
  lines += [
      "",
      "- train step: one G+D update of `facegen_jax.train.step` (G forward, D step on real + fake, G step on "
      "pixel + reconstruction L1 + hinge adversarial, EMA), jitted, synthetic batch; the PyTorch column runs "
      "`benchmarks/torch_reference.TorchTrainStep` (same layers, shapes and FLOPs) in a process of its own "
      "(`benchmarks/torch_timer.py`: in one process PyTorch and oneDNN share one libgomp, and after oneDNN ran, "
      "PyTorch's small-op steps were up to 3x slower). PyTorch and JAX take turns (each turn: untimed calls for 0.3 s, "
      "since a process that idled is slow for its first calls, then 2 timed calls), so both see the same load; "
      "each figure is the best timed call.",
      "- `train img/s` and `infer img/s`: `conv_impl` \"auto\" (on CPU the oneDNN convolutions of "
      "`facegen_jax/models/conv/onednn.py` where they build, else fast_conv); `train img/s, fast_conv`: "
      "`conv_impl = \"fast\"` (the stride-1 reformulations in XLA of `facegen_jax/models/conv/xla_rewrites.py`); "
      "`XLA convs`: `conv_impl = \"xla\"` (XLA's own convolution gradients); `bfloat16`: `compute_dtype = "
      "\"bfloat16\"` (float32 parameters; convolutions " + bf16_backend() + "), timed in turns with PyTorch's "
      "own mixed precision: the same step under `torch.autocast(\"cpu\", torch.bfloat16)`.",
      "- GFLOP/img: XLA's cost analysis of the program with `conv_impl = \"fast\"` (same arithmetic; XLA counts no "
      "FLOPs inside the oneDNN custom calls), divided by the batch; % of peak = those FLOPs per second over the "
      "matmul peak above (the fastest of the three matmuls: the machine's peak, not one framework's); the "
      "PyTorch step does the same FLOPs.",
      "- XLA train memory: arguments + outputs + temporaries - donated aliases of the compiled train step "
      "(`compiled.memory_analysis()`; oneDNN's per-call scratch buffers are not included).",
  ]
  if others:
    lines += ["", "## Other benchmark scripts", "", "```"] + "\n\n".join(others).splitlines() + ["```"]
  with open(args.out, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
