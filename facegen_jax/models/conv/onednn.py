"""2-D convolutions on oneDNN through XLA FFI custom calls: the CPU convolution backend.

XLA:CPU's own convolutions (YNNPACK/Eigen) run the train step's convolution gradients at a
fraction of the machine's peak; PyTorch runs the same layers on oneDNN. This module runs each
convolution's forward pass and both gradients as oneDNN primitives inside the jitted XLA program
(`jax.ffi`), on JAX's own NHWC/HWIO buffers, with no copy to another framework:

* `conv2d(x, w, strides, pads)`: `lax.conv_general_dilated` for NHWC/HWIO float32, any stride,
  non-negative explicit padding; gradients by oneDNN's backward-data and backward-weights.
* `conv_transpose2d(x, w, strides, pads)`: `lax.conv_general_dilated(x, w, (1, 1), pads,
  lhs_dilation=strides)` (a transposed convolution, kernel not flipped), run as the
  backward-data primitive of the strided convolution it transposes; the kernel is flipped into
  that convolution's weights by the C++ weight reorder, not by XLA (the `flip` attribute).

The dispatcher (`facegen_jax.models.conv`) decides which convolutions come here. The C++ handlers
(`onednn_conv.cc`) are compiled with g++ on first use (once per source and jaxlib) against
jaxlib's FFI headers and the `onednn-cpu-gomp` / `onednn-devel-cpu-gomp` wheels (setup.cfg's
`cpu` extra installs them on Linux x86_64), and cached under `$FACEGEN_CACHE_DIR` (default
`$XDG_CACHE_HOME/facegen_jax` or `~/.cache/facegen_jax`). `available()` says whether that worked
and `unavailable_reason()` why not; the dispatcher then falls back to the XLA formulations of
`conv/xla_rewrites.py`, with a warning.

Sharding: each custom call is wrapped in `jax.experimental.custom_partitioning` with a Shardy
rule in which only the batch may be sharded. Under a data-parallel `jax.jit` over a device mesh
every device runs the forward and backward-data calls on its own batch shard, and the weight
gradient on its shard followed by one all-reduce (`psum`), as XLA does with its own convolutions:
no activation is gathered (tests/perf_fast_conv_test.py checks this on 4 CPU devices). Anything
else sharded (channels, space) is replicated first. oneDNN's scratch memory is allocated per
call, so the devices of one process can run the same primitive concurrently.

float32 and bfloat16 (`compute_dtype`; all operands one type): bfloat16 runs here where
`bf16_native()` (oneDNN's AMX or AVX512-BF16 kernels), else on the XLA formulations.

Threads: a convolution runs on oneDNN's OpenMP team (`OMP_NUM_THREADS`, default one thread per
core) while XLA's pool runs other ops beside it. A float32 one of fewer than
`$FACEGEN_ONEDNN_SINGLE_THREAD_MFLOP` million FLOPs (default 200; 0: never) runs on one thread
instead: split over the team, a small one mostly waits at the fork/join for threads held by XLA's
other ops. bfloat16 convolutions on AMX are shorter, so the wait weighs more, and
`$FACEGEN_ONEDNN_SINGLE_THREAD_MFLOP_BF16` defaults to inf (all on one thread). The figures behind
both defaults are in BENCHMARKS.md; machines with many more cores may want other thresholds:
measure with benchmarks/run.py.
"""

import ctypes
import functools
import hashlib
import os
import pathlib
import shutil
import site
import subprocess
import sys
import tempfile
import threading
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jex_core
from jax.interpreters import batching as batching_lib
from jax.interpreters import mlir
from jax._src import dispatch  # pylint: disable=g-importing-member
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec as P

from facegen_jax.io import cache

Pads = tuple[tuple[int, int], tuple[int, int]]

_SOURCE = pathlib.Path(__file__).with_name("onednn_conv.cc")
_TARGETS = {"fwd": "facegen_conv_fwd", "fwd_inference": "facegen_conv_fwd_inference",
            "bwd_data": "facegen_conv_bwd_data", "bwd_weights": "facegen_conv_bwd_weights"}
_SYMBOLS = {"fwd": "FacegenConvFwd", "fwd_inference": "FacegenConvFwdInference", "bwd_data": "FacegenConvBwdData",
            "bwd_weights": "FacegenConvBwdWeights"}
_BF16 = "_bf16"  # suffix of the bfloat16 targets (C++ symbols: "Bf16")

_lock = threading.Lock()
_state: dict = {}

# Per compute dtype: the environment variable and the default threshold in million FLOPs.
SINGLE_THREAD_ENV = {"float32": "FACEGEN_ONEDNN_SINGLE_THREAD_MFLOP",
                     "bfloat16": "FACEGEN_ONEDNN_SINGLE_THREAD_MFLOP_BF16"}
DEFAULT_SINGLE_THREAD_MFLOP = {"float32": 200.0, "bfloat16": float("inf")}
_thresholds: dict = {}


def _check_dtype(dtype: str) -> str:
  if dtype not in SINGLE_THREAD_ENV:
    raise ValueError(f"single-thread thresholds exist for {sorted(SINGLE_THREAD_ENV)}, not {dtype!r}")
  return dtype


def single_thread_mflop(dtype: str = "float32") -> float:
  """The threshold in million FLOPs below which a `dtype` convolution runs on one thread: its
  environment variable (see above), else the default (float32 200, bfloat16 inf: always)."""
  name = SINGLE_THREAD_ENV[_check_dtype(dtype)]
  raw = os.environ.get(name, "").strip()
  if not raw:
    return DEFAULT_SINGLE_THREAD_MFLOP[dtype]
  try:
    value = float(raw)
  except ValueError:
    value = -1.0
  if not value >= 0:
    raise ValueError(f"${name}={raw!r} is not a number of million FLOPs >= 0 (or inf); unset it for the "
                     f"default ({DEFAULT_SINGLE_THREAD_MFLOP[dtype]:g}) or set 0 to split every {dtype} "
                     "convolution over all threads")
  return value


def _flops(mflop: float) -> int:
  """Million FLOPs -> the C++ side's int64 FLOPs (inf -> the largest int64)."""
  return int(mflop * 1e6) if mflop * 1e6 < 2.0**62 else int(np.iinfo(np.int64).max)


def set_single_thread_mflop(mflop: float, dtype: str = "float32") -> None:
  """Changes the `dtype` threshold for convolutions run from now on (compiled programs included)."""
  _check_dtype(dtype)
  if not mflop >= 0:
    raise ValueError(f"single-thread threshold must be >= 0 million FLOPs, got {mflop!r}")
  if available():
    _thresholds[dtype] = mflop
    _state["lib"].facegen_set_single_thread_below(_flops(_thresholds["float32"]), _flops(_thresholds["bfloat16"]))


def current_single_thread_mflop(dtype: str = "float32") -> Optional[float]:
  """The threshold in force in this process (None where oneDNN is unavailable)."""
  return _thresholds.get(_check_dtype(dtype)) if available() else None


def _dnnl_roots() -> list[pathlib.Path]:
  roots = []
  if os.environ.get("DNNL_ROOT"):
    roots.append(pathlib.Path(os.environ["DNNL_ROOT"]))
  roots += [pathlib.Path(sys.prefix), pathlib.Path(site.getuserbase()), pathlib.Path(sys.base_prefix)]
  return roots


def _find_dnnl() -> tuple[pathlib.Path, pathlib.Path]:
  for root in _dnnl_roots():
    header, lib = root / "include" / "oneapi" / "dnnl" / "dnnl.hpp", root / "lib" / "libdnnl.so"
    if header.exists() and lib.exists():
      return header.parent.parent.parent, lib.parent
  raise RuntimeError(
      "oneDNN not found (looked for include/oneapi/dnnl/dnnl.hpp and lib/libdnnl.so under "
      f"{', '.join(str(r) for r in _dnnl_roots())}). Install it with `pip install onednn-cpu-gomp "
      "onednn-devel-cpu-gomp` (the project's setup does), or set DNNL_ROOT.")


def _build() -> pathlib.Path:
  """Compiles `onednn_conv.cc` once per (source, jaxlib, oneDNN) and returns the shared library."""
  include, libdir = _find_dnnl()
  ffi_include = pathlib.Path(jax.ffi.include_dir())
  compiler = os.environ.get("CXX", "g++")
  if shutil.which(compiler) is None:
    raise RuntimeError(f"no C++ compiler {compiler!r} on PATH to build {_SOURCE.name} (install g++ or set CXX)")
  digest = hashlib.sha256()
  digest.update(_SOURCE.read_bytes())
  digest.update(f"{jax.__version__}|{jax.lib.__file__}|{include}|{libdir}|{compiler}".encode())
  out = cache.cache_dir() / "onednn_conv" / digest.hexdigest()[:16] / "libfacegen_onednn_conv.so"
  if out.exists():
    return out
  out.parent.mkdir(parents=True, exist_ok=True)
  cmd = [compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-fopenmp", f"-I{include}", f"-I{ffi_include}", str(_SOURCE),
         f"-L{libdir}", "-ldnnl", f"-Wl,-rpath,{libdir}"]
  with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".so", delete=False) as tmp:
    pass
  try:
    proc = subprocess.run(cmd + ["-o", tmp.name], capture_output=True, text=True)
    if proc.returncode != 0:
      raise RuntimeError(f"building {_SOURCE.name} failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    os.replace(tmp.name, out)  # atomic: concurrent processes never load a half-written library
  finally:
    if os.path.exists(tmp.name):
      os.unlink(tmp.name)
  return out


def _load() -> None:
  with _lock:
    if _state:
      return
    # A bad setting is the user's error, not a reason to fall back.
    mflop = {dtype: single_thread_mflop(dtype) for dtype in SINGLE_THREAD_ENV}
    try:
      path = _build()
      lib = ctypes.CDLL(str(path))
      for key, symbol in _SYMBOLS.items():
        jax.ffi.register_ffi_target(_TARGETS[key], jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
        jax.ffi.register_ffi_target(_TARGETS[key] + _BF16, jax.ffi.pycapsule(getattr(lib, symbol + "Bf16")),
                                    platform="cpu")
      lib.facegen_onednn_version.restype = ctypes.c_char_p
      lib.facegen_set_single_thread_below.argtypes = [ctypes.c_int64, ctypes.c_int64]
      lib.facegen_single_thread_calls.restype = ctypes.c_int64
      lib.facegen_set_single_thread_below(_flops(mflop["float32"]), _flops(mflop["bfloat16"]))
      _thresholds.update(mflop)
      _state.update(ok=True, path=path, version=lib.facegen_onednn_version().decode(), lib=lib,
                    bf16=bool(lib.facegen_onednn_bf16_native()))
    except Exception as e:  # pylint: disable=broad-except
      _state.update(ok=False, reason=f"{type(e).__name__}: {e}")


def single_thread_calls() -> int:
  """How many oneDNN convolution calls have run on one thread in this process (for tests)."""
  return int(_state["lib"].facegen_single_thread_calls()) if available() else 0


def available() -> bool:
  """Whether the oneDNN convolutions are built and registered (builds them on first call)."""
  _load()
  return _state["ok"]


def unavailable_reason() -> Optional[str]:
  _load()
  return None if _state["ok"] else _state["reason"]


def bf16_native() -> bool:
  """Whether oneDNN has optimised bfloat16 kernels for all three convolution primitives on this CPU
  (on this project's AMX Xeon: yes; a CPU for which oneDNN has only its reference loops: no).
  Only then do bfloat16 convolutions run here."""
  return available() and _state["bf16"]


def version() -> Optional[str]:
  """The oneDNN version the handlers were built against, or None."""
  return _state.get("version") if available() else None


# ----------------------------------------------------------------------------------------------
# The custom calls: one JAX primitive per kind, lowered to its FFI target, wrapped in
# `custom_partitioning` so that a sharded jit runs each device's batch shard locally.

_ATTRS = ("sh", "sw", "pt", "pb", "pl", "pr", "flip")
# Factor names: n batch, (h, w) src spatial, c src channels, (p, q) dst spatial, o dst channels,
# (i, j) kernel. Only the batch may be sharded: every other factor needs replication. With
# flip, the weights are the flipped kernel of the transposed convolution: "i j o c".
_RULES = {
    "fwd": "n h w c, i j c o -> n p q o",
    "fwd_inference": "n h w c, i j c o -> n p q o",
    "bwd_data": "n p q o, i j c o -> n h w c",
    "bwd_weights": "n h w c, n p q o -> i j c o",
}


def _rule(kind: str, flip: bool) -> str:
  return _RULES[kind].replace("i j c o", "i j o c") if flip else _RULES[kind]


def _abstract_eval(a, b, *, out_shape, **_):
  del b
  return jax.core.ShapedArray(out_shape, a.dtype)


def _make_primitive(kind: str):
  prim = jex_core.Primitive(f"facegen_onednn_conv_{kind}")
  prim.def_impl(functools.partial(dispatch.apply_primitive, prim))
  prim.def_abstract_eval(_abstract_eval)

  def lowering(ctx, a, b, *, out_shape, **attrs):
    del out_shape
    target = _TARGETS[kind] + (_BF16 if ctx.avals_in[0].dtype == jnp.bfloat16 else "")
    return jax.ffi.ffi_lowering(target)(ctx, a, b, **{k: np.int64(v) for k, v in attrs.items()})

  def batching(args, dims, **params):
    # vmap: one call per mapped index (the convolutions' own batch dimension is the fast one).
    size = next(x.shape[d] for x, d in zip(args, dims) if d is not batching_lib.not_mapped)
    moved = [jnp.moveaxis(x, d, 0) if d is not batching_lib.not_mapped else jnp.broadcast_to(x, (size,) + x.shape)
             for x, d in zip(args, dims)]
    return lax.map(lambda ab: prim.bind(*ab, **params), tuple(moved)), 0

  mlir.register_lowering(prim, lowering, platform="cpu")
  batching_lib.primitive_batchers[prim] = batching
  return prim


_PRIMS = {kind: _make_primitive(kind) for kind in _TARGETS}


def _batch_axes(sharding) -> tuple:
  """The mesh axes the leading (batch) dimension of an operand is sharded over."""
  spec = getattr(sharding, "spec", None)
  if not spec or spec[0] is None:
    return ()
  return tuple(spec[0]) if isinstance(spec[0], tuple) else (spec[0],)


def _make_partitioned(kind: str, flip: bool):
  prim = _PRIMS[kind]

  def call(a, b, out_shape, attrs):
    return prim.bind(a, b, out_shape=out_shape, **dict(zip(_ATTRS, attrs)))

  fn = custom_partitioning(call, static_argnums=(2, 3))

  def shardings(mesh, arg_shapes):
    axes = _batch_axes(arg_shapes[0].sharding)
    batch = NamedSharding(mesh, P(axes if axes else None))
    replicated = NamedSharding(mesh, P())
    args = (batch, batch) if kind == "bwd_weights" else (batch, replicated)
    return axes, args, replicated if kind == "bwd_weights" else batch

  def infer(out_shape, attrs, mesh, arg_shapes, result_shape):
    del out_shape, attrs, result_shape
    return shardings(mesh, arg_shapes)[2]

  def partition(out_shape, attrs, mesh, arg_shapes, result_shape):
    del result_shape
    axes, arg_shardings, out_sharding = shardings(mesh, arg_shapes)
    shards = int(np.prod([mesh.shape[ax] for ax in axes])) if axes else 1
    local = out_shape if kind == "bwd_weights" else (out_shape[0] // shards,) + tuple(out_shape[1:])

    def lower(a, b):
      y = call(a, b, local, attrs)
      if kind == "bwd_weights" and axes:
        y = lax.psum(y, axes)  # each device's weight gradient covers its batch shard
      return y

    return mesh, lower, out_sharding, arg_shardings

  order = [f for f in _rule(kind, flip) if f.isalpha()]
  fn.def_partition(partition, infer_sharding_from_operands=infer, sharding_rule=_rule(kind, flip),
                   reduction_factors=("n",) if kind == "bwd_weights" else (),
                   need_replication_factors=tuple(sorted(set(order) - {"n"}, key=order.index)))
  return fn


_PARTITIONED = {(kind, flip): _make_partitioned(kind, flip) for kind in _TARGETS for flip in (False, True)}


def _ffi(kind: str, out_shape: Sequence[int], a, b, strides, pads: Pads, flip: bool = False):
  """One oneDNN primitive call. flip: the weights (the result, for "bwd_weights") are the kernel of
  the transposed convolution, spatially flipped and in/out swapped; the C++ side flips them as it
  reorders them into the primitive's layout, so no flipped copy is made in XLA."""
  if not available():
    raise RuntimeError(f"oneDNN convolutions unavailable: {unavailable_reason()}")
  attrs = (strides[0], strides[1], pads[0][0], pads[0][1], pads[1][0], pads[1][1], int(flip))
  return _PARTITIONED[kind, flip](a, b, tuple(int(d) for d in out_shape), tuple(int(v) for v in attrs))


# ----------------------------------------------------------------------------------------------
# Convolutions with their gradients.

def out_size(size: int, k: int, stride: int, pad: tuple[int, int]) -> int:
  return (size + pad[0] + pad[1] - k) // stride + 1


def _conv2d(kind, x, w, strides, pads):
  n, h, wd, _ = x.shape
  kh, kw, _, o = w.shape
  shape = (n, out_size(h, kh, strides[0], pads[0]), out_size(wd, kw, strides[1], pads[1]), o)
  return _ffi(kind, shape, x, w, strides, pads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x, w, strides: tuple[int, int], pads: Pads):
  """NHWC x HWIO -> NHWC convolution (float32, explicit non-negative padding) on oneDNN.

  Not differentiated, it runs oneDNN's forward_inference primitive (the one meant for inference);
  under `jax.grad`/`jax.vjp` the forward_training one that its gradients pair with."""
  return _conv2d("fwd_inference", x, w, strides, pads)


def _conv2d_fwd(x, w, strides, pads):
  return _conv2d("fwd", x, w, strides, pads), (x, w)


def _conv2d_bwd(strides, pads, res, g):
  x, w = res
  return _ffi("bwd_data", x.shape, g, w, strides, pads), _ffi("bwd_weights", w.shape, x, g, strides, pads)


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def _transpose_canonical(x_hw, w_hw, strides, pads: Pads):
  """Padding of the strided convolution whose data gradient is the transposed convolution."""
  return tuple((k - 1 - p[0], k - 1 - p[1]) for k, p in zip(w_hw, pads))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_transpose2d(x, w, strides: tuple[int, int], pads: Pads):
  """`lax.conv_general_dilated(x, w, (1, 1), pads, lhs_dilation=strides)` on oneDNN."""
  return _conv_transpose_fwd(x, w, strides, pads)[0]


def _conv_transpose_fwd(x, w, strides, pads):
  n, h, wd, _ = x.shape
  kh, kw, _, o = w.shape
  shape = (n, (h - 1) * strides[0] + 1 + sum(pads[0]) - kh + 1, (wd - 1) * strides[1] + 1 + sum(pads[1]) - kw + 1, o)
  cpads = _transpose_canonical(x.shape[1:3], (kh, kw), strides, pads)
  return _ffi("bwd_data", shape, x, w, strides, cpads, flip=True), (x, w)


def conv_transpose2d_grads(x, w, g, strides: tuple[int, int], pads: Pads):
  """The input and kernel gradients of `conv_transpose2d(x, w, strides, pads)` for the output
  cotangent `g`, without its forward pass."""
  cpads = _transpose_canonical(x.shape[1:3], w.shape[:2], strides, pads)
  dx = _ffi("fwd", x.shape, g, w, strides, cpads, flip=True)
  return dx, _ffi("bwd_weights", w.shape, g, x, strides, cpads, flip=True)


def _conv_transpose_bwd(strides, pads, res, g):
  return conv_transpose2d_grads(*res, g, strides, pads)


conv_transpose2d.defvjp(_conv_transpose_fwd, _conv_transpose_bwd)
