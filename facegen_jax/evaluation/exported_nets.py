"""FID and LPIPS networks the user supplies as serialized `jax.export` files.

facegen-jax ships no Inception or LPIPS weights and downloads none. A user who has them (e.g. a
Flax port of the TF Inception-v3 `pool_3` layer, or of LPIPS) exports the jitted function with
`jax.export.export(jax.jit(fn))(...).serialize()` and writes the bytes to a file; the batch
dimension may be symbolic (`jax.export.symbolic_shape("b, 299, 299, 3")`) or fixed.

Contracts:
- FID features: `fn(images) -> [B, D]`, `images` `[B, H, W, 3]` float32 in [0, 255];
- LPIPS: `fn(a, b) -> [B]` (or `[B, 1, 1, 1]`), `a`, `b` `[B, H, W, 3]` float32 in [-1, 1].
Images are resized to the exported H, W when these are fixed.
"""

from typing import Callable

import numpy as np
from PIL import Image


def load_exported(path: str, what: str):
  """The `jax.export.Exported` in `path`; `what` names it in errors (e.g. "--fid_weights")."""
  try:
    from jax import export  # pylint: disable=import-outside-toplevel
    import flatbuffers  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError as e:
    raise ImportError(f"{what}={path} needs the 'flatbuffers' package to read jax.export files: "
                      "pip install flatbuffers (the 'evaluation' extra of facegen-jax)") from e
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise FileNotFoundError(f"{what}={path} cannot be read ({e})") from e
  try:
    return export.deserialize(bytearray(data))
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"{what}={path} is not a serialized jax.export function ({type(e).__name__}: {e}); write it "
                     "with jax.export.export(jax.jit(fn))(shapes).serialize()") from e


def _static(dim):
  return dim if isinstance(dim, int) else None


def _resize(images: np.ndarray, height, width) -> np.ndarray:
  if height is None or images.shape[1:3] == (height, width):
    return images
  return np.stack([np.asarray(Image.fromarray(im).resize((width, height), Image.BICUBIC)) for im in images])


def _batched(exported, num_inputs: int, prepare: Callable[[np.ndarray], np.ndarray]):
  aval = exported.in_avals[0]
  if len(exported.in_avals) != num_inputs or len(aval.shape) != 4 or _static(aval.shape[3]) != 3:
    raise ValueError(f"expected {num_inputs} input(s) [B, H, W, 3], the file has {exported.in_avals}")
  batch = _static(aval.shape[0])
  height, width = _static(aval.shape[1]), _static(aval.shape[2])

  def call(*images: np.ndarray) -> np.ndarray:
    xs = [prepare(_resize(np.asarray(im, np.uint8), height, width)) for im in images]
    n = xs[0].shape[0]
    step = batch or n
    outs = []
    for start in range(0, n, step):
      chunk = [x[start:start + step] for x in xs]
      if batch and chunk[0].shape[0] < batch:  # fixed batch: pad, then drop the padding
        chunk = [np.concatenate([c, np.repeat(c[-1:], batch - c.shape[0], 0)]) for c in chunk]
      outs.append(np.asarray(exported.call(*chunk))[:min(step, n - start)])
    return np.concatenate(outs)
  return call


def fid_feature_fn(path: str) -> Callable[[np.ndarray], np.ndarray]:
  """`images uint8 [N, H, W, 3] -> features [N, D]` from an exported Inception feature function."""
  call = _batched(load_exported(path, "--fid_weights"), 1, lambda x: x.astype(np.float32))
  return lambda images: call(images).reshape(len(images), -1)


def lpips_fn(path: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
  """`(a, b) uint8 [N, H, W, 3] -> distances [N]` from an exported LPIPS function."""
  call = _batched(load_exported(path, "--lpips_weights"), 2, lambda x: x.astype(np.float32) / 127.5 - 1.0)
  return lambda a, b: call(a, b).reshape(len(a))
