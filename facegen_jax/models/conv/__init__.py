"""The convolution back-ends of the models, chosen once by the model factory.

`constructors(conv_impl)` returns the two module constructors the model modules are handed:
`conv` (`nn.Conv`) and `conv_transpose` (`ConvTranspose`: `nn.ConvTranspose`'s parameters,
shapes, initialisers and results), both running on the back-end `conv_impl` names:

* "onednn": float32 convolutions of every kind, and bfloat16 ones where the CPU has native
  bfloat16 kernels, on oneDNN through XLA FFI custom calls (`conv/onednn.py`); the XLA
  formulations below serve anything oneDNN does not take.
* "fast": the formulations of `conv/xla_rewrites.py`, stride-1 convolutions whose forward pass
  and gradients XLA:CPU runs fast.
* "xla": XLA's own convolutions (fast on GPU/TPU).
* "auto" (the default): "onednn" on CPU where it builds, else "fast"; "xla" on GPU/TPU. The
  environment variable `FACEGEN_CONV_IMPL=onednn|fast|xla` overrides "auto".

One rule serves both CPU back-ends: a transposed convolution into fewer than
`XLA_TRANSPOSE_FORWARD_BELOW` channels (the decoders' image layers) runs its forward pass on XLA,
faster there for so few channels (BENCHMARKS.md, `benchmarks/profile_convs.py`), and its
gradients on the back-end.
"""

import functools
import logging
import os
from typing import Any, Callable, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from facegen_jax.models.conv import onednn, xla_rewrites
from facegen_jax.models.conv.xla_rewrites import DN, Pads

ModuleDef = Any
CONV_IMPLS = ("auto", "onednn", "fast", "xla")
XLA_TRANSPOSE_FORWARD_BELOW = 16


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
    elif onednn.available():
      return "onednn"
    else:
      _warn_fallback_once()
      return "fast"
  if impl == "onednn" and not onednn.available():
    raise RuntimeError(f"conv_impl='onednn' but the oneDNN convolutions are unavailable: "
                       f"{onednn.unavailable_reason()}")
  return impl


@functools.lru_cache(maxsize=1)
def _warn_fallback_once():
  logging.warning("oneDNN convolutions unavailable (%s); using the slower XLA formulations of "
                  "models/conv/xla_rewrites.py", onednn.unavailable_reason())


def _explicit_pads(in_hw, kernel_hw, strides, padding) -> Pads:
  if isinstance(padding, str):
    return tuple(lax.padtype_to_pads(in_hw, kernel_hw, strides, padding))
  return tuple(tuple(p) for p in padding)


def _is_nhwc(dimension_numbers, lhs_shape, rhs_shape) -> bool:
  if dimension_numbers is None:
    return False
  want = lax.conv_dimension_numbers(lhs_shape, rhs_shape, DN)
  have = lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers)
  return have == want


def _backend_transpose(x, w, strides, pads: Pads, backend: str):
  if backend == "onednn":
    return onednn.conv_transpose2d(x, w, strides, pads)
  return xla_rewrites.conv_transpose2d_s2(x, w, pads)  # the caller checked strides == (2, 2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _xla_forward_transpose(x, w, strides, pads: Pads, backend: str):
  """A transposed convolution: XLA's forward pass, the gradients of `backend`'s."""
  return lax.conv_general_dilated(x, w, (1, 1), pads, lhs_dilation=strides, dimension_numbers=DN)


def _xla_forward_transpose_fwd(x, w, strides, pads, backend):
  return _xla_forward_transpose(x, w, strides, pads, backend), (x, w)


def _xla_forward_transpose_bwd(strides, pads, backend, res, g):
  x, w = res
  if backend == "onednn":
    return onednn.conv_transpose2d_grads(x, w, g, strides, pads)
  _, pull = jax.vjp(lambda x_, w_: xla_rewrites.conv_transpose2d_s2(x_, w_, pads), x, w)
  return pull(g)


_xla_forward_transpose.defvjp(_xla_forward_transpose_fwd, _xla_forward_transpose_bwd)


def _transpose(x, w, strides, pads: Pads, backend: str):
  if w.shape[-1] < XLA_TRANSPOSE_FORWARD_BELOW:
    return _xla_forward_transpose(x, w, strides, pads, backend)
  return _backend_transpose(x, w, strides, pads, backend)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                         preferred_element_type=None, *, backend: str = "fast"):
  """`lax.conv_general_dilated` with fast CPU gradients for 2-D NHWC/HWIO convolutions.

  backend "onednn": float32 (and, where `onednn.bf16_native()`, bfloat16) convolutions of any
  stride and transposed (input-dilated) ones run on oneDNN, except 1x1 unpadded ones (a matmul XLA
  fuses); "fast" (or anything oneDNN does not take): the formulations of `xla_rewrites` for
  stride 1, stride 2 (even kernel) and input dilation 2. Anything else goes to XLA.
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
      return onednn.conv2d(lhs, rhs, strides, pads)
    return _transpose(lhs, rhs, lhs_dil, pads, "onednn")
  if lhs_dil == (1, 1):
    if strides == (1, 1):
      return xla_rewrites.conv2d_s1(lhs, rhs, pads)
    if strides == (2, 2) and kernel_hw[0] % 2 == 0 and kernel_hw[1] % 2 == 0:
      return xla_rewrites.conv2d_s2(lhs, rhs, pads)
  elif lhs_dil == (2, 2) and strides == (1, 1):
    out_h = 2 * lhs.shape[1] - 1 + sum(pads[0]) - kernel_hw[0] + 1
    out_w = 2 * lhs.shape[2] - 1 + sum(pads[1]) - kernel_hw[1] + 1
    if out_h % 2 == 0 and out_w % 2 == 0:
      return _transpose(lhs, rhs, lhs_dil, pads, "fast")
  return fallback()


def _onednn_takes(lhs, rhs, strides, lhs_dil, pads: Pads) -> bool:
  if lhs.dtype != rhs.dtype or lhs.dtype not in (jnp.float32, jnp.bfloat16):
    return False
  if lhs.dtype == jnp.bfloat16 and not onednn.bf16_native():
    return False
  if any(p < 0 for pair in pads for p in pair):
    return False
  if lhs_dil == (1, 1):
    one_by_one = rhs.shape[:2] == (1, 1) and strides == (1, 1) and all(p == (0, 0) for p in pads)
    return not one_by_one
  # Transposed: the strided convolution it transposes needs padding k - 1 - p >= 0.
  return strides == (1, 1) and all(k - 1 - p >= 0 for k, pair in zip(rhs.shape[:2], pads) for p in pair)


def conv_fn(impl: str) -> Optional[Callable]:
  """The `conv_general_dilated` field of `nn.Conv` and `ConvTranspose` under `impl` (None = XLA)."""
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
  """`nn.ConvTranspose` (same parameters, shapes, initialisers and results) on a chosen back-end.
  Input `[B, H, W, C]` -> `[B, s*H, s*W, features]` ('SAME').

  Attributes:
    features, kernel_size, strides, padding, use_bias, dtype, kernel_init, bias_init: as in
      `nn.ConvTranspose` (`padding` 'SAME', 'VALID' or explicit pairs; kernel not transposed).
    conv_general_dilated: as in `nn.Conv` (`conv_fn(...)`); None runs `lax.conv_transpose`.
  """

  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1)
  padding: Union[str, Sequence[tuple[int, int]]] = "SAME"
  use_bias: bool = True
  dtype: Any = None
  kernel_init: Callable = nn.linear.default_kernel_init
  bias_init: Callable = nn.initializers.zeros_init()
  conv_general_dilated: Optional[Callable] = None

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
    if self.conv_general_dilated is None:
      y = lax.conv_transpose(inputs, kernel, strides, pads, dimension_numbers=DN)
    else:
      y = self.conv_general_dilated(inputs, kernel, (1, 1), pads, lhs_dilation=strides, dimension_numbers=DN)
    if bias is not None:
      y = y + bias.reshape((1, 1, 1, -1))
    return y


def constructors(impl: str) -> tuple[ModuleDef, ModuleDef]:
  """(conv, conv_transpose): `nn.Conv` and `ConvTranspose` on the back-end `impl` resolves to.

  The same objects for the same back-end, so two models built alike compare equal."""
  return _constructors(resolve_impl(impl))


@functools.lru_cache(maxsize=None)
def _constructors(resolved: str) -> tuple[ModuleDef, ModuleDef]:
  fn = conv_fn(resolved)
  return (functools.partial(nn.Conv, conv_general_dilated=fn),
          functools.partial(ConvTranspose, conv_general_dilated=fn))
