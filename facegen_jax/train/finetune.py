"""Fine-tuning the generator alone: no discriminator, no adversarial or feature-matching terms.

`make_generator_step(config, loss_nets)` returns `step(state, batch, frozen) -> (state, metrics,
images)` over a `GeneratorState` (the generator's variables, its optimizer state, the step and
the rng). The losses are the GAN step's L1-L4 (`step.generator_terms`, weighted per sample by
`config.loss.first` / `config.loss.perturbed`); `config.loss.*.adversarial` and
`config.loss.feature_matching` are not read. Personalization (`inference/personalize.py`) runs it.

`fixed_subtrees` names top-level parameter subtrees that keep their values (no gradient, no optimizer
state); the others learn. With `train_batch_norm=False` the
batch-norm layers normalize by their running statistics and leave them as they are (a batch of
copies of one face would otherwise pull them towards that face's statistics).
"""

from typing import Any, Sequence

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from facegen_jax.io.images import to_float_image, to_float_mask
from facegen_jax.models import factory
from facegen_jax.train.state import make_optimizers
from facegen_jax.train.step import (LossNets, check_loss_nets, extra_loss_weights, generator_terms, loss_weights,
                                    motion_terms, reference_features, step_rngs, weighted_total)


@flax.struct.dataclass
class GeneratorState:
  """The generator's variables `{"params", "batch_stats"}`, its optimizer state, step and rng key."""

  step: jnp.ndarray
  g_vars: Any
  opt_state: Any
  rng: jnp.ndarray


def _split(params: dict, fixed_subtrees: Sequence[str]):
  """(learning, fixed): the top-level subtrees of `params` outside and inside `fixed_subtrees`."""
  unknown = sorted(set(fixed_subtrees) - set(params))
  if unknown:
    raise ValueError(f"fine-tuning: no parameter subtree {unknown} to freeze; the generator has {sorted(params)}")
  return ({k: v for k, v in params.items() if k not in fixed_subtrees},
          {k: v for k, v in params.items() if k in fixed_subtrees})


def create_generator_state(config: ml_collections.ConfigDict, variables: dict, seed: int = 0,
                           fixed_subtrees: Sequence[str] = ()) -> GeneratorState:
  """A GeneratorState starting from trained generator `variables` (a fresh optimizer state over
  the subtrees not in `fixed_subtrees`)."""
  g_tx, _ = make_optimizers(config)
  learning, _ = _split(variables["params"], fixed_subtrees)
  return GeneratorState(step=jnp.zeros((), jnp.int32), g_vars=dict(variables),
                        opt_state=g_tx.init(learning), rng=jax.random.PRNGKey(seed))


def make_generator_step(config: ml_collections.ConfigDict, loss_nets: LossNets = LossNets(),
                        fixed_subtrees: Sequence[str] = (), train_batch_norm: bool = True):
  """Builds the pure generator-only step (not yet jitted: see `sharding.jit_train_step`)."""
  check_loss_nets(config, loss_nets)
  fixed_subtrees = tuple(fixed_subtrees)
  generator = factory.build_generator(config)
  g_tx, _ = make_optimizers(config)
  weights = loss_weights(config)
  perceptual_layers = tuple(config.loss.perceptual_layer_weights) or None
  extra_weights = extra_loss_weights(config)  # feature matching never enters: no discriminator here

  def step(state: GeneratorState, batch: dict, frozen: dict):
    source, target = to_float_image(batch["source"]), to_float_image(batch["target"])
    drv_mask = to_float_mask(batch["driving_mask"])
    sample_w = weights[batch["sample_kind"]]  # [B, 5]
    g_rngs, _ = step_rngs(state.rng, state.step)
    refs = reference_features(loss_nets, frozen, source, target, batch)

    learning, fixed = _split(state.g_vars["params"], fixed_subtrees)

    def loss_fn(learning):
      params = {**fixed, **learning}
      if train_batch_norm:
        out, updates = generator.apply({**state.g_vars, "params": params}, source, drv_mask,
                                       batch["source_landmarks"], batch["driving_landmarks"], train=True,
                                       mutable=["batch_stats"], rngs=g_rngs)
      else:
        out = generator.apply({**state.g_vars, "params": params}, source, drv_mask, batch["source_landmarks"],
                              batch["driving_landmarks"], train=False, rngs=g_rngs)
        updates = {"batch_stats": state.g_vars["batch_stats"]}
      terms = generator_terms(loss_nets, frozen, refs, out["generated"], out["reconstructed"], source, target,
                              batch["driving_landmarks"], perceptual_layers)
      if "blend_mask" in out:
        terms.update(motion_terms(config, out["blend_mask"], out["decoded"], target))
      total, metrics = weighted_total(terms, sample_w, extra_weights)
      images = {"generated": out["generated"], "reconstructed": out["reconstructed"]}
      return total, (metrics, updates["batch_stats"], images)

    (loss, (metrics, batch_stats, images)), grads = jax.value_and_grad(loss_fn, has_aux=True)(learning)
    g_updates, opt_state = g_tx.update(grads, state.opt_state, learning)
    params = {**fixed, **optax.apply_updates(learning, g_updates)}
    metrics = {**metrics, "g/total": loss, "g/grad_norm": optax.tree.norm(grads),
               "g/param_norm": optax.tree.norm(params), "g/update_norm": optax.tree.norm(g_updates)}
    new_state = state.replace(step=state.step + 1, g_vars={**state.g_vars, "params": params,
                                                            "batch_stats": batch_stats}, opt_state=opt_state)
    return new_state, metrics, images

  return step
