"""Paths that are local files and folders or URLs (`gs://bucket/x`, `s3://...`), through etils.epath.

`pathlib.Path("gs://b/x")` silently becomes the local `gs:/b/x` and `os.path.abspath` puts it under
the working directory, so code that takes a path a user may give as a URL goes through `as_path`
(an `epath.Path` either way; local paths behave as before). Some readers only take local files
(PyAV for video, ArrayRecord's C++ reader and writer for the TFDS shards: google/array_record#120):
`local_copy` hands them a local copy of a URL, `writing_to` a local folder that is uploaded to the
URL when it is complete, and `mirror` keeps a local copy of a URL's folder up to date.
"""

import contextlib
import hashlib
import os
import shutil
import tempfile
from typing import Iterator

from absl import logging
from etils import epath

_CHUNK = 16 << 20  # bytes per read when copying


def is_url(path) -> bool:
  """True for `scheme://...` (gs, s3, ...), False for a local path."""
  return "://" in os.fspath(path)


def as_path(path) -> epath.Path:
  """`path` as an epath.Path: a URL kept as one, a local path as it is (not made absolute)."""
  return epath.Path(path)


def write_atomically(path, write) -> None:
  """Calls `write(file)` to fill `path`. A local path is written to a temporary file beside it and
  renamed into place, so a reader (or another process writing the same file at once) never sees a
  half-written one; a URL is written as one object, which appears whole or not at all."""
  path = as_path(path)
  if is_url(path):
    with path.open("wb") as f:
      write(f)
    return
  fd, tmp = tempfile.mkstemp(dir=os.fspath(path.parent), prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
    os.replace(tmp, os.fspath(path))
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def copy_file(source, target) -> None:
  """Copies one file between any two places (local or URL), `write_atomically`; `target`'s folder
  is created."""
  source, target = as_path(source), as_path(target)
  target.parent.mkdir(parents=True, exist_ok=True)
  with source.open("rb") as src:
    write_atomically(target, lambda dst: shutil.copyfileobj(src, dst, _CHUNK))


def files_under(folder) -> list:
  """Every file under `folder` at any depth, as paths relative to it ("/"-separated), sorted."""
  root = as_path(folder)
  base = _without_scheme(root)
  found = []
  for dirpath, _, filenames in root.walk():  # one listing of a bucket, not a call per folder
    rel = _without_scheme(dirpath)[len(base):].strip("/")  # a bucket's folders come without their scheme
    found += [f"{rel}/{name}" if rel else name for name in filenames]
  return sorted(found)


def _without_scheme(path) -> str:
  return os.fspath(path).split("://", 1)[-1].rstrip("/")


def copy_tree(source, target, last: tuple = ()) -> int:
  """Copies every file under `source` into `target` (local or URL either side); returns the count.

  Files named in `last` (relative paths) are copied after all others: a reader that takes their
  presence for "complete" never sees a half-copied folder."""
  names = files_under(source)
  for name in sorted(names, key=lambda n: n in last):
    copy_file(as_path(source) / name, as_path(target) / name)
  return len(names)


def mirror(source, target) -> int:
  """Makes the local folder `target` hold every file of `source` (a URL): files missing or of
  another size are copied, others left. Returns how many were copied."""
  source, target = as_path(source), epath.Path(target)
  copied = 0
  for name in files_under(source):
    local = target / name
    if not local.exists() or local.stat().length != (source / name).stat().length:
      copy_file(source / name, local)
      copied += 1
  return copied


def staging_dir(url: str, purpose: str) -> str:
  """A local folder for copies of `url` (`<tmp>/facegen_jax_<purpose>/<hash of url>`), the same
  one for the same URL, so a rerun finds what an earlier one copied."""
  digest = hashlib.sha256(os.fspath(url).rstrip("/").encode()).hexdigest()[:16]
  return os.path.join(tempfile.gettempdir(), f"facegen_jax_{purpose}", digest)


@contextlib.contextmanager
def local_copy(path, *, what: str) -> Iterator[str]:
  """Yields a local path for reading `path`: itself if local; for a URL, a copy of the file (or of
  every file of the folder) in a temporary folder removed afterwards. `what` names it in the log."""
  path = os.fspath(path)
  if not is_url(path):
    yield path
    return
  source = as_path(path)
  with tempfile.TemporaryDirectory(prefix="facegen_copy_") as tmp:
    local = os.path.join(tmp, source.name or "root")
    if source.is_dir():
      count = copy_tree(source, local)
      logging.info("copied %s (%s, %d files) to %s: read from local files", path, what, count, local)
    else:
      copy_file(source, local)
    yield local


@contextlib.contextmanager
def writing_to(path, last: tuple = ()) -> Iterator[str]:
  """Yields a local folder to write into: `path` itself if local (created); for a URL, a temporary
  folder whose files are copied to the URL when the block ends without an error (`last`: files
  copied after the others, see `copy_tree`), then removed."""
  path = os.fspath(path)
  if not is_url(path):
    os.makedirs(path, exist_ok=True)
    yield path
    return
  with tempfile.TemporaryDirectory(prefix="facegen_out_") as tmp:
    yield tmp
    count = copy_tree(tmp, path, last)
    logging.info("copied %d files to %s", count, path)


@contextlib.contextmanager
def local_checkpoint(path) -> Iterator[str]:
  """Yields a local folder for reading a training workdir or an export folder `path`: itself if
  local; for a URL, a temporary copy of its top-level files (config.json, an export's weights and
  programs) and of its newest checkpoint step (what the generator restore reads), removed
  afterwards."""
  path = os.fspath(path)
  if not is_url(path):
    yield path
    return
  source = as_path(path)
  if not source.is_dir():
    raise FileNotFoundError(f"{path} does not exist: pass a training workdir or an export folder")
  with tempfile.TemporaryDirectory(prefix="facegen_checkpoint_") as tmp:
    for child in source.iterdir():
      if not child.is_dir():
        copy_file(child, os.path.join(tmp, child.name))
    steps = source / "checkpoints"
    numbered = sorted((p for p in steps.iterdir() if p.name.isdigit()), key=lambda p: -int(p.name)) if (
        steps.is_dir()) else []
    if numbered:
      copy_tree(numbered[0], os.path.join(tmp, "checkpoints", numbered[0].name))
    logging.info("copied %s%s to %s: the generator is read from local files", path,
                 f" (checkpoint step {numbered[0].name})" if numbered else "", tmp)
    yield tmp
