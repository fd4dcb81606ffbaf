"""Convolutions whose gradients are fast on XLA:CPU, for every conv kind the models use.

XLA:CPU runs stride-1 convolutions and matmuls near the machine's peak, but lowers the weight
gradient of a transposed (input-dilated) convolution, and to a lesser degree that of a stride-2
convolution, to window-dilated convolutions that run at 2-5% of it (see
`benchmarks/profile_convs.py`). Here every convolution is rewritten as stride-1 convolutions
with exactly the same FLOPs, whose forward pass and both gradients XLA:CPU runs fast:

* stride 1 (`conv2d_s1`): XLA's own convolution and its own VJP. (A custom VJP computing the
  kernel gradient as one matmul per kernel tap was measured 2x slower than XLA's on the model's
  3x3 convolutions, and 10-70x slower for 1-3 output channels, so it is not used.)
* stride 2 with an even kernel: space-to-depth. A k x k stride-2 convolution equals a
  (k/2) x (k/2) stride-1 convolution over the 2x2-blocked input (4C channels) with the kernel
  rearranged the same way.
* transposed, stride 2 (sub-pixel): output pixel `2i + r` only meets the kernel taps of parity
  `r`, so each of the 4 output phases is a stride-1 convolution of the (undilated) input with a
  quarter of the kernel; the phases are interleaved (depth-to-space). No multiplication by the
  zeros of the dilated input is done.

`conv_general_dilated` is a drop-in for `lax.conv_general_dilated` (flax's `nn.Conv` takes it as
its `conv_general_dilated` field) and falls back to XLA for anything else; `ConvTranspose` is
`nn.ConvTranspose` (same parameter names, shapes and initialisers) with the sub-pixel path.

The implementation is chosen by `conv_impl`: "onednn" (float32 convolutions of every kind, and
bfloat16 ones where the CPU has native bfloat16 kernels, on oneDNN through XLA FFI custom calls,
`models/onednn_conv.py`; the formulations above still serve anything oneDNN does not take), "fast" (the formulations above), "xla", or "auto"
(the default: "onednn" on CPU where it builds, else "fast"; "xla" on GPU/TPU where XLA's own
gradients are fast). The environment variable `FACEGEN_CONV_IMPL=onednn|fast|xla` overrides
"auto". `benchmarks/run.py` times the train step with each of them beside PyTorch (BENCHMARKS.md):
on a 2-core Xeon, "fast" takes about 1.3x the time of "onednn" for the default model.
"""

import functools
import logging
import os
from typing import Any, Callable, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from facegen_jax.models import onednn_conv

CONV_IMPLS = ("auto", "onednn", "fast", "xla")
_DN = ("NHWC", "HWIO", "NHWC")

Pads = tuple[tuple[int, int], tuple[int, int]]


def resolve_impl(impl: str) -> str:
  """"onednn", "fast" or "xla" for a `conv_impl` setting (see module docstring)."""
  if impl not in CONV_IMPLS:
    raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {impl!r}")
  if impl == "auto":
    env = os.environ.get("FACEGEN_CONV_IMPL", "")
    if env:
      if env not in CONV_IMPLS[1:]:
        raise ValueError(f"FACEGEN_CONV_IMPL must be one of {CONV_IMPLS[1:]}, got {env!r}")
      impl = env
    elif jax.default_backend() != "cpu":
      return "xla"
    elif onednn_conv.available():
      return "onednn"
    else:
      _warn_fallback_once()
      return "fast"
  if impl == "onednn" and not onednn_conv.available():
    raise RuntimeError(f"conv_impl='onednn' but the oneDNN convolutions are unavailable: "
                       f"{onednn_conv.unavailable_reason()}")
  return impl


@functools.lru_cache(maxsize=1)
def _warn_fallback_once():
  logging.warning("oneDNN convolutions unavailable (%s); using the slower XLA formulations of "
                  "models/fast_conv.py", onednn_conv.unavailable_reason())


def _xla_conv(x, w, strides, pads: Pads):
  return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_DN)


def _kernel_grad(x, g, w, strides, pads: Pads):
  """XLA's kernel gradient, summed over single images when the output is large.

  XLA:CPU's kernel-gradient convolution is 2-3x faster on a batch of one than on the whole batch
  when the output map is large and has many channels (measured 98-180 vs 27-107 GFLOP/s at
  32x32..128x128, 128-512 channels), and slower on small maps or few output channels, where
  the batched one is kept.
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


def _explicit_pads(in_hw, kernel_hw, strides, padding) -> Pads:
  if isinstance(padding, str):
    return tuple(lax.padtype_to_pads(in_hw, kernel_hw, strides, padding))
  return tuple(tuple(p) for p in padding)


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
  """Stride-2 convolution with an even kernel: XLA's forward pass (2x faster than space-to-depth),
  the input gradient through the space-to-depth form (a stride-1 convolution, 2x faster than
  XLA's dilated one) and `_kernel_grad`."""
  return _xla_conv(x, w, (2, 2), pads)


def _conv_s2_fwd(x, w, pads):
  return _xla_conv(x, w, (2, 2), pads), (x, w)


def _conv_s2_bwd(pads, res, g):
  x, w = res
  _, pull_x = jax.vjp(lambda x_: _conv_s2d(x_, w, pads), x)
  return pull_x(g)[0], _kernel_grad(x, g, w, (2, 2), pads)


conv2d_s2.defvjp(_conv_s2_fwd, _conv_s2_bwd)


def _xla_conv_transpose(x, w, pads: Pads):
  return lax.conv_general_dilated(x, w, (1, 1), pads, lhs_dilation=(2, 2), dimension_numbers=_DN)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_transpose2d_s2(x: jnp.ndarray, w: jnp.ndarray, pads: Pads) -> jnp.ndarray:
  """`lax.conv_general_dilated(x, w, (1, 1), pads, lhs_dilation=(2, 2))` (a stride-2 transposed
  convolution, kernel not flipped); both gradients through the sub-pixel form (`_subpixel`).

  The forward pass is the sub-pixel form too, except for fewer than 16 output channels, where
  XLA's own is faster (measured 8 vs 108 ms for 128 -> 3 channels at 256x256).
  """
  return _conv_transpose_fwd(x, w, pads)[0]


def _conv_transpose_fwd(x, w, pads):
  y = _xla_conv_transpose(x, w, pads) if w.shape[-1] < 16 else _subpixel(x, w, pads)
  return y, (x, w)


def _conv_transpose_bwd(pads, res, g):
  x, w = res
  _, pull = jax.vjp(lambda x_, w_: _subpixel(x_, w_, pads), x, w)
  return pull(g)


conv_transpose2d_s2.defvjp(_conv_transpose_fwd, _conv_transpose_bwd)


def _subpixel(x: jnp.ndarray, w: jnp.ndarray, pads: Pads) -> jnp.ndarray:
  """The stride-2 transposed convolution as 4 sub-pixel stride-1 convolutions, interleaved."""
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


def _is_nhwc(dimension_numbers, lhs_shape, rhs_shape) -> bool:
  if dimension_numbers is None:
    return False
  want = lax.conv_dimension_numbers(lhs_shape, rhs_shape, _DN)
  have = lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers)
  return have == want


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                         preferred_element_type=None, *, backend: str = "fast"):
  """`lax.conv_general_dilated` with fast CPU gradients for 2-D NHWC/HWIO convolutions.

  backend "onednn": float32 (and, where `onednn_conv.bf16_native()`, bfloat16) convolutions of any
  stride and transposed (input-dilated) ones run on oneDNN (`onednn_conv`), except 1x1 unpadded
  ones (a matmul XLA fuses); "fast" (or anything oneDNN does not take): the XLA formulations above for stride 1, stride 2 (even
  kernel) and input dilation 2. Anything else goes to XLA.
  """
  fallback = functools.partial(
      lax.conv_general_dilated, lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision, preferred_element_type=preferred_element_type)
  strides = tuple(window_strides)
  lhs_dil = tuple(lhs_dilation or (1, 1))
  if (lhs.ndim != 4 or feature_group_count != 1 or batch_group_count != 1 or tuple(rhs_dilation or (1, 1)) != (1, 1)
      or preferred_element_type is not None or not _is_nhwc(dimension_numbers, lhs.shape, rhs.shape)):
    return fallback()
  kernel_hw = rhs.shape[:2]
  if isinstance(padding, str) and lhs_dil != (1, 1):
    return fallback()
  pads = _explicit_pads(lhs.shape[1:3], kernel_hw, strides, padding)
  if backend == "onednn" and _onednn_takes(lhs, rhs, strides, lhs_dil, pads):
    if lhs_dil == (1, 1):
      return onednn_conv.conv2d(lhs, rhs, strides, pads)
    return onednn_conv.conv_transpose2d(lhs, rhs, lhs_dil, pads)
  if lhs_dil == (1, 1):
    if strides == (1, 1):
      return conv2d_s1(lhs, rhs, pads)
    if strides == (2, 2) and kernel_hw[0] % 2 == 0 and kernel_hw[1] % 2 == 0:
      return conv2d_s2(lhs, rhs, pads)
  elif lhs_dil == (2, 2) and strides == (1, 1):
    out_h = 2 * lhs.shape[1] - 1 + sum(pads[0]) - kernel_hw[0] + 1
    out_w = 2 * lhs.shape[2] - 1 + sum(pads[1]) - kernel_hw[1] + 1
    if out_h % 2 == 0 and out_w % 2 == 0:
      return conv_transpose2d_s2(lhs, rhs, pads)
  return fallback()


def _onednn_takes(lhs, rhs, strides, lhs_dil, pads: Pads) -> bool:
  if lhs.dtype != rhs.dtype or lhs.dtype not in (jnp.float32, jnp.bfloat16):
    return False
  if lhs.dtype == jnp.bfloat16 and not onednn_conv.bf16_native():
    return False
  if any(p < 0 for pair in pads for p in pair):
    return False
  if lhs_dil == (1, 1):
    one_by_one = rhs.shape[:2] == (1, 1) and strides == (1, 1) and all(p == (0, 0) for p in pads)
    return not one_by_one
  # Transposed: the strided convolution it transposes needs padding k - 1 - p >= 0.
  return strides == (1, 1) and all(k - 1 - p >= 0 for k, pair in zip(rhs.shape[:2], pads) for p in pair)


def conv_fn(impl: str) -> Optional[Callable]:
  """The `conv_general_dilated` field for `nn.Conv` under `impl` (None = flax's default, XLA)."""
  impl = resolve_impl(impl)
  if impl == "xla":
    return None
  return functools.partial(conv_general_dilated, backend=impl)


def conv_transpose_padding(k: int, s: int, padding: str) -> tuple[int, int]:
  """The explicit padding `lax.conv_transpose` uses for 'SAME' / 'VALID' (kernel not flipped)."""
  if padding == "SAME":
    pad_len = k + s - 2
    pad_a = k - 1 if s > k - 1 else -(-pad_len // 2)
  elif padding == "VALID":
    pad_len = k + s - 2 + max(k - s, 0)
    pad_a = k - 1
  else:
    raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
  return pad_a, pad_len - pad_a


class ConvTranspose(nn.Module):
  """`nn.ConvTranspose` (same parameters, shapes, initialisers and results) with the sub-pixel
  implementation of `conv_impl`. Input `[B, H, W, C]` -> `[B, s*H, s*W, features]` ('SAME').

  Attributes:
    features, kernel_size, strides, padding, use_bias, dtype, kernel_init, bias_init: as in
      `nn.ConvTranspose` (`padding` 'SAME', 'VALID' or explicit pairs; kernel not transposed).
    conv_impl: "auto", "onednn", "fast" or "xla".
  """

  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1)
  padding: Union[str, Sequence[tuple[int, int]]] = "SAME"
  use_bias: bool = True
  dtype: Any = None
  kernel_init: Callable = nn.linear.default_kernel_init
  bias_init: Callable = nn.initializers.zeros_init()
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, inputs: jnp.ndarray) -> jnp.ndarray:
    kernel_size, strides = tuple(self.kernel_size), tuple(self.strides)
    kernel = self.param("kernel", self.kernel_init, kernel_size + (inputs.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", self.bias_init, (self.features,), jnp.float32) if self.use_bias else None
    inputs, kernel, bias = nn.dtypes.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
    if isinstance(self.padding, str):
      pads = tuple(conv_transpose_padding(k, s, self.padding) for k, s in zip(kernel_size, strides))
    else:
      pads = tuple(tuple(p) for p in self.padding)
    impl = resolve_impl(self.conv_impl)
    if impl != "xla":
      y = conv_general_dilated(inputs, kernel, (1, 1), pads, lhs_dilation=strides, dimension_numbers=_DN,
                               backend=impl)
    else:
      y = lax.conv_transpose(inputs, kernel, strides, pads, dimension_numbers=_DN)
    if bias is not None:
      y = y + bias.reshape((1, 1, 1, -1))
    return y
