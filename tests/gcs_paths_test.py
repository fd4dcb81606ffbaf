"""A training workdir on `gs://`, against a local GCS emulator (gcp-storage-emulator, started here on
127.0.0.1 at a free port): train.py with a resume writes its checkpoints, config.json, TensorBoard
events, sample grids, metrics.jsonl and profile into the bucket, they equal the same run on a local
workdir, and no step writes to a local folder named `gs:` instead."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from facegen_jax.evaluation import during_training
from facegen_jax.io import checkpoints
from facegen_jax.train import checkpointing, loop, sharding
from facegen_jax.train.state import create_train_state
from train_eval_test import tensorboard_scalars
from train_test import REPO, tiny_config

BUCKET = "facegen-test"
STEPS = {"num_train_steps": 4, "checkpoint_every_steps": 2, "log_every_steps": 2, "image_every_steps": 2,
         "eval_every_steps": 2, "eval_num_samples": 4, "profile_steps": "2-2"}


def _emulator_sends_generations():
  """gcp-storage-emulator answers a media download without the `x-goog-generation` header that
  real GCS sends and tensorstore's GCS driver (orbax's checkpoints) reads for its conditional
  writes ("Malformed StorageGeneration" on the second save without it): add it."""
  from gcp_storage_emulator import server  # pylint: disable=import-outside-toplevel
  from gcp_storage_emulator.exceptions import NotFound  # pylint: disable=import-outside-toplevel
  from gcp_storage_emulator.handlers import objects  # pylint: disable=import-outside-toplevel
  original = objects.download
  if getattr(original, "sends_generation", False):
    return

  def download(request, response, storage, *args, **kwargs):
    original(request, response, storage, *args, **kwargs)
    try:
      obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    except NotFound:
      return
    response["x-goog-generation"] = str(obj.get("generation", "0"))
    response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))

  download.sends_generation = True
  objects.download = download  # objects.get serves ?alt=media through it
  for _, handlers in server.HANDLERS:
    for method, handler in list(handlers.items()):
      if handler is original:
        handlers[method] = download


@pytest.fixture(scope="module")
def gcs():
  """The emulator's environment (gcsfs reads STORAGE_EMULATOR_HOST, tensorstore's GCS driver
  TENSORSTORE_GCS_HTTP_URL), set in this process too."""
  from gcp_storage_emulator.server import create_server  # pylint: disable=import-outside-toplevel
  import gcsfs  # pylint: disable=import-outside-toplevel
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  _emulator_sends_generations()
  server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
  server.start()
  env = {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}", "TENSORSTORE_GCS_HTTP_URL": f"http://127.0.0.1:{port}"}
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  gcsfs.GCSFileSystem.clear_instance_cache()
  try:
    yield env
  finally:
    server.stop()
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
    gcsfs.GCSFileSystem.clear_instance_cache()


def _train_cli(workdir, cwd, env, steps):
  overrides = [f"--config.{k}={v}" for k, v in {**STEPS, "num_train_steps": steps}.items()]
  return subprocess.run([sys.executable, str(REPO / "experiments" / "train.py"),
                         "--config=" + str(REPO / "experiments/configs/tiny.py"), f"--workdir={workdir}", *overrides],
                        capture_output=True, text=True, timeout=600, cwd=cwd, env=dict(os.environ, **env))


def _folders_named_gs(tmp_path):
  """Folders named `gs:...` anywhere under `tmp_path` (the runs' working directory is in it) and in
  the repository and this process's working directory (where `os.path.abspath("gs://b/x")` lands)."""
  found = [os.path.join(d, n) for d, dirs, _ in os.walk(tmp_path) for n in dirs if n.startswith("gs:")]
  return found + [str(p) for root in (REPO, os.getcwd()) for p in pathlib.Path(root).glob("gs:*")]


def _restore(workdir, config):
  manager = checkpoints.make_manager(workdir, 3)
  steps = manager.all_steps()
  state, data_state = checkpointing.restore_latest(manager, sharding.replicate(create_train_state(config),
                                                                               sharding.make_mesh()))
  manager.close()
  return steps, jax.device_get(state), data_state


def test_training_on_gs_equals_training_on_local_paths(gcs, tmp_path):
  from etils import epath  # pylint: disable=import-outside-toplevel
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  remote = f"gs://{BUCKET}/runs/tiny"
  for steps in (2, 4):  # the second run resumes from the bucket's step-2 checkpoint
    result = _train_cli(remote, cwd, gcs, steps)
    assert result.returncode == 0, result.stderr[-3000:]
  assert "resumed from" in result.stderr and "at step 2" in result.stderr
  local = tmp_path / "local"
  loop.train(tiny_config(**STEPS), str(local), make_evaluator=during_training.Evaluator)

  assert _folders_named_gs(tmp_path) == []
  bucket = epath.Path(remote)
  assert sorted(p.name for p in bucket.iterdir()) == sorted(p.name for p in local.iterdir())
  assert (bucket / "config.json").read_text() == (local / "config.json").read_text()
  for name in ("step_00000002.png", "step_00000004.png"):
    assert (bucket / "samples" / name).exists() and (local / "samples" / name).exists()

  config = tiny_config(**STEPS)
  steps_gs, state_gs, data_gs = _restore(remote, config)
  steps_local, state_local, data_local = _restore(str(local), config)
  assert steps_gs == steps_local == [2, 4] and data_gs == data_local
  for a, b in zip(jax.tree.leaves(state_gs), jax.tree.leaves(state_local)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

  rows_gs = [json.loads(line) for line in (bucket / "metrics.jsonl").read_text().splitlines()]
  rows_local = [json.loads(line) for line in (local / "metrics.jsonl").read_text().splitlines()]
  assert [(r["kind"], r.get("step")) for r in rows_gs] == [(r["kind"], r.get("step")) for r in rows_local] == [
      ("reference", None), ("eval", 2), ("eval", 4)]
  for a, b in zip(rows_gs, rows_local):
    for key in ("l1", "psnr", "ssim"):
      assert a[key] == pytest.approx(b[key], rel=1e-4), (key, a, b)

  scalars_gs, scalars_local = tensorboard_scalars(bucket / "tensorboard"), tensorboard_scalars(local / "tensorboard")
  assert sorted(scalars_gs["eval/l1"]) == sorted(scalars_local["eval/l1"]) == [2, 4]
  assert sorted(scalars_gs["g/total"]) == sorted(scalars_local["g/total"])
  for run in (bucket, epath.Path(local)):  # epath has no recursive glob
    assert [n for _, _, names in (run / "profile").walk() for n in names if n.endswith(".xplane.pb")], run
