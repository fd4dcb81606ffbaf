r"""Per-layer profile of the GAN's convolutions: forward and VJP time of each one, alone.

  python benchmarks/profile_convs.py [--config=default] [--resolution=128] [--batch=4] [--impl=xla]

Records every `nn.Conv` / `nn.ConvTranspose` call of one generator and one discriminator apply
(flax method interception), then jits and times, for each distinct layer, its forward pass and
its VJP (gradients w.r.t. input and kernel) on random inputs of the recorded shape. Prints one
line per layer (sorted by VJP time) and the totals, so the slow convolution kinds stand out.
"""

import collections
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # pylint: disable=wrong-import-position
from facegen_jax import entry  # pylint: disable=wrong-import-position
from facegen_jax.models import conv, factory  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string("config", "default", "tiny | default")
flags.DEFINE_integer("resolution", 128, "Image size.")
flags.DEFINE_integer("batch", 4, "Generator batch (the discriminator sees 2x in its step).")
flags.DEFINE_string("impl", "auto", "Convolution implementation: auto | onednn | fast | xla")
flags.DEFINE_integer("repeats", 3, "Timed calls per layer (the best is kept).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                  "Compute dtype of the convolutions (parameters stay float32, as in the models).")

Layer = collections.namedtuple("Layer", "kind in_shape features kernel strides padding")


def record_convs(config, batch: int) -> collections.Counter:
  """Counts the convolution layers (kind, shapes) of one generator + discriminator apply."""
  g, d = factory.build_generator(config), factory.build_discriminator(config)
  g_vars, d_vars, g_in, d_in = common.init_models(config, batch)
  seen = collections.Counter()

  def interceptor(next_fun, args, kwargs, context):
    mod = context.module
    if context.method_name == "__call__" and isinstance(mod, (nn.Conv, nn.ConvTranspose, conv.ConvTranspose)):
      kind = "conv" if isinstance(mod, nn.Conv) else "transpose"
      pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)
      strides = pair(mod.strides or 1)
      seen[Layer(kind, tuple(args[0].shape), mod.features, pair(mod.kernel_size), strides, mod.padding)] += 1
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    jax.eval_shape(lambda v, *x: g.apply(v, *x, train=True, mutable=["batch_stats"]), g_vars, *g_in)
    d_batch = jnp.zeros((2 * batch,) + d_in.shape[1:])
    jax.eval_shape(lambda v, x: d.apply(v, x, train=True), d_vars, d_batch)
  return seen


def time_layer(layer: Layer, impl: str, repeats: int, dtype: str = "float32") -> tuple[float, float, float]:
  """(forward s, VJP s, forward FLOPs) of one layer on random data."""
  make = conv.ConvTranspose if layer.kind == "transpose" else nn.Conv
  module = make(layer.features, layer.kernel, strides=layer.strides, padding=layer.padding, dtype=dtype,
                conv_general_dilated=conv.conv_fn(impl))
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=layer.in_shape).astype(dtype))
  params = module.init(jax.random.PRNGKey(0), x)
  fwd = jax.jit(lambda p, x: module.apply(p, x))
  out = fwd(params, x)
  cot = jnp.asarray(rng.normal(size=out.shape).astype(dtype))

  def vjp(p, x, cot):
    _, pull = jax.vjp(lambda p, x: module.apply(p, x), p, x)
    return pull(cot)

  vjp = jax.jit(vjp)
  # FLOPs from the "fast" program: XLA counts none inside oneDNN's custom calls, and counts the
  # dilation zeros of its own transposed convolutions.
  counted = module.clone(conv_general_dilated=conv.conv_fn("fast"))
  flops = common.xla_flops(jax.jit(lambda p, x: counted.apply(p, x)), params, x)
  t_fwd = common.best_time(lambda: fwd(params, x), repeats)
  t_vjp = common.best_time(lambda: vjp(params, x, cot), repeats)
  return t_fwd, t_vjp, flops


def main(argv):
  del argv
  config = common.benchmark_config(FLAGS.config, FLAGS.resolution, FLAGS.batch)
  layers = record_convs(config, FLAGS.batch)
  rows = []
  for layer, count in layers.items():
    t_fwd, t_vjp, flops = time_layer(layer, FLAGS.impl, FLAGS.repeats, FLAGS.dtype)
    rows.append((layer, count, t_fwd, t_vjp, flops))
  rows.sort(key=lambda r: -r[1] * r[3])
  tot_f = tot_v = tot_flops = 0.0
  print(f"{'kind':9s} {'input':>20s} {'out':>4s} {'k':>3s} {'s':>2s} {'n':>2s} {'fwd ms':>8s} {'vjp ms':>8s} "
        f"{'fwd GF/s':>8s} {'vjp GF/s':>8s}")
  for layer, count, t_fwd, t_vjp, flops in rows:
    tot_f += count * t_fwd
    tot_v += count * t_vjp
    tot_flops += count * flops
    print(f"{layer.kind:9s} {str(layer.in_shape):>20s} {layer.features:4d} {layer.kernel[0]:3d} {layer.strides[0]:2d} "
          f"{count:2d} {1e3 * t_fwd:8.1f} {1e3 * t_vjp:8.1f} {flops / t_fwd / 1e9:8.1f} {2 * flops / t_vjp / 1e9:8.1f}")
  print(f"total: forward {1e3 * tot_f:.0f} ms, VJP {1e3 * tot_v:.0f} ms, forward {tot_flops / 1e9:.2f} GFLOP "
        f"(impl={FLAGS.impl}, {FLAGS.dtype})")


if __name__ == "__main__":
  entry.run(main)
