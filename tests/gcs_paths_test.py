"""Every path a bucket URL, against a local GCS emulator (gcp-storage-emulator, started here on
127.0.0.1 at a free port): prepare_data.py reads two short clips from the bucket and writes the
dataset there; train.py trains on it with a resume, writing its checkpoints, config.json,
TensorBoard events, sample grids, metrics.jsonl and profile into the bucket; evaluate.py scores
that checkpoint on the dataset's test split into the bucket; export.py exports it into the
bucket. Each result equals the same chain on local paths, and no step writes to a local folder
named `gs:` instead."""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile

import flax
import jax
import numpy as np
import pytest

from facegen_jax.data import prepare, reading
from facegen_jax.evaluation import during_training, harness
from facegen_jax.inference import export_formats
from facegen_jax.inference.generator_model import GeneratorModel
from facegen_jax.io import checkpoints, paths
from facegen_jax.train import checkpointing, loop, sharding
from facegen_jax.train.state import create_train_state
from train_eval_test import tensorboard_scalars
from train_test import REPO, tiny_config

BUCKET = "facegen-test"
STEPS = {"num_train_steps": 4, "checkpoint_every_steps": 2, "log_every_steps": 2, "image_every_steps": 2,
         "eval_every_steps": 2, "eval_num_samples": 4, "profile_steps": "2-2"}
CLIPS = ("lp_d18_d19_man__liveportrait__d18.mp4", "vr4_woman_bluebg__video_retalking__4.mp4")  # ../shared/faces
TEST_PERSON = "vr4_woman_bluebg"
PREPARE = prepare.PrepareOptions(resolution=64, frame_step=3, max_frames=2, detect_every=3)  # 2 frames a clip


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


def _cli(script, cwd, env, *flags):
  """Runs an entry point with the emulator's environment and the tests' persistent XLA cache."""
  xla_cache = {"JAX_COMPILATION_CACHE_DIR": os.environ.get("FACEGEN_JAX_CACHE", "/tmp/facegen_jax_xla_cache"),
               "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5"}
  return subprocess.run([sys.executable, str(REPO / "experiments" / script), *flags],
                        capture_output=True, text=True, timeout=600, cwd=cwd, env=dict(os.environ, **xla_cache, **env))


def _train_cli(workdir, cwd, env, steps, data_dir):
  overrides = [f"--config.{k}={v}" for k, v in {**STEPS, **_tfds(data_dir), "num_train_steps": steps}.items()]
  return _cli("train.py", cwd, env, "--config=" + str(REPO / "experiments/configs/tiny.py"), f"--workdir={workdir}",
              *overrides)


def _tfds(data_dir):
  """The prepared dataset as the training input, decoded in the training process (no worker processes to start)."""
  return {"data.source": "tfds", "data.data_dir": str(data_dir), "data.num_workers": 0}


def _records(data_dir):
  """Every record of both splits of the dataset in `data_dir` (a URL is read from its local mirror)."""
  builder_dir = reading.find_builder_dir(str(data_dir), PREPARE.resolution)
  out = {}
  for split in ("train", "test"):
    source, table, _ = reading.open_split(builder_dir, split)
    out[split] = (table, [reading.decode_record(source[i]) for i in range(len(source))])
  return out


def _leaves(msgpack_bytes):
  return jax.tree.leaves(flax.serialization.msgpack_restore(msgpack_bytes))


def _folders_named_gs(tmp_path):
  """Folders named `gs:...` anywhere under `tmp_path` (the runs' working directory is in it) and in
  the repository, this process's working directory (where `os.path.abspath("gs://b/x")` lands) and
  the temporary folder (where the local copies of `facegen_jax.io.paths` are made)."""
  found = [os.path.join(d, n) for d, dirs, _ in os.walk(tmp_path) for n in dirs if n.startswith("gs:")]
  roots = (REPO, os.getcwd(), tempfile.gettempdir(), *pathlib.Path(tempfile.gettempdir()).glob("facegen_jax_*"))
  return found + [str(p) for root in roots for p in pathlib.Path(root).glob("gs:*")]


def _restore(workdir, config):
  manager = checkpoints.make_manager(workdir, 3)
  steps = manager.all_steps()
  state, data_state = checkpointing.restore_latest(manager, sharding.replicate(create_train_state(config),
                                                                               sharding.make_mesh()))
  manager.close()
  return steps, jax.device_get(state), data_state


def test_prepare_train_evaluate_export_on_gs_equal_local_paths(gcs, shared_faces, tmp_path):
  """The chain on bucket URLs only (each step its own command, as a user runs it) against the same
  chain on local paths in this process: equal records, training state, metrics and weights."""
  from etils import epath  # pylint: disable=import-outside-toplevel
  cwd, local = tmp_path / "cwd", tmp_path / "local"
  cwd.mkdir()
  (local / "input").mkdir(parents=True)
  remote = f"gs://{BUCKET}/chain"
  bucket = epath.Path(remote)
  for clip in CLIPS:
    shutil.copy(shared_faces / "videos" / clip, local / "input")
    paths.copy_file(shared_faces / "videos" / clip, f"{remote}/input/{clip}")

  # prepare_data: input and output in the bucket.
  result = _cli("prepare_data.py", cwd, gcs, f"--input={remote}/input", f"--output={remote}/data", "--workers=1",
                f"--test_identities={TEST_PERSON}",
                *(f"--{k}={getattr(PREPARE, k)}" for k in ("resolution", "frame_step", "max_frames", "detect_every")))
  assert result.returncode == 0, result.stderr[-3000:]
  summary = prepare.prepare_dataset(local / "input", local / "data", PREPARE, test_identities=[TEST_PERSON],
                                    workers=1, progress=False)
  summary_gs = json.loads((bucket / "data" / "summary.json").read_text())
  assert summary_gs["dataset_dir"] == f"{remote}/data/face_frames/r64/1.0.0"
  assert summary_gs["splits"] == summary["splits"] and summary["frames"] == 4
  records_gs, records_local = _records(f"{remote}/data"), _records(local / "data")
  for split in ("train", "test"):
    assert records_gs[split][0] == records_local[split][0]
    for a, b in zip(records_gs[split][1], records_local[split][1]):
      for key in ("image", "mask", "part_masks", "landmarks"):
        np.testing.assert_array_equal(a[key], b[key])

  # train.py on the bucket's dataset, into the bucket, with a resume.
  for steps in (2, 4):  # the second run resumes from the bucket's step-2 checkpoint
    result = _train_cli(f"{remote}/run", cwd, gcs, steps, f"{remote}/data")
    assert result.returncode == 0, result.stderr[-3000:]
  assert "resumed from" in result.stderr and "at step 2" in result.stderr
  assert "staged to the local folder" in result.stderr
  config = tiny_config(**STEPS, **_tfds(local / "data"))
  loop.train(config, str(local / "run"), make_evaluator=during_training.Evaluator)
  _check_runs_equal(bucket / "run", local / "run", config)

  # evaluate.py: the bucket's checkpoint on the bucket's test split, the report into the bucket.
  result = _cli("evaluate.py", cwd, gcs, f"--checkpoint={remote}/run", f"--videos={remote}/data",
                f"--output={remote}/eval", "--method=model", f"--resolution={PREPARE.resolution}")
  assert result.returncode == 0, result.stderr[-3000:]
  harness.evaluate(str(local / "data"), str(local / "eval"), methods=["model"], checkpoint=str(local / "run"),
                   resolution=PREPARE.resolution, progress=False)
  report_gs = json.loads((bucket / "eval" / "metrics.json").read_text())
  report_local = json.loads((local / "eval" / "metrics.json").read_text())
  assert sorted(p.name for p in (bucket / "eval").iterdir()) == sorted(harness.report.OUTPUT_FILES)
  assert report_gs["checkpoint"] == f"{remote}/run" and report_gs["videos"] == f"{remote}/data"
  assert report_gs["dataset"].startswith(f"{remote}/data (read from its local mirror ")
  assert report_gs["clips"] == report_local["clips"] and report_gs["summary"].keys() == report_local["summary"].keys()
  for method, row in report_local["summary"].items():
    for key, value in row.items():
      if isinstance(value, float):
        assert report_gs["summary"][method][key] == pytest.approx(value, rel=1e-4, abs=1e-6), (method, key)

  # export.py: the bucket's workdir to an export folder in the bucket.
  result = _cli("export.py", cwd, gcs, f"--workdir={remote}/run", f"--output={remote}/export")
  assert result.returncode == 0, result.stderr[-3000:]
  export_formats.export(GeneratorModel.load(str(local / "run")), str(local / "export"), ["msgpack"])
  assert sorted(p.name for p in (bucket / "export").iterdir()) == sorted(p.name for p in (local / "export").iterdir())
  assert (bucket / "export" / "export.json").read_text() == (local / "export" / "export.json").read_text()
  for a, b in zip(_leaves((bucket / "export" / "generator.msgpack").read_bytes()),
                  _leaves((local / "export" / "generator.msgpack").read_bytes())):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

  assert _folders_named_gs(tmp_path) == []


def _check_runs_equal(bucket, local, config):
  """The run in the bucket has the local run's files, config, checkpoints, metrics.jsonl rows,
  TensorBoard scalars and profile."""
  from etils import epath  # pylint: disable=import-outside-toplevel
  assert sorted(p.name for p in bucket.iterdir()) == sorted(p.name for p in local.iterdir())
  assert (bucket / "config.json").read_text() == (local / "config.json").read_text().replace(
      str(local.parent / "data"), str(bucket.parent / "data"))
  for name in ("step_00000002.png", "step_00000004.png"):
    assert (bucket / "samples" / name).exists() and (local / "samples" / name).exists()

  steps_gs, state_gs, data_gs = _restore(str(bucket), config)
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


def test_beam_on_a_bucket_output_fills_the_cache_there_and_the_driver_writes_the_dataset(gcs, shared_faces, tmp_path):
  """--beam with a gs:// output: the Beam workers (DirectRunner here) prepare the files into the
  bucket's cache and write no shards; the dataset is built from that cache and uploaded; a rerun
  without Beam finds every file cached and the dataset up to date."""
  pytest.importorskip("apache_beam", reason="--beam needs the 'beam' extra: pip install -e .[beam]")
  from etils import epath  # pylint: disable=import-outside-toplevel
  del gcs
  remote = f"gs://{BUCKET}/beam"
  photo = "lp_d18_d19_man__liveportrait__d19.jpg"
  paths.copy_file(shared_faces / "images" / photo, f"{remote}/input/{photo}")
  beam_options = ["--runner=DirectRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory"]
  first = prepare.prepare_dataset(f"{remote}/input", f"{remote}/data", PREPARE, beam=True, beam_options=beam_options,
                                  progress=False)
  assert first["files"]["processed_now"] == 1 and first["frames"] == 1 and first["skipped"] == []
  assert first["dataset_dir"] == f"{remote}/data/face_frames/r64/1.0.0"
  cache = epath.Path(str(prepare.cache_dir(f"{remote}/data", PREPARE)))
  assert sorted(p.suffix for p in cache.iterdir()) == [".json", ".npz"]  # no errors/ folder left
  source, table, _ = reading.open_split(reading.find_builder_dir(f"{remote}/data", PREPARE.resolution), "train")
  records = [reading.decode_record(source[i]) for i in range(len(source))]
  assert len(records) == 1 and table.video_ids == ("lp_d18_d19_man__liveportrait__d19",) and records[0]["source"] == photo
  again = prepare.prepare_dataset(f"{remote}/input", f"{remote}/data", PREPARE, workers=1, progress=False)
  assert again["files"]["from_cache"] == 1 and not again["dataset_rebuilt"]
  assert _folders_named_gs(tmp_path) == []
