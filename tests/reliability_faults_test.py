"""benchmarks/faults.py in CI: N faults (default 10; `FACEGEN_FAULTS=N` to change) injected into
training and data preparation at random moments, every rerun bit-identical to an undisturbed run."""

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_random_kills_and_damage_are_all_survived(tmp_path):
  n = int(os.environ.get("FACEGEN_FAULTS", "10"))
  result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "faults.py"), f"--n={n}", "--seed=0",
                           f"--workdir={tmp_path}"], capture_output=True, text=True, cwd=REPO, timeout=2400)
  print(result.stdout)
  assert result.returncode == 0 and f"survived {n} of {n} faults" in result.stdout, result.stdout + result.stderr[-3000:]
  assert result.stdout.count(": identical to the undisturbed run") == n
