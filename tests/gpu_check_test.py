"""benchmarks/gpu_check.sh, the prepared GPU run, end to end at tiny sizes on the CPU
(FACEGEN_GPU_CHECK_TINY=1): every step runs and everything lands in the one output folder."""

import json
import os
import subprocess
import sys

from train_test import REPO


def test_gpu_check_runs_every_step_at_tiny_sizes(tmp_path):
  out = tmp_path / "gpu_check"
  env = dict(os.environ, FACEGEN_GPU_CHECK_TINY="1", PYTHON=sys.executable, JAX_PLATFORMS="cpu")
  result = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), str(out)], env=env, capture_output=True,
                          text=True, timeout=1200, cwd=tmp_path)
  assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
  assert sorted(os.listdir(out)) == ["data", "export", "export.log", "infer.json", "nvidia-smi.txt", "pip-freeze.txt",
                                     "prepare.log", "summary.txt", "train.log", "train_step.json", "workdir"]
  train = json.loads((out / "train_step.json").read_text())
  assert [r["dtype"] for r in train["rows"]] == ["float32", "bfloat16"]
  assert train["bf16_matmul_peak_flops"] > 0 and all(r["jax_step_s"] > 0 for r in train["rows"])
  infer = json.loads((out / "infer.json").read_text())
  assert infer["batch"] == 4 and infer["jax_float32_frames_per_s"] > 0 and infer["jax_bfloat16_frames_per_s"] > 0
  assert (out / "export" / "generator.msgpack").exists()
  assert "step 4/4" in (out / "train.log").read_text()
  # The evaluation during training ran on the prepared dataset's test split (the held-out identity).
  rows = [json.loads(line) for line in (out / "workdir" / "metrics.jsonl").read_text().splitlines()]
  assert [(r["kind"], r.get("step")) for r in rows] == [("reference", None), ("eval", 4)], rows
  summary = (out / "summary.txt").read_text()
  assert "bfloat16 matmul peak" in summary and "train step tiny 64x64 batch 2 bfloat16" in summary, summary
  assert "inference batch 4 at 64" in summary, summary


def test_gpu_check_refuses_a_machine_without_a_gpu(tmp_path):
  env = dict(os.environ, PYTHON=sys.executable, JAX_PLATFORMS="cpu")
  env.pop("FACEGEN_GPU_CHECK_TINY", None)
  result = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
  assert result.returncode == 1
  assert "error: JAX sees no GPU (cpu); install the cuda12 extra" in result.stderr, result.stderr[-2000:]
