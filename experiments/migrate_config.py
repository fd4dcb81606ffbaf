"""Adds to an older config.json the model keys it lacks, with the values that build the model it
was trained as: `python experiments/migrate_config.py --path=DIR`.

DIR is a training workdir or an export directory holding config.json. The model factory refuses a
config without these keys (`facegen_jax.models.factory.ADDED_MODEL_KEYS`) rather than guess; this
writes them once, explicitly: `level_order="spade"`, `conv_impl="auto"`, `motion="none"` (the
models built before those options existed) and the other `motion_*` keys at the defaults of
`facegen_jax/train/base_config.py` (read only by a generator with motion). The original is kept
as config.json.bak, the new file is written atomically, and what changed is printed. Running it
again changes nothing.
"""

import json
import os
import shutil
import tempfile

from absl import flags

from facegen_jax import entry
from facegen_jax.models import factory
from facegen_jax.train import base_config

flags.DEFINE_string("path", None, "Training workdir or export directory holding config.json.")
flags.mark_flags_as_required(["path"])
FLAGS = flags.FLAGS

# The values that reproduce the model a config from before each option was trained as.
OLD_BEHAVIOUR = {"level_order": "spade", "conv_impl": "auto", "motion": "none"}


def added_values() -> dict:
  """Each key of factory.ADDED_MODEL_KEYS -> the value an older config means."""
  defaults = base_config.base_config().model
  return {key: OLD_BEHAVIOUR.get(key, defaults[key]) for key in factory.ADDED_MODEL_KEYS}


def migrate(path: str) -> dict:
  """Adds the missing model keys to `path`/config.json; returns {key: value} of what it added
  (empty when nothing was missing: then the file is left untouched)."""
  config_path = os.path.join(path, "config.json")
  if not os.path.isfile(config_path):
    raise FileNotFoundError(f"{config_path} not found: --path must be a training workdir or an export directory")
  with open(config_path) as f:
    config = json.load(f)
  model = config.get("model")
  if not isinstance(model, dict):
    raise ValueError(f"{config_path} has no model section: is it a facegen-jax config?")
  added = {key: value for key, value in added_values().items() if key not in model}
  if not added:
    return added
  model.update(added)
  backup = config_path + ".bak"
  if not os.path.exists(backup):  # a backup from an earlier run is the older original: keep it
    shutil.copy2(config_path, backup)
  with tempfile.NamedTemporaryFile("w", dir=path, prefix=".config.json.", suffix=".tmp", delete=False) as tmp:
    json.dump(config, tmp, indent=2)
    tmp.write("\n")
  try:
    os.replace(tmp.name, config_path)  # atomic: a reader sees the old file or the new one
  finally:
    if os.path.exists(tmp.name):
      os.unlink(tmp.name)
  return added


def main(argv):
  del argv
  added = migrate(FLAGS.path)
  config_path = os.path.join(FLAGS.path, "config.json")
  if not added:
    print(f"{config_path}: nothing to migrate")
    return
  for key, value in added.items():
    print(f"{config_path}: added model.{key} = {value!r}")
  print(f"original kept as {config_path}.bak")


if __name__ == "__main__":
  entry.run(main)
