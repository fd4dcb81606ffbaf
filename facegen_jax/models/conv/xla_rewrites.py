"""Every convolution kind the models use, as stride-1 convolutions XLA:CPU differentiates fast.

XLA:CPU runs stride-1 convolutions and matmuls near the machine's peak, but lowers the weight
gradient of a transposed (input-dilated) convolution, and to a lesser degree that of a stride-2
convolution, to window-dilated convolutions that run at a small fraction of it (see
`benchmarks/profile_convs.py` and BENCHMARKS.md). Here each is rewritten as stride-1
convolutions with exactly the same FLOPs:

* stride 1 (`conv2d_s1`): XLA's own convolution and its own VJP (a custom VJP computing the
  kernel gradient as one matmul per kernel tap is slower).
* stride 2 with an even kernel (`conv2d_s2`): space-to-depth. A k x k stride-2 convolution
  equals a (k/2) x (k/2) stride-1 convolution over the 2x2-blocked input (4C channels) with the
  kernel rearranged the same way.
* transposed, stride 2 (`conv_transpose2d_s2`, sub-pixel): output pixel `2i + r` only meets the
  kernel taps of parity `r`, so each of the 4 output phases is a stride-1 convolution of the
  (undilated) input with a quarter of the kernel; the phases are interleaved (depth-to-space).
  No multiplication by the zeros of the dilated input is done.

The dispatcher (`facegen_jax.models.conv`) chooses between these, oneDNN and XLA's own.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

DN = ("NHWC", "HWIO", "NHWC")

Pads = tuple[tuple[int, int], tuple[int, int]]


def _xla_conv(x, w, strides, pads: Pads):
  return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=DN)


def _kernel_grad(x, g, w, strides, pads: Pads):
  """XLA's kernel gradient, summed over single images when the output is large.

  XLA:CPU's kernel-gradient convolution is faster one image at a time when the output map is large
  and has many channels, and slower on small maps or few output channels, where the batched one is
  kept.
  """
  if g.shape[-1] < 64 or g.shape[1] * g.shape[2] < 32 * 32 or x.shape[0] == 1:
    _, pull = jax.vjp(lambda w_: _xla_conv(x, w_, strides, pads), w)
    return pull(g)[0]
  dw = jnp.zeros(w.shape, jnp.float32)
  for n in range(x.shape[0]):
    _, pull = jax.vjp(lambda w_: _xla_conv(x[n:n + 1], w_, strides, pads), w)
    dw = dw + pull(g[n:n + 1])[0].astype(jnp.float32)
  return dw.astype(w.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_s1(x, w, pads: Pads):
  return _xla_conv(x, w, (1, 1), pads)


def _conv_s1_fwd(x, w, pads):
  return _xla_conv(x, w, (1, 1), pads), (x, w)


def _conv_s1_bwd(pads, res, g):
  x, w = res
  _, pull_x = jax.vjp(lambda x_: _xla_conv(x_, w, (1, 1), pads), x)
  return pull_x(g)[0], _kernel_grad(x, g, w, (1, 1), pads)


_conv_s1.defvjp(_conv_s1_fwd, _conv_s1_bwd)


def conv2d_s1(x: jnp.ndarray, w: jnp.ndarray, pads: Pads) -> jnp.ndarray:
  """Stride-1 convolution `[N, H, W, C] x [kh, kw, C, O] -> [N, H', W', O]` with explicit
  padding `((top, bottom), (left, right))` (negative = crop).

  1x1 without padding: a matmul. Otherwise XLA's convolution for the forward pass and the input
  gradient, and `_kernel_grad` for the kernel gradient.
  """
  if w.shape[:2] == (1, 1) and all(p == (0, 0) for p in pads):
    return jnp.einsum("nhwc,co->nhwo", x, w[0, 0])
  return _conv_s1(x, w, pads)


def _conv_s2d(x: jnp.ndarray, w: jnp.ndarray, pads: Pads) -> jnp.ndarray:
  """Stride-2 convolution with an even kernel, as a stride-1 conv over the space-to-depth input."""
  n, h, wd, c = x.shape
  kh, kw, _, o = w.shape
  out_h = (h + pads[0][0] + pads[0][1] - kh) // 2 + 1
  out_w = (wd + pads[1][0] + pads[1][1] - kw) // 2 + 1
  # Pad (or crop) so the padded input holds exactly the windows read: 2 * (out - 1) + k, even.
  need_h, need_w = 2 * (out_h - 1) + kh, 2 * (out_w - 1) + kw
  xp = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (pads[0][0], need_h - h - pads[0][0], 0),
                                          (pads[1][0], need_w - wd - pads[1][0], 0), (0, 0, 0)))
  xs = xp.reshape(n, need_h // 2, 2, need_w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  xs = xs.reshape(n, need_h // 2, need_w // 2, 4 * c)
  ws = w.reshape(kh // 2, 2, kw // 2, 2, c, o).transpose(0, 2, 1, 3, 4, 5).reshape(kh // 2, kw // 2, 4 * c, o)
  return _xla_conv(xs, ws, (1, 1), ((0, 0), (0, 0)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv2d_s2(x: jnp.ndarray, w: jnp.ndarray, pads: Pads) -> jnp.ndarray:
  """Stride-2 convolution with an even kernel: XLA's forward pass (faster than space-to-depth),
  the input gradient through the space-to-depth form (a stride-1 convolution, faster than XLA's
  dilated one) and `_kernel_grad`."""
  return _xla_conv(x, w, (2, 2), pads)


def _conv_s2_fwd(x, w, pads):
  return _xla_conv(x, w, (2, 2), pads), (x, w)


def _conv_s2_bwd(pads, res, g):
  x, w = res
  _, pull_x = jax.vjp(lambda x_: _conv_s2d(x_, w, pads), x)
  return pull_x(g)[0], _kernel_grad(x, g, w, (2, 2), pads)


conv2d_s2.defvjp(_conv_s2_fwd, _conv_s2_bwd)


def conv_transpose2d_s2(x: jnp.ndarray, w: jnp.ndarray, pads: Pads) -> jnp.ndarray:
  """`lax.conv_general_dilated(x, w, (1, 1), pads, lhs_dilation=(2, 2))` (a stride-2 transposed
  convolution, kernel not flipped) as 4 sub-pixel stride-1 convolutions, interleaved."""
  n, h, wd, _ = x.shape
  kh, kw, _, o = w.shape
  out_h = 2 * h - 1 + pads[0][0] + pads[0][1] - kh + 1
  out_w = 2 * wd - 1 + pads[1][0] + pads[1][1] - kw + 1
  if out_h % 2 or out_w % 2:
    raise ValueError(f"sub-pixel transposed conv needs an even output size, got {out_h}x{out_w}")

  def phase_taps(r, pad_lo, k, size, out_size):
    # Output 2i + r reads dilated-padded position 2i + r + t; input index (2i + r + t - pad_lo) / 2.
    t0 = (pad_lo - r) % 2
    d0 = (r + t0 - pad_lo) // 2  # input offset of tap t0 for i = 0
    num = len(range(t0, k, 2))
    m = out_size // 2
    lo = -d0
    hi = (m - 1 + d0 + num - 1) - (size - 1)  # last input index read minus last index held
    return slice(t0, k, 2), (lo, hi)

  rows = []
  for r in range(2):
    sl_h, pad_h = phase_taps(r, pads[0][0], kh, h, out_h)
    cols = []
    for c in range(2):
      sl_w, pad_w = phase_taps(c, pads[1][0], kw, wd, out_w)
      cols.append(conv2d_s1(x, w[sl_h, sl_w], (pad_h, pad_w)))
    rows.append(jnp.stack(cols, axis=3))  # [N, h', w', 2, O]
  y = jnp.stack(rows, axis=2)  # [N, h', 2, w', 2, O]
  return y.reshape(n, out_h, out_w, o)
