"""Data parallelism over every device: a 1-D `Mesh`, batch sharded, state replicated.

`jax.jit` with `NamedSharding`s is the SPMD successor of `pmap`: the same program runs on every
device over its slice of the global batch; XLA inserts the gradient all-reduce and the
cross-device batch-norm reductions. On several hosts each process feeds its local slice
(`make_array_from_process_local_data`) after `jax.distributed.initialize()`.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
  """A mesh over `devices` (default: all devices of all processes), one axis `data`."""
  return Mesh(np.asarray(jax.devices() if devices is None else devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
  n = mesh.devices.size
  if global_batch_size % n:
    raise ValueError(f"config.global_batch_size={global_batch_size} must be a multiple of the device count {n}")
  if global_batch_size % jax.process_count():
    raise ValueError(f"config.global_batch_size={global_batch_size} must divide over {jax.process_count()} processes")


def shard_batch(batch: dict, mesh: Mesh) -> dict:
  """This process's numpy batch -> global jax arrays sharded along the batch axis."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


def process_local(tree):
  """Batch-sharded global arrays -> this process's rows as numpy, in the order of the batch this
  process fed to `shard_batch` (its addressable shards, sorted by their offset in the global
  batch). Unlike `jax.device_get`, this works when the array spans other hosts' devices."""

  def local(x):
    shards = {}
    for shard in x.addressable_shards:
      start = shard.index[0].start or 0
      shards.setdefault(start, shard)  # a row block held by several local devices is taken once
    return np.concatenate([np.asarray(shards[k].data) for k in sorted(shards)], axis=0)

  return jax.tree.map(local, tree)


def replicate(tree, mesh: Mesh):
  """Places a pytree (train state, frozen params) on every device."""
  return jax.device_put(tree, replicated(mesh))


def jit_train_step(train_step, mesh: Mesh):
  """`train_step(state, batch, frozen)` jitted with state replicated and the batch sharded.

  The input state's buffers are donated (updated in place).
  """
  rep, dat = replicated(mesh), batch_sharded(mesh)
  return jax.jit(train_step, in_shardings=(rep, dat, rep), out_shardings=(rep, rep, dat), donate_argnums=0)
