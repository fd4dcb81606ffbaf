"""Orbax checkpoints of the whole training job: the TrainState and the data iterator's state.

One `CheckpointManager` under `<workdir>/checkpoints`, keeping the newest N. Saves are atomic
(orbax writes to a temporary directory and renames it when complete), so an interrupted save
never damages the previous checkpoint.
"""

import os
from typing import Optional

import jax
import orbax.checkpoint as ocp

from facegen_jax.train.state import TrainState


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def make_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_names=("state", "data"))


def save(manager: ocp.CheckpointManager, state: TrainState, data_state: dict) -> None:
  step = int(jax.device_get(state.step))
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                             data=ocp.args.JsonSave(data_state)), force=True)


def abstract_like(state: TrainState):
  """Shape/dtype/sharding of `state`, the target orbax restores into."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), state)


def restore_latest(manager: ocp.CheckpointManager, like: TrainState) -> Optional[tuple[TrainState, dict]]:
  """The newest checkpoint as (state, data_state), or None when there is none yet.

  `like` gives the structure, dtypes and shardings (a freshly initialised state). A checkpoint
  whose structure does not match (trained with another config) fails with a clear error.
  """
  step = manager.latest_step()
  if step is None:
    return None
  try:
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_like(like)), data=ocp.args.JsonRestore()))
  except (ValueError, KeyError, TypeError) as e:
    detail = str(e) if len(str(e)) < 1500 else str(e)[:1500] + " ..."
    raise ValueError(
        f"checkpoint {manager.directory}/{step} does not match this config (was it trained with another "
        f"model size or resolution? Use a new --workdir, or the config.json saved beside it): {detail}") from e
  return restored["state"], restored["data"]
