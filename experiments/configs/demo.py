"""Demo config: the shipped model's recipe (faces.py) on the bundled sample data (sample_data/).

Commands (`experiments/train_demo_model.sh --input=sample_data --test_identities=lp_d12_man,barack_obama
--config=experiments/configs/demo.py --data_dir=workdirs/sample_tfds --workdir=workdirs/demo_model
--out=workdirs/demo_model_export --spec_out=workdirs/demo_model_spec_export --readme= --grid=` runs
them, with the motion-free run of the same budget, then exports and evaluates both):
  python experiments/prepare_data.py --input=sample_data --output=workdirs/sample_tfds --resolution=128 \
      --test_identities=lp_d12_man,barack_obama
  python experiments/train.py --config=experiments/configs/demo.py --workdir=workdirs/demo_model
The same model, losses and sample kinds as faces.py (the warp-guided generator whose decoder
corrects the piecewise-affine landmark warp), 2000 steps instead of 4000: the training set is 16 files of 15 people
(lp_d12_man and barack_obama are held out), 12 of them clips. Expected cost on this project's
2-core CPU: about 1 s a step alone (identity and perceptual losses through the Flax dlib
face-recognition ResNet included), so about 35 minutes, or about 70 minutes beside the motion-free
run of the same budget. The EMA generator is scored on the held-out clip every 250 steps
(<workdir>/metrics.jsonl).
"""

import importlib.util
import os


def _faces_config():
  """experiments/configs/faces.py's get_config (config files are loaded by path, not as a package)."""
  spec = importlib.util.spec_from_file_location("faces_config", os.path.join(os.path.dirname(__file__), "faces.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def get_config():
  c = _faces_config()
  c.num_train_steps = 2000
  # A longer moving average than faces.py's: trained on 15 people, the decoder's correction
  # oscillates from step to step on faces it never saw; the average of 1000 steps smooths it, and
  # (the correction starting at zero) keeps a share of the plain warp it started from.
  c.optimizer.ema_decay = 0.999
  c.eval_every_steps = 250
  c.data.data_dir = "workdirs/sample_tfds"
  return c
