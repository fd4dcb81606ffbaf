"""Orbax checkpoints of a training workdir: where they live, the manager, and two restores.

A workdir holds one `CheckpointManager` under `<workdir>/checkpoints` whose steps each have two
items: "state" (the train state: generator and discriminator variables, both optimizer states,
the EMA generator params, the step and the rng) and "data" (the data iterator's JSON state).

- `restore_latest(manager, like)`: everything, into the structure of `like` (training resumes
  with it, through `train/checkpointing.py`);
- `restore_generator(workdir, like)`: an orbax partial restore of the generator alone (the EMA
  params, or the raw ones, and the generator's batch statistics) for inference, which needs no
  optimizer or discriminator state and no training code.

The saved state is a tree of the train state's fields; the generator-only restore reads the
fields named below (`GENERATOR_VARS`, `EMA_PARAMS`, `STEP`), which must stay the field names of
`facegen_jax.train.state.TrainState`.
"""

import os
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

STATE_ITEM, DATA_ITEM = "state", "data"
GENERATOR_VARS, EMA_PARAMS, STEP = "g_vars", "ema_params", "step"


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def make_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  """The workdir's checkpoint manager, keeping the newest `keep` steps."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_names=(STATE_ITEM, DATA_ITEM))


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_state: dict) -> None:
  """Writes (state, data_state) as checkpoint `step` (asynchronously; atomic once complete)."""
  manager.save(step, args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardSave(state),
                                                DATA_ITEM: ocp.args.JsonSave(data_state)}), force=True)


def abstract_like(tree: Any) -> Any:
  """Shape/dtype/sharding of every leaf of `tree`, the target orbax restores into."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)


def _mismatch(directory, step: int, error: Exception) -> ValueError:
  detail = str(error) if len(str(error)) < 1500 else str(error)[:1500] + " ..."
  return ValueError(
      f"checkpoint {directory}/{step} does not match this config (was it trained with another model size or "
      f"resolution? Use a new --workdir, or the config.json saved beside it): {detail}")


def restore_latest(manager: ocp.CheckpointManager, like: Any) -> Optional[tuple[Any, dict]]:
  """The newest checkpoint as (state, data_state), or None when there is none yet.

  `like` gives the structure, dtypes and shardings (a freshly initialised train state). A
  checkpoint whose structure does not match (trained with another config) fails with a clear error.
  """
  step = manager.latest_step()
  if step is None:
    return None
  try:
    restored = manager.restore(step, args=ocp.args.Composite(**{
        STATE_ITEM: ocp.args.StandardRestore(abstract_like(like)), DATA_ITEM: ocp.args.JsonRestore()}))
  except (ValueError, KeyError, TypeError) as e:
    raise _mismatch(manager.directory, step, e) from e
  return restored[STATE_ITEM], restored[DATA_ITEM]


def restore_generator(workdir: str, like: dict, use_ema: bool = True) -> tuple[dict, dict]:
  """The generator of the newest checkpoint of `workdir`, read alone (orbax partial restore).

  Args:
    workdir: a training workdir.
    like: the generator's variables `{"params", "batch_stats"}` (arrays or ShapeDtypeStructs),
      giving structure, shapes and dtypes.
    use_ema: the EMA params (what inference uses) instead of the raw ones.

  Returns:
    (variables `{"params", "batch_stats"}` as host arrays, info `{"step", "weights": "ema"|"raw"}`).
  """
  manager = make_manager(workdir, keep=1_000_000)
  try:
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {checkpoint_dir(workdir)}: train first, or pass an export directory")
    params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), like["params"])
    stats = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), like["batch_stats"])
    target = {STEP: jax.ShapeDtypeStruct((), "int32"), GENERATOR_VARS: {"batch_stats": stats}}
    if use_ema:
      target[EMA_PARAMS] = params
    else:
      target[GENERATOR_VARS]["params"] = params
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
    try:
      restored = manager.restore(step, args=ocp.args.Composite(**{STATE_ITEM: ocp.args.PyTreeRestore(
          item=target, restore_args=restore_args, partial_restore=True)}))[STATE_ITEM]
    except (ValueError, KeyError, TypeError) as e:
      raise _mismatch(manager.directory, step, e) from e
    wrong = [f"{jax.tree_util.keystr(key)}: {got.dtype}{list(got.shape)}, config wants {want.dtype}{list(want.shape)}"
             for (key, got), want in zip(jax.tree_util.tree_leaves_with_path(restored), jax.tree.leaves(target))
             if got.shape != want.shape or got.dtype != want.dtype]
    if wrong:
      raise _mismatch(manager.directory, step, ValueError("; ".join(wrong[:3]) + (" ..." if len(wrong) > 3 else "")))
  finally:
    manager.close()
  gen = restored[GENERATOR_VARS]
  variables = {"params": restored[EMA_PARAMS] if use_ema else gen["params"], "batch_stats": gen["batch_stats"]}
  return variables, {"step": int(restored[STEP]), "weights": "ema" if use_ema else "raw"}
