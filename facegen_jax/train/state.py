"""Train state: both networks, both optimizers, the EMA generator, the step and the rng."""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from facegen_jax.models import factory


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training (all of it is checkpointed).

  `g_vars` / `d_vars` are flax variable dicts ({"params", "batch_stats"}); `ema_params` is the
  exponential moving average of the generator's params (what inference uses, together with the
  generator's running batch statistics); `rng` is a raw uint32 key, folded with the step in
  every step so a resumed run draws the same numbers.
  """

  step: jnp.ndarray
  g_vars: Any
  d_vars: Any
  g_opt_state: Any
  d_opt_state: Any
  ema_params: Any
  rng: jnp.ndarray


def learning_rate_schedule(base_lr: float, opt: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  """Constant, or linear warm-up then cosine decay, per `opt.schedule`."""
  if opt.schedule == "constant":
    return optax.constant_schedule(base_lr)
  if opt.schedule == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0, base_lr, max(1, opt.warmup_steps), max(opt.warmup_steps + 1, num_steps), end_value=base_lr * 0.01)
  raise ValueError(f"config.optimizer.schedule must be 'constant' or 'warmup_cosine', got {opt.schedule!r}")


def make_optimizers(config: ml_collections.ConfigDict):
  """Two Adam optimizers (TTUR: the discriminator's learning rate is its own)."""
  opt = config.optimizer

  def adam(lr):
    chain = [optax.clip_by_global_norm(opt.grad_clip_norm)] if opt.grad_clip_norm > 0 else []
    chain.append(optax.adam(learning_rate_schedule(lr, opt, config.num_train_steps), b1=opt.b1, b2=opt.b2))
    return optax.chain(*chain)

  return adam(opt.g_learning_rate), adam(opt.d_learning_rate)


def init_variables(config: ml_collections.ConfigDict, rng: jnp.ndarray):
  """Initial generator and discriminator variables (on a batch of 1)."""
  generator, discriminator = factory.build_generator(config), factory.build_discriminator(config)
  r, m = config.resolution, factory.mask_channels(config)
  g_rng, d_rng = jax.random.split(rng)
  lm = jnp.zeros((1, 68, 2))
  g_vars = generator.init(g_rng, jnp.zeros((1, r, r, 3)), jnp.zeros((1, r, r, m)), lm, lm, train=False)
  d_in = 3 + (m if config.discriminator.conditional else 0)
  d_vars = discriminator.init(d_rng, jnp.zeros((1, r, r, d_in)), train=False)
  return dict(g_vars), dict(d_vars)


def create_train_state(config: ml_collections.ConfigDict) -> TrainState:
  """A fresh TrainState from `config.seed`."""
  rng = jax.random.PRNGKey(config.seed)
  init_rng, state_rng = jax.random.split(rng)
  g_vars, d_vars = init_variables(config, init_rng)
  g_tx, d_tx = make_optimizers(config)
  return TrainState(
      step=jnp.zeros((), jnp.int32), g_vars=g_vars, d_vars=d_vars,
      g_opt_state=g_tx.init(g_vars["params"]), d_opt_state=d_tx.init(d_vars["params"]),
      ema_params=jax.tree.map(jnp.copy, g_vars["params"]), rng=state_rng)
