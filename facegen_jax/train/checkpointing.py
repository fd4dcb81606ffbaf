"""Orbax checkpoints of the whole training job: the TrainState and the data iterator's state.

The manager, the folder and the restores live in `facegen_jax.io.checkpoints` (inference reads
the generator from the same checkpoints without this package); this module saves and restores
the full `TrainState`. Saves are atomic (orbax writes to a temporary directory and renames it when
complete), so an interrupted save never damages the previous checkpoint; each finished step is then
sealed with checksums, and a restore skips (and sets aside) damaged steps (see
`facegen_jax.io.checkpoints`).
"""

from typing import Optional

import jax
import orbax.checkpoint as ocp

from facegen_jax.io import checkpoints
from facegen_jax.train.state import TrainState


def save(manager: ocp.CheckpointManager, state: TrainState, data_state: dict) -> None:
  checkpoints.save(manager, int(jax.device_get(state.step)), state, data_state)


def restore_latest(manager: ocp.CheckpointManager, like: TrainState) -> Optional[tuple[TrainState, dict]]:
  """The newest good checkpoint as (state, data_state), or None when there is none yet.

  `like` gives the structure, dtypes and shardings (a freshly initialised state). Damaged or
  incomplete newer steps are moved to `<workdir>/damaged_checkpoints/` with a warning; a checkpoint
  whose structure does not match (trained with another config) fails with a clear error.
  """
  return checkpoints.restore_latest(manager, like)
