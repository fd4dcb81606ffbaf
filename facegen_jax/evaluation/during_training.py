"""The evaluation the training loop runs every `config.eval_every_steps` (`loop.train(...,
make_evaluator=Evaluator)`): the EMA generator on fixed self-reenactment pairs of held-out data.

The pairs are drawn once, at the start of the run, with the training input's own sample maker
restricted to kind (a) (two frames of one video: the second frame is the ground truth) and no
augmentation, from
- `config.data.source == "tfds"`: the prepared dataset's "test" split (experiments/prepare_data.py
  holds identities out into it);
- `"synthetic"`: synthetic faces of another seed.
`config.eval_num_samples` pairs (rounded up to whole global batches). Scores are the means over
the pairs of `metrics.l1`, `metrics.psnr` and `metrics.ssim` (uint8 images, as evaluate.py
scores), and `reference()` gives the landmark-warp baseline's scores on the same pairs. Each
process scores its own share of the pairs (process 0's numbers are the ones written).
"""

import copy

import jax
import ml_collections
import numpy as np

from facegen_jax.data.synthetic import SyntheticFaces
from facegen_jax.evaluation import baselines, metrics
from facegen_jax.io.images import to_float_image, to_float_mask, to_uint8_image
from facegen_jax.models import factory
from facegen_jax.train import sharding

SELF_REENACTMENT = (1.0, 0.0, 0.0)  # kind_ratios: kind (a) only
EVAL_SEED_OFFSET = 7919  # synthetic pairs: a seed the training stream never uses


def eval_data_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config.data` for the evaluation pairs: the test split, kind (a) only, no augmentation, read in
  this process."""
  data = copy.deepcopy(config.data)
  with data.unlocked():
    data.split = "test"
    data.kind_ratios = SELF_REENACTMENT
    data.augment.flip_probability = data.augment.brightness = data.augment.contrast = 0.0
    data.augment.saturation = 0.0
    data.num_workers = 0
  return data


def eval_batches(config: ml_collections.ConfigDict) -> list:
  """This process's evaluation batches (numpy, `data/batch.py` format), drawn once."""
  per_process = config.global_batch_size // jax.process_count()
  num_batches = -(-int(config.eval_num_samples) // config.global_batch_size)
  data = eval_data_config(config)
  if data.source == "synthetic":
    iterator = SyntheticFaces(config.resolution, per_process, mask_per_part=config.mask_per_part,
                              seed=config.seed + EVAL_SEED_OFFSET, kind_ratios=data.kind_ratios,
                              num_identities=data.synthetic_identities, process_index=jax.process_index(),
                              process_count=jax.process_count())
  elif data.source == "tfds":
    from facegen_jax.data.pipeline import create_train_iterator  # grain, TFDS: heavy imports, tfds source only
    iterator = create_train_iterator(data, global_batch_size=config.global_batch_size, resolution=config.resolution,
                                     mask_per_part=config.mask_per_part, seed=config.seed)
  else:
    raise ValueError(f"config.data.source must be 'synthetic' or 'tfds', got {data.source!r}")
  try:
    return [next(iterator) for _ in range(num_batches)]
  finally:
    if hasattr(iterator, "close"):
      iterator.close()


def scores(outputs: list, targets: list) -> dict:
  """Mean L1, PSNR and SSIM of uint8 `outputs` against `targets` (`[H, W, 3]` each)."""
  rows = [(metrics.l1(o, t), metrics.psnr(o, t), metrics.ssim(o, t)) for o, t in zip(outputs, targets)]
  l1, psnr, ssim = np.mean(rows, axis=0)
  return {"l1": float(l1), "psnr": float(psnr), "ssim": float(ssim)}


class Evaluator:
  """`Evaluator(config, mesh)(variables)` -> the EMA generator's scores; see the module docstring."""

  def __init__(self, config: ml_collections.ConfigDict, mesh):
    self._mesh, self._batches = mesh, eval_batches(config)
    generator = factory.build_generator(config)

    def generate(variables, batch):
      out = generator.apply(variables, to_float_image(batch["source"]), to_float_mask(batch["driving_mask"]),
                            batch["source_landmarks"], batch["driving_landmarks"], train=False)
      return to_uint8_image(out["generated"])

    self._generate = jax.jit(generate, in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)),
                             out_shardings=sharding.batch_sharded(mesh))
    self.num_samples = sum(len(b["source"]) for b in self._batches)

  def targets(self) -> list:
    """The ground-truth frames of the pairs, uint8 `[H, W, 3]` each, in order."""
    return [t for b in self._batches for t in b["target"]]

  def reference(self) -> dict:
    """`{"landmark_warp": scores}` of the landmark-warp baseline on the same pairs."""
    warped = [baselines.landmark_warp(s, sl, None, dl) for b in self._batches
              for s, sl, dl in zip(b["source"], b["source_landmarks"], b["driving_landmarks"])]
    return {"landmark_warp": scores(warped, self.targets())}

  def __call__(self, variables: dict) -> dict:
    """Scores of the generator `variables` (`{"params", "batch_stats"}`, replicated on the mesh)."""
    outputs = [sharding.process_local(self._generate(variables, sharding.shard_batch(b, self._mesh)))
               for b in self._batches]
    return scores([o for out in outputs for o in out], self.targets())
