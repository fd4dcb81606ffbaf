"""Installs per accelerator: the base install pins no jaxlib flavour and no oneDNN, the cpu / cuda12 /
tpu extras pick one, the project's setup installs the cpu extra, and facegen_jax imports and trains
without the oneDNN wheels (the convolutions fall back, said once in the log)."""

import configparser
import os
import re
import subprocess
import sys
import sysconfig

from train_test import REPO

JAX_RANGE = ">=0.6,<0.11"


def _requirements(text: str) -> list:
  return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def _setup_cfg():
  parser = configparser.ConfigParser()
  parser.read(REPO / "setup.cfg")
  base = _requirements(parser["options"]["install_requires"])
  extras = {name: _requirements(value) for name, value in parser["options.extras_require"].items()}
  return base, extras


def test_base_install_has_no_jaxlib_flavour_and_no_onednn():
  base, extras = _setup_cfg()
  jax_lines = [r for r in base if re.match(r"jax\b", r)]
  assert jax_lines == [f"jax{JAX_RANGE}"], jax_lines
  assert not [r for r in base if r.startswith(("jaxlib", "jax-cuda", "libtpu", "onednn"))], base
  assert f"jax[cpu]{JAX_RANGE}" in extras["cpu"]
  assert sorted(r.split(";")[0] for r in extras["cpu"] if r.startswith("onednn")) == [
      "onednn-cpu-gomp==2023.2.0", "onednn-devel-cpu-gomp==2023.2.0"]
  assert extras["cuda12"] == [f"jax[cuda12]{JAX_RANGE}"]
  assert extras["tpu"] == [f"jax[tpu]{JAX_RANGE}"]
  for name, requirements in extras.items():
    if name != "cpu":
      assert not [r for r in requirements if r.startswith("onednn")], (name, requirements)


def test_setup_env_and_ci_install_the_cpu_extra():
  setup_env = (REPO / "experiments" / "setup_env.sh").read_text()
  assert 'ACCELERATOR=${FACEGEN_ACCELERATOR:-cpu}' in setup_env
  assert 'pip install --quiet -e ".[$ACCELERATOR,dev,video]"' in setup_env
  ci = (REPO / ".ci" / "run").read_text()
  assert re.search(r'pip install --quiet -e "\.\[cpu,[^"]*\]"', ci), ci
  bad = subprocess.run(["bash", str(REPO / "experiments" / "setup_env.sh")],  # refused before pip runs
                       env=dict(os.environ, FACEGEN_ACCELERATOR="gpu"), capture_output=True, text=True, timeout=60)
  assert bad.returncode == 2 and "FACEGEN_ACCELERATOR=gpu: expected cpu, cuda12 or tpu" in bad.stderr, bad.stderr


TRAIN_ONE_STEP = r"""
import sys
sys.path.insert(0, sys.argv[1])
import tiny
from facegen_jax.train import loop
c = tiny.get_config()
c.num_train_steps, c.image_every_steps = 1, 0
metrics = loop.train(c, sys.argv[2])
print("TRAINED", sorted(metrics)[:2])
"""


def test_imports_and_trains_without_the_onednn_wheels(tmp_path):
  """A venv without the oneDNN wheels' files (its prefix has no lib/libdnnl.so, include/oneapi),
  seeing this checkout's other packages through a .pth file: one train step runs on the XLA
  convolution formulations, and the fallback is logged exactly once."""
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
  python = venv / "bin" / "python"
  site_packages = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 check=True, capture_output=True, text=True).stdout.strip()
  here = sysconfig.get_paths()["purelib"]
  with open(os.path.join(site_packages, "facegen_checkout.pth"), "w") as f:
    f.write(f"import site; site.addsitedir({here!r})\n")
  assert not (venv / "lib" / "libdnnl.so").exists()
  env = {k: v for k, v in os.environ.items() if k not in ("DNNL_ROOT", "FACEGEN_CONV_IMPL", "PYTHONPATH")}
  env.update(FACEGEN_CACHE_DIR=str(tmp_path / "cache"), JAX_PLATFORMS="cpu")
  result = subprocess.run([str(python), "-c", TRAIN_ONE_STEP, str(REPO / "experiments" / "configs"),
                           str(tmp_path / "wd")], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "TRAINED" in result.stdout
  assert result.stderr.count("oneDNN convolutions unavailable") == 1, result.stderr[-3000:]
  assert "oneDNN not found" in result.stderr
