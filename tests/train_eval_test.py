"""Evaluation during training: rows in metrics.jsonl and TensorBoard for a tiny run, the best step,
the landmark-warp reference once, and a resume that appends to the rows instead of restarting them."""

import json
import struct
import subprocess
import sys

import numpy as np
import pytest

from facegen_jax.evaluation import during_training
from facegen_jax.train import loop
from train_test import REPO, tiny_config


def tensorboard_scalars(folder) -> dict:
  """{tag: {step: value}} of every tfevents file under `folder` (TFRecord framing, tensorboardX's
  Event proto)."""
  from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel
  found = {}
  for path in sorted(folder.glob("events.out.tfevents*")):
    data, offset = path.read_bytes(), 0
    while offset < len(data):
      (length,) = struct.unpack("<Q", data[offset:offset + 8])
      event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
      offset += 12 + length + 4
      for value in event.summary.value:
        found.setdefault(value.tag, {})[event.step] = value.simple_value
  return found


def read_rows(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def check_scores(row):
  assert 0 < row["l1"] < 1 and 0 < row["ssim"] <= 1 and np.isfinite(row["psnr"]) and row["psnr"] > 0, row


def test_eval_rows_best_step_and_resume_appends(tmp_path):
  workdir = tmp_path / "wd"
  first = subprocess.run(
      [sys.executable, str(REPO / "experiments" / "train.py"), "--config=" + str(REPO / "experiments/configs/tiny.py"),
       f"--workdir={workdir}", "--config.num_train_steps=3", "--config.eval_every_steps=2",
       "--config.eval_num_samples=4", "--config.image_every_steps=0"],
      capture_output=True, text=True, timeout=600, cwd=REPO)
  assert first.returncode == 0, first.stderr[-3000:]
  assert "evaluation reference, landmark_warp: l1=" in first.stderr
  assert "evaluation at step 2: l1=" in first.stderr and "evaluation at step 3: l1=" in first.stderr
  rows = read_rows(workdir)
  assert [(r["kind"], r.get("step")) for r in rows] == [("reference", None), ("eval", 2), ("eval", 3)]
  assert rows[0]["method"] == "landmark_warp"
  for row in rows:
    check_scores(row)
  # A row of a step past the checkpoint (a run that stopped before saving it) is dropped on resume.
  with open(workdir / "metrics.jsonl", "a") as f:
    f.write(json.dumps({"kind": "eval", "step": 99, "l1": 0.0, "psnr": 1.0, "ssim": 1.0}) + "\n")

  resumed = tiny_config(num_train_steps=4, eval_every_steps=2, eval_num_samples=4)
  loop.train(resumed, str(workdir), make_evaluator=during_training.Evaluator)
  rows = read_rows(workdir)
  assert [(r["kind"], r.get("step")) for r in rows] == [("reference", None), ("eval", 2), ("eval", 3), ("eval", 4)]
  evals = rows[1:]
  for i, row in enumerate(evals):  # the best step so far, by the lowest L1
    best = min(evals[:i + 1], key=lambda r: r["l1"])
    assert (row["best_step"], row["best_l1"]) == (best["step"], best["l1"])

  scalars = tensorboard_scalars(workdir / "tensorboard")
  assert sorted(scalars["eval/l1"]) == [2, 3, 4]
  for row in evals:
    assert scalars["eval/l1"][row["step"]] == pytest.approx(row["l1"], rel=1e-6)
    assert scalars["eval/best_step"][row["step"]] == row["best_step"]
  assert scalars["eval_reference/landmark_warp/ssim"] == {0: pytest.approx(rows[0]["ssim"], rel=1e-6)}


def test_eval_pairs_are_self_reenactment_of_held_out_draws():
  config = tiny_config(eval_num_samples=6)  # rounded up to 2 global batches of 4
  batches = during_training.eval_batches(config)
  assert [len(b["source"]) for b in batches] == [4, 4]
  assert all((b["sample_kind"] == 0).all() for b in batches)
  np.testing.assert_array_equal(batches[0]["driving_landmarks"], batches[0]["target_landmarks"])
  train_batch = next(loop.create_data_iterator(config))
  assert not np.array_equal(batches[0]["source"], train_batch["source"])


def test_eval_every_steps_without_an_evaluator_fails_clearly(tmp_path):
  with pytest.raises(ValueError, match="eval_every_steps=2 but no evaluator was given"):
    loop.train(tiny_config(eval_every_steps=2), str(tmp_path / "wd"))
  assert not (tmp_path / "wd").exists()


def test_profile_steps_write_a_trace_into_the_workdir(tmp_path):
  loop.train(tiny_config(num_train_steps=3, profile_steps="2-3"), str(tmp_path))
  traces = list((tmp_path / "profile").rglob("*.xplane.pb"))
  assert len(traces) == 1 and traces[0].stat().st_size > 1000, traces
  assert traces[0].relative_to(tmp_path / "profile").parts[:2] == ("plugins", "profile")  # TensorBoard's layout


@pytest.mark.parametrize("spec", ["100", "5-3", "0-2", "a-b"])
def test_bad_profile_steps_fail_before_anything_is_written(tmp_path, spec):
  with pytest.raises(ValueError, match=r"config.profile_steps=.*expected 'FIRST-LAST'"):
    loop.train(tiny_config(profile_steps=spec), str(tmp_path / "wd"))
  assert not (tmp_path / "wd").exists()
