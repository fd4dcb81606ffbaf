"""Helpers shared by the benchmark scripts: configs, model set-up, timing, XLA cost analysis."""

import importlib.util
import os
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from facegen_jax.data.synthetic import SyntheticFaces
from facegen_jax.models import factory

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def benchmark_config(name: str, resolution: int, batch: int, conv_impl: str = "auto",
                     compute_dtype: str = "float32") -> ml_collections.ConfigDict:
  """experiments/configs/`name`.py at `resolution` and `batch`, with synthetic data and no
  identity/perceptual losses (their pretrained nets are not part of the GAN's own cost)."""
  spec = importlib.util.spec_from_file_location(f"config_{name}", REPO_ROOT / "experiments" / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.resolution, config.global_batch_size, config.compute_dtype = resolution, batch, compute_dtype
  if "conv_impl" in config.model:
    config.model.conv_impl = conv_impl
  for group in (config.loss.first, config.loss.perturbed):
    group.identity = group.perceptual = 0.0
  config.data.source = "synthetic"
  return config


def init_models(config: ml_collections.ConfigDict, batch: int):
  """(generator vars, discriminator vars, generator inputs (source, mask, source landmarks,
  driving landmarks), discriminator input). The landmarks are synthetic faces' (a generator with
  motion reads them)."""
  g, d = factory.build_generator(config), factory.build_discriminator(config)
  r, m = config.resolution, factory.mask_channels(config)
  rng = np.random.default_rng(0)
  source = jnp.asarray(rng.uniform(-1, 1, (batch, r, r, 3)).astype(np.float32))
  mask = jnp.asarray(rng.uniform(0, 1, (batch, r, r, m)).astype(np.float32))
  faces = synthetic_batch(config, batch)
  src_lm, drv_lm = jnp.asarray(faces["source_landmarks"]), jnp.asarray(faces["driving_landmarks"])
  d_in = jnp.asarray(rng.uniform(-1, 1, (batch, r, r, 3 + (m if config.discriminator.conditional else 0)))
                     .astype(np.float32))
  g_vars = g.init(jax.random.PRNGKey(0), source[:1], mask[:1], src_lm[:1], drv_lm[:1], train=False)
  d_vars = d.init(jax.random.PRNGKey(1), d_in[:1], train=False)
  return g_vars, d_vars, (source, mask, src_lm, drv_lm), d_in


def synthetic_batch(config: ml_collections.ConfigDict, batch: int) -> dict:
  """One batch in the training format (facegen_jax.data.batch) of synthetic faces."""
  it = SyntheticFaces(config.resolution, batch, mask_per_part=config.mask_per_part, seed=0, num_identities=8)
  return next(iter(it))


def block(tree):
  return jax.tree.map(lambda x: x.block_until_ready() if hasattr(x, "block_until_ready") else x, tree)


def call_seconds(fn) -> float:
  """Seconds of one call of `fn`, its outputs awaited."""
  start = time.perf_counter()
  block(fn())
  return time.perf_counter() - start


def warm_then_time(fn, warm_seconds: float, calls: int) -> list:
  """Seconds of each of `calls` calls of `fn`, made after untimed calls for `warm_seconds` (at least one).

  After the process idles (as it does while another process is timed), the next calls of a jitted
  step are slow until the thread pools spin again: the tiny model's 16 ms step took 40-60 ms for
  up to three calls after a 0.1 s pause on this machine. The warm-up calls absorb that.
  """
  start = time.perf_counter()
  block(fn())
  while time.perf_counter() - start < warm_seconds:
    block(fn())
  return [call_seconds(fn) for _ in range(calls)]


def best_time(fn, repeats: int, warmup: int = 1) -> float:
  """The fastest of `repeats` calls of `fn` (after `warmup` calls), in seconds, outputs awaited.

  The minimum is the figure least disturbed by other processes on a shared machine.
  """
  for _ in range(warmup):
    block(fn())
  return min(call_seconds(fn) for _ in range(repeats))


def xla_flops(jitted, *args) -> float:
  """FLOPs of one call of `jitted(*args)` from XLA's cost analysis of the compiled program."""
  cost = jitted.lower(*args).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost.get("flops", 0.0))


def matmul_peak(n: int = 1536, repeats: int = 5) -> float:
  """This machine's float32 matmul rate in FLOP/s (jitted `[n, n] @ [n, n]` with XLA)."""
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.normal(size=(n, n)).astype(np.float32))
  b = jnp.asarray(rng.normal(size=(n, n)).astype(np.float32))
  f = jax.jit(lambda a, b: a @ b)
  return 2.0 * n**3 / best_time(lambda: f(a, b), repeats)


def numpy_matmul_peak(n: int = 1536, repeats: int = 5) -> float:
  """This machine's float32 matmul rate in FLOP/s with NumPy's BLAS."""
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(n, n)).astype(np.float32), rng.normal(size=(n, n)).astype(np.float32)
  return 2.0 * n**3 / best_time(lambda: a @ b, repeats)


def write_section(path: str, begin: str, end: str, title: str, body: str) -> None:
  """Replaces the lines from `begin` to `end` of the markdown file `path` with `title` and `body`
  (appends the section where the markers are absent); written atomically."""
  text = open(path).read() if os.path.exists(path) else ""
  section = f"{begin}\n## {title}\n{body}\n{end}"
  if begin in text and end in text:
    text = text[:text.index(begin)] + section + text[text.index(end) + len(end):]
  else:
    text = text.rstrip("\n") + "\n\n" + section + "\n"
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)
