"""The defaults of `config.data`: which input, which dataset, sample kinds, augmentation, loading.

Light on purpose (no grain or TFDS import), so configs can be built without the data pipeline.
"""

import ml_collections

DATASET_NAME = "face_frames"  # the TFDS name of `tfds_builder.FaceFrames`


def default_data_config() -> ml_collections.ConfigDict:
  """Every `config.data` field with its default."""
  c = ml_collections.ConfigDict()
  # Which source the train loop reads: "tfds" (data/pipeline.py) or "synthetic" (data/synthetic.py).
  c.source = "synthetic"
  c.synthetic_identities = 64  # synthetic only: size of the identity pool

  # The dataset: `<data_dir>/<dataset_name>/<dataset_config>/<version>` (prepare_data.py --output).
  c.data_dir = ""
  c.dataset_name = DATASET_NAME
  c.dataset_config = ""  # "" = r{resolution} if built, else the only config; other sizes are resized
  c.split = "train"

  # Sample kinds: (a) two frames of one video, (b) two people, (c) own landmarks perturbed.
  c.kind_ratios = (0.5, 0.25, 0.25)
  c.perturb = ml_collections.ConfigDict()  # kind (c); fractions of the face size
  c.perturb.feature_shift = 0.05  # max translation of each feature group (brows, eyes, nose, mouth)
  c.perturb.contour_shift = 0.03  # max translation of the jaw contour
  c.perturb.feature_scale = 0.1  # max relative size change of each feature group

  c.augment = ml_collections.ConfigDict()  # the same draw for every image of a sample
  c.augment.flip_probability = 0.5  # horizontal flip, landmarks re-indexed with FLIP_PERMUTATION
  c.augment.brightness = 0.1  # max offset, fraction of 255
  c.augment.contrast = 0.1  # max relative change
  c.augment.saturation = 0.1  # max relative change

  c.num_workers = 2  # grain worker processes (0 = decode in this process)
  c.worker_buffer_size = 2  # batches buffered per worker
  c.read_threads = 2  # threads per worker
  return c
