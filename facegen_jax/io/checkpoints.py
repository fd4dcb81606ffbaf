"""Orbax checkpoints of a training workdir: where they live, the manager, integrity, two restores.

A workdir holds one `CheckpointManager` under `<workdir>/checkpoints` whose steps each have two
items: "state" (the train state: generator and discriminator variables, both optimizer states,
the EMA generator params, the step and the rng) and "data" (the data iterator's JSON state).

Integrity: once orbax has finished writing a step (`Manager.wait_until_finished`, which every
save runs for the previous save too), process 0 writes `<step>/facegen_checksums.json` (size and
SHA-256 of every file of the step; temporary file, then renamed; paths go through epath, so a
workdir may be a `gs://` URL). A restore checks a step's files against it, then the saved array
shapes against the config's, then restores and checks every floating-point value finite. A step written before this file existed, or by a process killed
after the step was complete but before it was sealed (a step is sealed when the next save starts,
or when the run ends), has no checksums; it is trusted when it restores and is finite.

- `restore_latest(manager, like)`: everything, into the structure of `like` (training resumes
  with it, through `train/checkpointing.py`) from the newest good step; damaged or incomplete
  newer steps are moved to `<workdir>/damaged_checkpoints/` (never deleted) with one warning each;
  a step saved with another model is an error and moves nothing;
- `restore_generator(workdir, like)`: an orbax partial restore of the generator alone (the EMA
  params, or the raw ones, and the generator's batch statistics) for inference, which needs no
  optimizer or discriminator state and no training code; a damaged newest step or non-finite
  weights are an error naming the step.

The saved state is a tree of the train state's fields; the generator-only restore reads the
fields named below (`GENERATOR_VARS`, `EMA_PARAMS`, `STEP`), which must stay the field names of
`facegen_jax.train.state.TrainState`.
"""

import hashlib
import json
import os
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

STATE_ITEM, DATA_ITEM = "state", "data"
GENERATOR_VARS, EMA_PARAMS, STEP = "g_vars", "ema_params", "step"
CHECKSUMS_FILE = "facegen_checksums.json"
DAMAGED_DIR = "damaged_checkpoints"


class DamagedCheckpointError(ValueError):
  """No checkpoint of a workdir can be used (damaged, incomplete or with non-finite values)."""


def checkpoint_dir(workdir: str) -> str:
  """`<workdir>/checkpoints`; a local workdir made absolute, a URL (`gs://...`, through epath) kept."""
  workdir = os.fspath(workdir)
  return str(epath.Path(workdir) / "checkpoints") if "://" in workdir else os.path.join(os.path.abspath(workdir),
                                                                                       "checkpoints")


def _files_under(folder: epath.Path) -> list:
  """Every file under `folder`, at any depth (epath's glob refuses `**`)."""
  found = []
  for child in folder.iterdir():
    if child.is_dir():
      found += _files_under(child)
    else:
      found.append(child)
  return found


def _step_files(step_dir: epath.Path) -> dict:
  """Relative path -> [bytes, sha256] of every file of a step but the checksum file itself."""
  found = {}
  for path in sorted(_files_under(step_dir), key=str):
    if not path.name.startswith(CHECKSUMS_FILE) and not path.name.startswith(f".{CHECKSUMS_FILE}"):
      digest, size = hashlib.sha256(), 0
      with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):  # pylint: disable=cell-var-from-loop
          digest.update(block)
          size += len(block)
      found[str(path.relative_to(step_dir))] = [size, digest.hexdigest()]
  return found


def write_checksums(step_dir) -> None:
  """Seals a finished step: `<step_dir>/facegen_checksums.json`, written to a temporary file and renamed
  (on an object store, uploaded in one piece)."""
  step_dir = epath.Path(step_dir)
  text = json.dumps({"files": _step_files(step_dir)}, indent=0)
  if "://" in str(step_dir):  # an object store: an upload appears whole or not at all
    (step_dir / CHECKSUMS_FILE).write_text(text)
    return
  tmp = step_dir / f".{CHECKSUMS_FILE}.tmp"
  tmp.write_text(text)
  tmp.replace(step_dir / CHECKSUMS_FILE)


def file_problem(step_dir) -> Optional[str]:
  """What is wrong with the files of a step (missing, truncated, changed since saved), or None.

  A step without checksums (see the module docstring) only needs orbax's own metadata files.
  """
  step_dir = epath.Path(step_dir)
  sums = step_dir / CHECKSUMS_FILE
  if not sums.exists():
    missing = [name for name in ("_CHECKPOINT_METADATA", f"{STATE_ITEM}/_METADATA", f"{DATA_ITEM}/metadata")
               if not (step_dir / name).is_file()]
    return f"incomplete: {', '.join(missing)} missing" if missing else None
  try:
    want = json.loads(sums.read_text())["files"]
  except (ValueError, KeyError, TypeError) as e:
    return f"its {CHECKSUMS_FILE} is unreadable ({e})"
  got = _step_files(step_dir)
  problems = []
  for name, (size, digest) in sorted(want.items()):
    if name not in got:
      problems.append(f"{name} is missing")
    elif got[name][0] != size:
      problems.append(f"{name} has {got[name][0]} bytes, {size} when saved")
    elif got[name][1] != digest:
      problems.append(f"{name} changed since it was saved (SHA-256 differs)")
  if not problems:
    return None
  return "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more files" if len(problems) > 3 else "")


class Manager(ocp.CheckpointManager):
  """orbax's `CheckpointManager` that seals every step it saved once the step is written
  (`write_checksums`, on process 0), in `wait_until_finished` (run by every `save` and `close`)."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self._unsealed = []

  def save(self, step, *args, **kwargs):  # pylint: disable=arguments-differ,signature-differs
    saved = super().save(step, *args, **kwargs)
    if saved:
      self._unsealed.append(int(step))
    return saved

  def wait_until_finished(self):
    super().wait_until_finished()
    unsealed, self._unsealed = self._unsealed, []
    if jax.process_index() != 0:
      return
    for step in unsealed:
      step_dir = epath.Path(self.directory) / str(step)
      if step_dir.is_dir():  # not already dropped by max_to_keep
        write_checksums(step_dir)


def make_manager(workdir: str, keep: int) -> Manager:
  """The workdir's checkpoint manager, keeping the newest `keep` steps."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  return Manager(checkpoint_dir(workdir), options=options, item_names=(STATE_ITEM, DATA_ITEM))


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_state: dict) -> None:
  """Writes (state, data_state) as checkpoint `step` (asynchronously; atomic once complete)."""
  manager.save(step, args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardSave(state),
                                                DATA_ITEM: ocp.args.JsonSave(data_state)}), force=True)


def abstract_like(tree: Any) -> Any:
  """Shape/dtype/sharding of every leaf of `tree`, the target orbax restores into."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)


def _shorten(error: Exception, limit: int = 600) -> str:
  text = " ".join(str(error).split()) or type(error).__name__
  return text if len(text) < limit else text[:limit] + " ..."


def _mismatch(directory, step: int, detail: str) -> ValueError:
  return ValueError(
      f"checkpoint {directory}/{step} does not match this config: it was saved with another model ({detail}). "
      "Use a new --workdir, or the config.json saved beside the checkpoints")


def _path_name(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _shapes(tree: Any) -> dict:
  """'a/b/0/c' -> (shape, dtype name) of every leaf."""
  return {_path_name(path): (tuple(leaf.shape), np.dtype(leaf.dtype).name)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def structure_mismatch(saved: dict, wanted: dict) -> Optional[str]:
  """How two `_shapes` tables differ (at most three arrays named), or None."""
  wrong = [f"{k}: saved {saved[k][1]}{list(saved[k][0])}, config wants {wanted[k][1]}{list(wanted[k][0])}"
           for k in sorted(saved.keys() & wanted.keys()) if saved[k] != wanted[k]]
  wrong += [f"{k} not in the checkpoint" for k in sorted(wanted.keys() - saved.keys())]
  wrong += [f"{k} not in this config's model" for k in sorted(saved.keys() - wanted.keys())]
  if not wrong:
    return None
  return "; ".join(wrong[:3]) + (f"; and {len(wrong) - 3} more" if len(wrong) > 3 else "")


def _saved_shapes(step_dir: epath.Path) -> dict:
  metadata = ocp.StandardCheckpointHandler().metadata(step_dir / STATE_ITEM)
  return _shapes(getattr(metadata, "tree", metadata))


def nonfinite_problem(tree: Any) -> Optional[str]:
  """Names the arrays of `tree` holding NaN or infinity (this process's shards), or None."""
  bad = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if not np.issubdtype(np.dtype(leaf.dtype), np.inexact):
      continue
    shards = [s.data for s in leaf.addressable_shards] if isinstance(leaf, jax.Array) else [leaf]
    count = sum(int(np.size(s) - np.isfinite(np.asarray(s)).sum()) for s in shards)
    if count:
      bad.append(f"{_path_name(path)} ({count} values)")
  if not bad:
    return None
  return "NaN or infinite values in " + ", ".join(bad[:3]) + (f" and {len(bad) - 3} more arrays" if len(bad) > 3 else "")


def _step_dirs(directory: epath.Path) -> list:
  """Every step folder (named by its number), newest first."""
  if not directory.is_dir():
    return []
  return sorted((p for p in directory.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: -int(p.name))


def _move_tree(source: epath.Path, target: epath.Path) -> None:
  """Renames a folder; on an object store (no folders to rename), copies every file, then deletes."""
  if "://" not in str(source):
    source.rename(target)
    return
  for path in _files_under(source):
    dest = target / str(path.relative_to(source))
    dest.parent.mkdir(parents=True, exist_ok=True)
    path.copy(dest)
  source.rmtree()


def _move_aside(step_dir: epath.Path, problem: str, resumed: Optional[int]) -> epath.Path:
  aside = step_dir.parent.parent / DAMAGED_DIR
  aside.mkdir(parents=True, exist_ok=True)
  target, n = aside / step_dir.name, 1
  while target.exists():
    target, n = aside / f"{step_dir.name}.{n}", n + 1
  _move_tree(step_dir, target)
  then = f"resuming from step {resumed}" if resumed is not None else "starting from step 0"
  logging.warning("checkpoint %s is damaged (%s): moved it to %s; %s", step_dir, problem, target, then)
  return target


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices(name)


def restore_latest(manager: ocp.CheckpointManager, like: Any) -> Optional[tuple[Any, dict]]:
  """The newest good checkpoint as (state, data_state), or None when there is none yet.

  `like` gives the structure, dtypes and shardings (a freshly initialised train state). Steps are
  tried newest first: one whose files fail their checksums, that cannot be restored or holds
  non-finite values is damaged; once a good step is found, the damaged newer ones are moved to
  `<workdir>/damaged_checkpoints/` with a warning each. Raises ValueError (moving nothing) for a
  step saved with another model, and DamagedCheckpointError when every step is damaged.
  """
  directory = epath.Path(manager.directory)
  wanted = _shapes(like)
  damaged = []
  for step_dir in _step_dirs(directory):
    step = int(step_dir.name)
    problem = file_problem(step_dir)
    if problem is None:
      try:
        saved = _saved_shapes(step_dir)
      except Exception as e:  # pylint: disable=broad-except  # any unreadable metadata
        problem = f"its array metadata cannot be read ({_shorten(e, 200)})"
      else:
        mismatch = structure_mismatch(saved, wanted)
        if mismatch:
          raise _mismatch(directory, step, mismatch)
    restored = None
    if problem is None:
      manager.reload()
      try:
        restored = manager.restore(step, args=ocp.args.Composite(**{
            STATE_ITEM: ocp.args.StandardRestore(abstract_like(like)), DATA_ITEM: ocp.args.JsonRestore()}))
      except Exception as e:  # pylint: disable=broad-except  # the shapes matched: the files are at fault
        problem = f"cannot be restored ({_shorten(e, 300)})"
    if problem is None:
      problem = nonfinite_problem(restored[STATE_ITEM])
    if problem is None:
      if jax.process_index() == 0:
        for bad_dir, why in damaged:
          _move_aside(bad_dir, why, step)
      _sync("facegen_checkpoints_moved_aside")
      manager.reload()
      return restored[STATE_ITEM], restored[DATA_ITEM]
    damaged.append((step_dir, problem))
  if damaged:
    listed = "; ".join(f"step {d.name}: {why}" for d, why in damaged)
    raise DamagedCheckpointError(
        f"no usable checkpoint in {directory} ({listed}). Move the folder aside to train from step 0, or restore "
        "it from a copy")
  return None


def check_finite(tree: Any, where: str, fix: str = "export again from a good checkpoint") -> None:
  """Raises DamagedCheckpointError naming `where` and `fix` if `tree` holds NaN or infinite values."""
  problem = nonfinite_problem(tree)
  if problem:
    raise DamagedCheckpointError(f"{where}: {problem}; the weights are damaged: {fix}")


def restore_generator(workdir: str, like: dict, use_ema: bool = True) -> tuple[dict, dict]:
  """The generator of the newest checkpoint of `workdir`, read alone (orbax partial restore).

  Args:
    workdir: a training workdir.
    like: the generator's variables `{"params", "batch_stats"}` (arrays or ShapeDtypeStructs),
      giving structure, shapes and dtypes.
    use_ema: the EMA params (what inference uses) instead of the raw ones.

  Returns:
    (variables `{"params", "batch_stats"}` as host arrays, info `{"step", "weights": "ema"|"raw"}`).

  Raises:
    FileNotFoundError: no checkpoint. ValueError: saved with another model.
    DamagedCheckpointError: the newest step's files fail their checks, or it holds non-finite weights.
  """
  directory = epath.Path(checkpoint_dir(workdir))
  steps = _step_dirs(directory)
  if not steps:
    raise FileNotFoundError(f"no checkpoint in {directory}: train first, or pass an export directory")
  step_dir, step = steps[0], int(steps[0].name)
  damaged = lambda why: DamagedCheckpointError(  # pylint: disable=unnecessary-lambda-assignment
      f"checkpoint {step_dir} is damaged ({why}). Rerun train.py on {workdir} (it sets damaged steps aside and "
      "resumes from the newest good one), or use an export")
  problem = file_problem(step_dir)
  if problem:
    raise damaged(problem)
  params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), like["params"])
  stats = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), like["batch_stats"])
  target = {STEP: jax.ShapeDtypeStruct((), "int32"), GENERATOR_VARS: {"batch_stats": stats}}
  if use_ema:
    target[EMA_PARAMS] = params
  else:
    target[GENERATOR_VARS]["params"] = params
  try:
    saved = _saved_shapes(step_dir)
  except Exception as e:  # pylint: disable=broad-except  # any unreadable metadata
    raise damaged(f"its array metadata cannot be read: {_shorten(e, 200)}") from e
  roots = (STEP, f"{GENERATOR_VARS}/batch_stats", EMA_PARAMS if use_ema else f"{GENERATOR_VARS}/params")
  mismatch = structure_mismatch({k: v for k, v in saved.items() if any(k == r or k.startswith(r + "/") for r in roots)},
                                _shapes(target))
  if mismatch:
    raise _mismatch(directory, step, mismatch)
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
  manager = make_manager(workdir, keep=1_000_000)
  try:
    restored = manager.restore(step, args=ocp.args.Composite(**{STATE_ITEM: ocp.args.PyTreeRestore(
        item=target, restore_args=restore_args, partial_restore=True)}))[STATE_ITEM]
  except Exception as e:  # pylint: disable=broad-except  # the shapes matched: the files are at fault
    raise damaged(f"cannot be restored: {_shorten(e, 300)}") from e
  finally:
    manager.close()
  gen = restored[GENERATOR_VARS]
  variables = {"params": restored[EMA_PARAMS] if use_ema else gen["params"], "batch_stats": gen["batch_stats"]}
  check_finite(variables, f"checkpoint {step_dir}", f"rerun train.py on {workdir} (it sets damaged steps aside and "
               "resumes from the newest good one), or use an export")
  return variables, {"step": int(restored[STEP]), "weights": "ema" if use_ema else "raw"}
