"""The pure, jit-compiled GAN train step: a discriminator update, then a generator update.

`make_train_step(config, loss_nets)` returns `train_step(state, batch, frozen_params) ->
(state, metrics, images)` (images: the generated and reconstructed faces, batch-sharded). The
generator runs forward once: its VJP is kept while the discriminator is updated on the detached
output, then the generator's losses (see docs/method.md, Losses: L1 identity, L2 perceptual, L3
pixel, L4 reconstruction, L5 adversarial, plus optional feature matching) are differentiated with
respect to the generated and reconstructed images and pulled back through that VJP.

Per-sample loss weights come from `batch["sample_kind"]` (a `batch.LossGroup`): `config.loss.first`
(a1..a5) or, for perturbed-landmark samples, `config.loss.perturbed` (a6..a10). The terms L1-L4
are `generator_terms`, shared with the generator-only step of fine-tuning (`finetune.py`).
"""

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax

from facegen_jax.io.images import to_float_image, to_float_mask
from facegen_jax.losses import adversarial, identity, perceptual, pixel
from facegen_jax.models import factory
from facegen_jax.nets.base import FrozenNet
from facegen_jax.train.state import TrainState, make_optimizers

LOSS_TERMS = ("identity", "perceptual", "pixel", "reconstruction", "adversarial")


@dataclasses.dataclass(frozen=True)
class LossNets:
  """The pretrained networks of the identity (L1) and perceptual (L2) losses; None when unused."""

  identity: Optional[FrozenNet] = None
  perceptual: Optional[FrozenNet] = None

  def frozen_params(self) -> dict:
    """The argument `train_step` takes for them."""
    return {"identity": None if self.identity is None else self.identity.params,
            "perceptual": None if self.perceptual is None else self.perceptual.params}


def loss_weights(config: ml_collections.ConfigDict) -> jnp.ndarray:
  """`[2, 5]` weights: row 0 = a1..a5 (first kind), row 1 = a6..a10 (perturbed)."""
  return jnp.array([[float(config.loss[group][t]) for t in LOSS_TERMS] for group in ("first", "perturbed")])


def check_loss_nets(config: ml_collections.ConfigDict, loss_nets: LossNets) -> None:
  """Fails clearly when a loss is weighted but its network is missing (never a silent zero)."""
  weights = loss_weights(config)
  for term, net in (("identity", loss_nets.identity), ("perceptual", loss_nets.perceptual)):
    col = LOSS_TERMS.index(term)
    if float(jnp.abs(weights[:, col]).max()) > 0 and net is None:
      raise ValueError(
          f"config.loss.first.{term} / config.loss.perturbed.{term} are non-zero but no {term} network is "
          f"loaded (config.loss.{term}_net={config.loss.get(term + '_net')!r}). Set both weights to 0, or "
          "give a network name that facegen_jax.nets.load_frozen_net knows.")


def step_rngs(rng: jnp.ndarray, step: jnp.ndarray) -> tuple[dict, dict]:
  """The random keys of one step: `fold_in(rng, step)`, split into the generator's and the
  discriminator's `{"dropout": key}` rng collections, passed to both networks' `apply`.

  A pure function of the checkpointed key and the step, so a resumed run (or any replica of a
  sharded one) draws the same numbers at the same step. No layer of either network reads the
  "dropout" collection today, so the keys change no output.
  """
  g_key, d_key = jax.random.split(jax.random.fold_in(rng, step))
  return {"dropout": g_key}, {"dropout": d_key}


def reference_features(loss_nets: LossNets, frozen: dict, source: jnp.ndarray, target: jnp.ndarray,
                       batch: dict) -> tuple:
  """(identity net output on the sources, perceptual net output on the targets), each None when
  that network is not loaded: the fixed side of L1 and L2, outside the gradient."""
  ref_id = ref_pc = None
  if loss_nets.identity is not None:
    ref_id = jax.lax.stop_gradient(loss_nets.identity.apply(frozen["identity"], source, batch["source_landmarks"]))
  if loss_nets.perceptual is not None:
    ref_pc = jax.lax.stop_gradient(loss_nets.perceptual.apply(frozen["perceptual"], target, batch["target_landmarks"]))
  return ref_id, ref_pc


def generator_terms(loss_nets: LossNets, frozen: dict, refs: tuple, gen: jnp.ndarray, rec: jnp.ndarray,
                    source: jnp.ndarray, target: jnp.ndarray, driving_landmarks: jnp.ndarray,
                    perceptual_layers=None) -> dict:
  """The generator's non-adversarial losses per sample `[B]`: L3 pixel (generated vs target), L4
  reconstruction (reconstructed vs source) and, when their networks are loaded, L1 identity and L2
  perceptual (see docs/method.md, Losses). `refs` is `reference_features(...)`."""
  ref_id, ref_pc = refs
  terms = {
      "pixel": pixel.l1_per_sample(gen, target),
      "reconstruction": pixel.l1_per_sample(rec, source),
  }
  if loss_nets.identity is not None or loss_nets.perceptual is not None:
    shared = loss_nets.identity is loss_nets.perceptual
    gen_id = loss_nets.identity.apply(frozen["identity"], gen, driving_landmarks) if loss_nets.identity else None
    gen_pc = gen_id if shared else (
        loss_nets.perceptual.apply(frozen["perceptual"], gen, driving_landmarks) if loss_nets.perceptual else None)
    if gen_id is not None:
      terms["identity"] = identity.identity_loss(ref_id["embedding"], gen_id["embedding"])
    if gen_pc is not None:
      terms["perceptual"] = perceptual.perceptual_loss(ref_pc["features"], gen_pc["features"], perceptual_layers)
  return terms


def blend_prior(blend: jnp.ndarray) -> jnp.ndarray:
  """Per sample `[B]`: the mean of 1 - m over the blend mask `[B, H, W, 1]` (the share of the
  output the decoder makes rather than the warped source)."""
  return jnp.mean(1.0 - blend.astype(jnp.float32), axis=(1, 2, 3))


def weighted_total(terms: dict, sample_w: jnp.ndarray, extra_weights: Optional[dict] = None) -> tuple:
  """(the batch mean of the per-sample weighted sum of `terms`, `{"g/<term>": batch mean}`).
  `sample_w` `[B, 5]` are the rows of `loss_weights` for each sample's loss group; terms outside
  LOSS_TERMS ("feature_matching", "blend_prior", "decoder_pixel") take `extra_weights[name]`."""
  extra_weights = extra_weights or {}
  per_sample = sum(sample_w[:, LOSS_TERMS.index(k)] * terms[k] for k in LOSS_TERMS if k in terms)
  for name, weight in extra_weights.items():
    if name in terms:
      per_sample = per_sample + weight * terms[name]
  return per_sample.mean(), {f"g/{k}": v.mean() for k, v in terms.items()}


def motion_terms(config: ml_collections.ConfigDict, blend: jnp.ndarray, decoded: jnp.ndarray,
                 target: jnp.ndarray) -> dict:
  """The losses of the output blend, per sample, for those with a weight: "blend_prior" and
  "decoder_pixel" (the decoder's own image against the target)."""
  terms = {}
  if float(config.loss.blend_prior) > 0:
    terms["blend_prior"] = blend_prior(blend)
  if float(config.loss.decoder_pixel) > 0:
    terms["decoder_pixel"] = pixel.l1_per_sample(decoded, target)
  return terms


def extra_loss_weights(config: ml_collections.ConfigDict) -> dict:
  """Weights of the terms outside LOSS_TERMS."""
  return {"feature_matching": float(config.loss.feature_matching), "blend_prior": float(config.loss.blend_prior),
          "decoder_pixel": float(config.loss.decoder_pixel)}


def make_train_step(config: ml_collections.ConfigDict, loss_nets: LossNets = LossNets()):
  """Builds the pure train step for `config` (not yet jitted: see `sharding.jit_train_step`)."""
  check_loss_nets(config, loss_nets)
  generator, discriminator = factory.build_generator(config), factory.build_discriminator(config)
  g_tx, d_tx = make_optimizers(config)
  weights = loss_weights(config)
  adv_kind, fm_weight = config.loss.adversarial_kind, float(config.loss.feature_matching)
  extra_weights = extra_loss_weights(config)
  conditional, ema_decay = config.discriminator.conditional, float(config.optimizer.ema_decay)
  perceptual_layers = tuple(config.loss.perceptual_layer_weights) or None
  d_mutable = ["batch_stats"] if config.discriminator.spectral_norm else []

  def d_input(image, mask):
    return jnp.concatenate([image, mask], axis=-1) if conditional else image

  def run_d(d_vars, x, train, rngs):
    if d_mutable:
      (logits, feats), updates = discriminator.apply(d_vars, x, train=train, mutable=d_mutable, rngs=rngs)
      return logits, feats, {**d_vars, **updates}
    logits, feats = discriminator.apply(d_vars, x, train=train, rngs=rngs)
    return logits, feats, d_vars

  def train_step(state: TrainState, batch: dict, frozen: dict):
    source, target = to_float_image(batch["source"]), to_float_image(batch["target"])
    drv_mask, tgt_mask = to_float_mask(batch["driving_mask"]), to_float_mask(batch["target_mask"])
    sample_w = weights[batch["sample_kind"]]  # [B, 5]
    metrics = {}
    g_rngs, d_rngs = step_rngs(state.rng, state.step)

    # Generator forward, keeping its VJP.
    def g_forward(g_params):
      out, updates = generator.apply({**state.g_vars, "params": g_params}, source, drv_mask,
                                     batch["source_landmarks"], batch["driving_landmarks"], train=True,
                                     mutable=["batch_stats"], rngs=g_rngs)
      extra = {k: jax.lax.stop_gradient(out[k]) for k in ("warped", "blend_mask") if k in out}
      # The blend mask and the decoder's own image are outputs the losses read (motion_terms);
      # without a blend, ones and the generated image stand in (their weights are then unused).
      blend = out.get("blend_mask", jnp.ones(out["generated"].shape[:1] + (1, 1, 1)))
      decoded = out.get("decoded", out["generated"])
      return (out["generated"], out["reconstructed"], blend, decoded), (updates["batch_stats"], extra)

    (generated, reconstructed, blend, decoded), g_vjp, (g_batch_stats, g_extra) = jax.vjp(
        g_forward, state.g_vars["params"], has_aux=True)

    # Discriminator update on real (target, its mask) vs fake (generated, driving mask).
    real_in, fake_in = d_input(target, tgt_mask), d_input(jax.lax.stop_gradient(generated), drv_mask)

    def d_loss_fn(d_params):
      logits, _, new_d_vars = run_d({**state.d_vars, "params": d_params},
                                    jnp.concatenate([real_in, fake_in], axis=0), train=True, rngs=d_rngs)
      n = real_in.shape[0]
      real_l, fake_l = [l[:n] for l in logits], [l[n:] for l in logits]
      loss = adversarial.discriminator_loss(real_l, fake_l, adv_kind).mean()
      aux = {"d/real_logit": jnp.mean(jnp.stack([l.mean() for l in real_l])),
             "d/fake_logit": jnp.mean(jnp.stack([l.mean() for l in fake_l]))}
      return loss, (aux, new_d_vars)

    (d_loss, (d_aux, new_d_vars)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(state.d_vars["params"])
    d_updates, d_opt_state = d_tx.update(d_grads, state.d_opt_state, state.d_vars["params"])
    d_params = optax.apply_updates(state.d_vars["params"], d_updates)
    d_vars = {**new_d_vars, "params": d_params}
    metrics.update(d_aux)
    metrics.update({"d/loss": d_loss, "d/grad_norm": optax.tree.norm(d_grads),
                    "d/param_norm": optax.tree.norm(d_params)})

    # Generator losses, as a function of its two outputs.
    refs = reference_features(loss_nets, frozen, source, target, batch)

    def g_loss_fn(gen, rec, blend, decoded):
      terms = generator_terms(loss_nets, frozen, refs, gen, rec, source, target, batch["driving_landmarks"],
                              perceptual_layers)
      terms.update(motion_terms(config, blend, decoded, target))
      if fm_weight > 0:
        logits, feats, _ = run_d(d_vars, jnp.concatenate([real_in, d_input(gen, drv_mask)], axis=0), train=False,
                                 rngs=d_rngs)
        n = real_in.shape[0]
        fake_logits = [l[n:] for l in logits]
        terms["feature_matching"] = adversarial.feature_matching_loss(
            [[f[:n] for f in fs] for fs in feats], [[f[n:] for f in fs] for fs in feats])
      else:
        fake_logits, _, _ = run_d(d_vars, d_input(gen, drv_mask), train=False, rngs=d_rngs)
      terms["adversarial"] = adversarial.generator_loss(fake_logits, adv_kind)
      return weighted_total(terms, sample_w, extra_weights)

    (g_loss, g_terms), cotangents = jax.value_and_grad(g_loss_fn, argnums=(0, 1, 2, 3), has_aux=True)(
        generated, reconstructed, blend, decoded)
    (g_grads,) = g_vjp(cotangents)
    g_updates, g_opt_state = g_tx.update(g_grads, state.g_opt_state, state.g_vars["params"])
    g_params = optax.apply_updates(state.g_vars["params"], g_updates)
    ema_params = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, state.ema_params, g_params)
    metrics.update(g_terms)
    metrics.update({"g/total": g_loss, "g/grad_norm": optax.tree.norm(g_grads),
                    "g/param_norm": optax.tree.norm(g_params), "g/update_norm": optax.tree.norm(g_updates)})
    new_state = state.replace(
        step=state.step + 1, g_vars={**state.g_vars, "params": g_params, "batch_stats": g_batch_stats},
        d_vars=d_vars, g_opt_state=g_opt_state, d_opt_state=d_opt_state, ema_params=ema_params)
    images = {"generated": generated, "reconstructed": reconstructed, **g_extra}
    return new_state, metrics, images

  return train_step
