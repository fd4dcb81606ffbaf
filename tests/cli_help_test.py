"""`--help` of every entry point lists each flag the tool defines, exits 0, and prints no traceback."""

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

CONSOLE_SCRIPTS = ("facegen-reenact", "facegen-app")
# entry point (a script of the repository, or the console script) -> the files defining its flags
ENTRY_POINTS = {
    "facegen-reenact": ["facegen_jax/inference/cli.py"],
    "experiments/reenact.py": ["facegen_jax/inference/cli.py"],
    "facegen-app": ["facegen_jax/inference/app.py"],
    "experiments/app.py": ["facegen_jax/inference/app.py"],
    **{f"experiments/{name}.py": [f"experiments/{name}.py"]
       for name in ("train", "prepare_data", "evaluate", "export", "convert_vgg19", "migrate_config",
                    "write_model_card")},
    **{f"benchmarks/{name}.py": [f"benchmarks/{name}.py"]
       for name in ("run", "data_pipeline", "identity_net", "landmarks", "profile_convs", "reenact", "motion",
                    "host_sync")},
}
ABSL_FLAG = re.compile(r"DEFINE_\w+\(\s*\"(\w+)\"")
ARGPARSE_ARGUMENT = re.compile(r"add_argument\(\s*\"(-{0,2}[\w-]+)\"")


def _defined_flags(files):
  """(absl flag names, argparse argument names) defined in `files`."""
  text = "".join((REPO_ROOT / f).read_text() for f in files)
  return ABSL_FLAG.findall(text), ARGPARSE_ARGUMENT.findall(text)


def test_every_entry_point_defines_flags():
  for entry, files in ENTRY_POINTS.items():
    absl_flags, arguments = _defined_flags(files)
    assert absl_flags or arguments, f"{entry}: no flag found in {files}; is the list above stale?"


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_help_lists_every_flag(entry):
  if entry in CONSOLE_SCRIPTS:
    script = os.path.join(os.path.dirname(sys.executable), entry)
    if not os.path.exists(script):
      pytest.skip(f"{script} is not installed (pip install -e .)")
    command = [script, "--help"]
  else:
    command = [sys.executable, str(REPO_ROOT / entry), "--help"]
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), JAX_PLATFORMS="cpu")
  proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300, check=False)
  out = proc.stdout + proc.stderr
  assert proc.returncode == 0, out[-3000:]
  assert "Traceback" not in out, out[-3000:]
  absl_flags, arguments = _defined_flags(ENTRY_POINTS[entry])
  missing = [f for f in absl_flags if not re.search(rf"--(\[no\])?{f}\b", out)]
  missing += [a for a in arguments if not re.search(rf"(?<![\w-]){re.escape(a)}\b", out)]
  assert not missing, f"{entry} --help does not list {missing}:\n{out[-3000:]}"
