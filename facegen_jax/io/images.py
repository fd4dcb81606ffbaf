"""uint8 images and masks <-> the floats the networks read and write.

Images: uint8 [0, 255] <-> float32 [-1, 1]; masks: uint8 [0, 255] -> float32 [0, 1]. The
functions take numpy or jax arrays (traced ones too) and return the same kind.
"""

import jax
import jax.numpy as jnp
import numpy as np


def _array_module(x):
  return jnp if isinstance(x, jax.Array) else np


def to_float_image(x):
  """uint8 [0, 255] -> float32 [-1, 1]."""
  return x.astype(np.float32) / 127.5 - 1.0


def to_float_mask(x):
  """uint8 [0, 255] -> float32 [0, 1]."""
  return x.astype(np.float32) / 255.0


def to_uint8_image(x):
  """float [-1, 1] -> uint8 [0, 255]: `(x + 1) * 127.5`, rounded half to even, clipped."""
  xp = _array_module(x)
  return xp.clip(xp.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)
