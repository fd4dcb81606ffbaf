"""Where converted pretrained weights live, and how they are written and read back.

Conversions run once and are kept as `.npz` files in the user cache directory
(`facegen_jax.io.cache.cache_dir()`: `$FACEGEN_CACHE_DIR` if set, else `~/.cache/facegen_jax`). Files are written atomically, named after
the source file's content hash, and checked against the network's parameter shapes on load, so a
stale or damaged cache file fails with an error naming it instead of producing wrong numbers.
"""

import hashlib
import os
import pathlib
import tempfile
import zipfile
from typing import Any, Dict, Optional

import flax
import numpy as np

from facegen_jax.io import cache


class WeightsError(RuntimeError):
  """Pretrained weights are missing, unreadable or do not fit the network."""


def cache_dir(path: Optional[os.PathLike] = None) -> pathlib.Path:
  """The cache directory: `path`, else the user cache folder (`io.cache.cache_dir()`)."""
  return cache.cache_dir() if path is None else pathlib.Path(path)


def file_digest(path: os.PathLike, length: int = 12) -> str:
  """First `length` hex digits of the file's sha256."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()[:length]


def save_tree(path: os.PathLike, tree: Dict[str, Any], extra: Optional[Dict[str, np.ndarray]] = None) -> None:
  """Writes a nested dict of arrays as a flat `.npz` ("a/b/c" keys), atomically."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  flat = {"/".join(k): np.asarray(v) for k, v in flax.traverse_util.flatten_dict(tree).items()}
  flat.update({f"__{k}__": np.asarray(v) for k, v in (extra or {}).items()})
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **flat)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def load_tree(path: os.PathLike, reference: Any, fix: str):
  """Reads a `save_tree` file and checks it against `reference` (a tree of arrays or shape structs).

  Returns `(tree, extra)`. Raises WeightsError naming the file and `fix` when the file cannot be
  read or its arrays differ from `reference` in names or shapes.
  """
  path = pathlib.Path(path)
  try:
    with np.load(path, allow_pickle=False) as data:
      flat = {k: np.asarray(data[k]) for k in data.files}
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
    raise WeightsError(f"cannot read weights file {path}: {e}. {fix}") from e
  extra = {k[2:-2]: v for k, v in flat.items() if k.startswith("__") and k.endswith("__")}
  arrays = {tuple(k.split("/")): v for k, v in flat.items() if not k.startswith("__")}
  expected = {k: tuple(v.shape) for k, v in flax.traverse_util.flatten_dict(reference).items()}
  got = {k: tuple(v.shape) for k, v in arrays.items()}
  if got != expected:
    missing = sorted("/".join(k) for k in expected.keys() - got.keys())[:5]
    unexpected = sorted("/".join(k) for k in got.keys() - expected.keys())[:5]
    wrong = sorted(f"{'/'.join(k)} {got[k]} != {expected[k]}" for k in expected.keys() & got.keys()
                   if got[k] != expected[k])[:5]
    raise WeightsError(f"weights file {path} does not fit the network (missing {missing}, unexpected "
                       f"{unexpected}, wrong shapes {wrong}). {fix}")
  bad = [k for k, v in arrays.items() if not np.all(np.isfinite(v))]
  if bad:
    raise WeightsError(f"weights file {path} holds non-finite values in {'/'.join(bad[0])}. {fix}")
  return flax.traverse_util.unflatten_dict({k: v.astype(np.float32) for k, v in arrays.items()}), extra
