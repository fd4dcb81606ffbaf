r"""Fault injection: breaks training and data preparation at random moments and checks the reruns.

  python benchmarks/faults.py --n=10 [--seed=0] [--workdir=DIR]     # the faults; prints "survived K of N faults"
  python benchmarks/faults.py --n=0 --table=BUILD.md                # the bad-input table only

Faults, drawn in turn (`FAULTS`) at random moments (`--seed`):
- `train_kill`: experiments/train.py (tiny config, 6 steps, a checkpoint every 2) killed with
  SIGKILL at a random step (mid-step, or while a checkpoint is being written), half the time
  killed again during the restart, then run to the end;
- `prepare_kill`: experiments/prepare_data.py on three bundled files killed with SIGKILL after a
  random delay (the main process alone or its whole process group), then run again;
- `train_damage`: a random step of training killed (and run to the end if fewer than two
  checkpoints were left), then the newest checkpoint damaged (64 bytes flipped in its largest data
  file, that file truncated, its `_METADATA` deleted or the step emptied), then run to the end;
- `train_sigterm`: SIGTERM at a random step (saves and exits), then run to the end.
Each ends compared with an undisturbed run: every array and the data-iterator state of the final
checkpoint bit-identical (training); every record (decoded), metadata and cache file identical
(preparation). Exit status 1 unless every fault was survived.

`--table=FILE` runs every entry point on each bad input of `BAD_INPUTS` and writes what the user
sees into FILE between `<!-- faults.py bad inputs: begin -->` and `<!-- faults.py bad inputs: end -->`
(tests/reliability_entry_points_test.py runs the same cases).
"""

import argparse
import dataclasses
import hashlib
import json
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Optional

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TINY = REPO / "experiments" / "configs" / "tiny.py"
STEPS, EVERY = 6, 2
TRAIN_FLAGS = (f"--config={TINY}", f"--config.num_train_steps={STEPS}", f"--config.checkpoint_every_steps={EVERY}",
               "--config.log_every_steps=1", "--config.image_every_steps=0")
PREPARE_FILES = ("matt_damon__deepface__img29.jpg", "aflw_woman__face_alignment__aflw-test.jpg",
                 "lp_d18_d19_man__liveportrait__d18.mp4")
PREPARE_FLAGS = ("--resolution=64", "--max_frames=2", "--frame_step=5", "--workers=1", "--test_fraction=0")
FAULTS = ("train_kill", "prepare_kill", "train_damage", "train_sigterm")
BEGIN, END = "<!-- faults.py bad inputs: begin -->", "<!-- faults.py bad inputs: end -->"


# ----------------------------------------------------------------------------------------------
# Running the entry points


def _env():
  """The entry points' environment: CPU, and the persistent XLA cache of the tests (the runs compile one program)."""
  return {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu",
          "JAX_COMPILATION_CACHE_DIR": os.environ.get("FACEGEN_JAX_CACHE", "/tmp/facegen_jax_xla_cache"),
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5"}


def start(script: str, *args, quiet: bool = False, **popen) -> subprocess.Popen:
  """Starts an entry point, its output (stdout and stderr) on a pipe, or dropped if `quiet`."""
  return subprocess.Popen([PYTHON, str(REPO / "experiments" / script), *map(str, args)], cwd=REPO, env=_env(),
                          stdout=subprocess.DEVNULL if quiet else subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          **popen)


def run(script: str, *args, timeout: float = 600) -> tuple:
  """(exit status, output) of an entry point run to its end."""
  proc = start(script, *args)
  out, _ = proc.communicate(timeout=timeout)
  return proc.returncode, out


def _kill_at_step(proc: subprocess.Popen, step: int, delay: float, sig=signal.SIGKILL) -> bool:
  """Sends `sig` `delay` s after train.py logs step `step` (or when it ends). True if it was sent."""
  sent = threading.Event()

  def watch():
    for line in proc.stdout:
      if re.search(rf"\bstep {step}/", line) and not sent.is_set():
        time.sleep(delay)
        if proc.poll() is None:
          proc.send_signal(sig)
          sent.set()
    proc.stdout.close()

  watcher = threading.Thread(target=watch, daemon=True)
  watcher.start()
  proc.wait(timeout=600)
  watcher.join(timeout=60)
  return sent.is_set()


def _kill_after(proc: subprocess.Popen, seconds: float, group: bool) -> bool:
  try:
    proc.wait(timeout=seconds)
    return False
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL) if group else proc.kill()  # pylint: disable=expression-not-assigned
    proc.wait(timeout=60)
    return True


# ----------------------------------------------------------------------------------------------
# What a finished run leaves


def final_checkpoint(workdir: pathlib.Path) -> tuple:
  """(step, {array name: array}, data state) of the newest checkpoint, read without a config."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  step = max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  state = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(step) / "state")
  arrays = {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(state)[0]}
  data = json.loads((workdir / "checkpoints" / str(step) / "data" / "metadata").read_text())
  return step, arrays, data


def same_checkpoint(a: tuple, b: tuple) -> Optional[str]:
  """None if two `final_checkpoint`s are bit-identical, else what differs."""
  if a[0] != b[0] or a[2] != b[2]:
    return f"step/data state {a[0]} {a[2]} vs {b[0]} {b[2]}"
  if a[1].keys() != b[1].keys():
    return "different arrays"
  differ = [k for k in a[1] if a[1][k].dtype != b[1][k].dtype or not np.array_equal(a[1][k], b[1][k])]
  return f"{len(differ)} arrays differ, e.g. {differ[0]}" if differ else None


def dataset_files(output: pathlib.Path) -> dict:
  """sha256 of every record (decoded: a shard's bytes differ from run to run, as protobuf writes the
  features of an example in no fixed order), metadata and cache file of a prepare_data output."""
  sys.path.insert(0, str(REPO))
  from facegen_jax.data import reading  # pylint: disable=import-outside-toplevel
  found = {}
  for path in sorted(output.rglob("*")):
    if path.is_file() and path.suffix in (".npz", ".json") and path.name not in ("summary.json", "dataset_info.json"):
      found[str(path.relative_to(output))] = hashlib.sha256(path.read_bytes()).hexdigest()  # (timings, TFDS's clock)
  builder_dir = reading.find_builder_dir(str(output), int(PREPARE_FLAGS[0].split("=")[1]))
  for split in json.loads((pathlib.Path(builder_dir) / "metadata.json").read_text())["splits"]:
    source, _, _ = reading.open_split(builder_dir, split)
    for i in range(len(source)):
      digest = hashlib.sha256()
      for key, value in sorted(reading.decode_record(source[i]).items()):
        value = np.asarray(value)
        digest.update(f"{key}:{value.dtype}:{value.shape}:".encode() + value.tobytes())
      found[f"{split} record {i}"] = digest.hexdigest()
  return found


# ----------------------------------------------------------------------------------------------
# Damage


def _largest_data_file(step_dir: pathlib.Path) -> pathlib.Path:
  files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
  return max(files, key=lambda p: p.stat().st_size)


def flip_bytes(step_dir: pathlib.Path) -> None:
  path = _largest_data_file(step_dir)
  data = bytearray(path.read_bytes())
  middle = len(data) // 2
  data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
  path.write_bytes(bytes(data))


def truncate(step_dir: pathlib.Path) -> None:
  path = _largest_data_file(step_dir)
  os.truncate(path, path.stat().st_size // 2)


def delete_metadata(step_dir: pathlib.Path) -> None:
  (step_dir / "state" / "_METADATA").unlink()


def empty(step_dir: pathlib.Path) -> None:
  for child in step_dir.iterdir():
    shutil.rmtree(child) if child.is_dir() else child.unlink()  # pylint: disable=expression-not-assigned


DAMAGES = {"bit flip": flip_bytes, "truncated": truncate, "_METADATA deleted": delete_metadata, "emptied": empty}


# ----------------------------------------------------------------------------------------------
# The faults


def _finish_training(workdir: pathlib.Path) -> str:
  code, out = run("train.py", f"--workdir={workdir}", *TRAIN_FLAGS)
  if code != 0:
    raise RuntimeError(f"the rerun failed ({code}): {out[-2000:]}")
  return out


def train_fault(kind: str, workdir: pathlib.Path, rng: random.Random) -> str:
  """Injects one training fault into a fresh `workdir` and runs training to its end; returns what was done."""
  step, delay = rng.randint(2 * EVERY if kind == "train_damage" else 1, STEPS - 1), rng.uniform(0.0, 0.3)
  sig = signal.SIGTERM if kind == "train_sigterm" else signal.SIGKILL
  sent = _kill_at_step(start("train.py", f"--workdir={workdir}", *TRAIN_FLAGS), step, delay, sig)
  done = f"{sig.name} {delay:.2f} s after step {step}" if sent else "the run ended before the signal"
  if kind == "train_kill" and rng.random() < 0.5:
    seconds = rng.uniform(1.0, 12.0)
    proc = start("train.py", f"--workdir={workdir}", *TRAIN_FLAGS, quiet=True, start_new_session=True)
    if _kill_after(proc, seconds, group=False):
      done += f", the restart killed after {seconds:.1f} s"
  if kind == "train_damage":
    steps = [p for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
    if len(steps) < 2:  # a good step to fall back to ("no usable checkpoint" is the answer without one)
      _finish_training(workdir)
      steps, done = [p for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()], done + ", run to the end"
    newest, name = max(steps, key=lambda p: int(p.name)), rng.choice(sorted(DAMAGES))
    DAMAGES[name](newest)
    done += f", then checkpoint {newest.name} damaged ({name})"
  out = _finish_training(workdir)
  if kind == "train_damage" and "is damaged" not in out:
    raise RuntimeError("the rerun did not warn about the damaged checkpoint")
  return done


def prepare_fault(workdir: pathlib.Path, inputs: pathlib.Path, rng: random.Random, duration: float) -> str:
  seconds, group = rng.uniform(0.5, duration), rng.random() < 0.5
  output = workdir / "data"
  proc = start("prepare_data.py", f"--input={inputs}", f"--output={output}", *PREPARE_FLAGS, quiet=True,
               start_new_session=True)
  killed = _kill_after(proc, seconds, group)
  done = (f"SIGKILL to the {'process group' if group else 'main process'} after {seconds:.1f} s" if killed
          else f"the run ended before {seconds:.1f} s")
  code, out = run("prepare_data.py", f"--input={inputs}", f"--output={output}", *PREPARE_FLAGS)
  if code != 0:
    raise RuntimeError(f"the rerun failed ({code}): {out[-2000:]}")
  return done


def inject_faults(n: int, seed: int, root: pathlib.Path) -> int:
  """Runs `n` faults (see the module docstring); prints one line each; returns how many were survived."""
  rng = random.Random(seed)
  inputs = root / "inputs"
  inputs.mkdir(parents=True, exist_ok=True)
  for name in PREPARE_FILES:
    shutil.copy(REPO / "sample_data" / name, inputs / name)
  t = time.time()
  reference = final_checkpoint(_train_reference(root / "reference"))
  print(f"reference training run: {time.time() - t:.0f} s", flush=True)
  t = time.time()
  code, out = run("prepare_data.py", f"--input={inputs}", f"--output={root / 'reference_data'}", *PREPARE_FLAGS)
  if code != 0:
    raise RuntimeError(f"the reference prepare_data run failed: {out[-2000:]}")
  prepare_seconds, reference_data = time.time() - t, dataset_files(root / "reference_data")
  print(f"reference prepare_data run: {prepare_seconds:.0f} s", flush=True)
  survived = 0
  for i in range(n):
    kind = FAULTS[i % len(FAULTS)]
    workdir = root / f"fault_{i}"
    t = time.time()
    try:
      if kind == "prepare_kill":
        done = prepare_fault(workdir, inputs, rng, prepare_seconds)
        got = dataset_files(workdir / "data")
        problem = None if got == reference_data else (
            "files differ: " + ", ".join(sorted(k for k in got.keys() | reference_data.keys()
                                                if got.get(k) != reference_data.get(k)))[:300])
      else:
        done = train_fault(kind, workdir, rng)
        problem = same_checkpoint(final_checkpoint(workdir), reference)
    except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as e:
      done, problem = "", f"{type(e).__name__}: {e}"
    survived += problem is None
    print(f"fault {i + 1}/{n} {kind}: {done}: " + ("identical to the undisturbed run" if problem is None
                                                     else f"FAILED: {problem}") + f" ({time.time() - t:.0f} s)",
          flush=True)
    if problem is None:
      shutil.rmtree(workdir, ignore_errors=True)
  return survived


def _train_reference(workdir: pathlib.Path) -> pathlib.Path:
  _finish_training(workdir)
  return workdir


# ----------------------------------------------------------------------------------------------
# Bad inputs


@dataclasses.dataclass(frozen=True)
class BadInput:
  """One entry point on one bad input: `args(fixtures)` its arguments, what it must print and return."""
  script: str
  what: str
  args: Callable[[dict], list]
  expect: str  # a regular expression the error line(s) match
  exitcode: int = 1


def make_fixtures(root: pathlib.Path) -> dict:
  """Files the bad inputs need: a tiny workdir, damaged copies of it, a decompression bomb, ..."""
  sys.path.insert(0, str(REPO))
  import jax  # pylint: disable=import-outside-toplevel
  from facegen_jax.io import checkpoints  # pylint: disable=import-outside-toplevel
  from facegen_jax.train import checkpointing  # pylint: disable=import-outside-toplevel
  from facegen_jax.train.state import create_train_state  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, str(TINY.parent))
  import tiny  # pylint: disable=import-outside-toplevel

  config = tiny.get_config()
  state = create_train_state(config)
  fixtures = {"root": root, "photo": REPO / "sample_data" / "matt_damon__deepface__img29.jpg",
              "clip": REPO / "sample_data" / "lp_d18_d19_man__liveportrait__d18.mp4"}

  def workdir(name, state):
    path = root / name
    manager = checkpoints.make_manager(str(path), 3)
    checkpointing.save(manager, state, {"next_index": 0})
    manager.close()
    (path / "config.json").write_text(config.to_json_best_effort())
    return path

  fixtures["workdir"] = workdir("workdir", state.replace(step=state.step + 1))
  fixtures["flipped"] = workdir("flipped", state.replace(step=state.step + 1))
  flip_bytes(fixtures["flipped"] / "checkpoints" / "1")
  ema = jax.tree.map(np.array, state.ema_params)
  jax.tree.leaves(ema)[0].reshape(-1)[:4] = np.nan
  fixtures["nan"] = workdir("nan_weights", state.replace(step=state.step + 1, ema_params=ema))
  fixtures["bomb"] = root / "bomb.png"
  write_png_header(fixtures["bomb"], 40_000, 40_000)
  fixtures["empty"] = root / "empty"
  fixtures["empty"].mkdir()
  fixtures["bad_files"] = root / "bad_files"
  fixtures["bad_files"].mkdir()
  (fixtures["bad_files"] / "broken__photo.jpg").write_bytes(b"not an image")
  write_png_header(fixtures["bad_files"] / "bomb__huge.png", 40_000, 40_000)
  return fixtures


def write_png_header(path: pathlib.Path, width: int, height: int) -> None:
  """A PNG that claims `width` x `height` pixels (the header of a decompression bomb) with one short row of data."""
  import struct  # pylint: disable=import-outside-toplevel
  import zlib  # pylint: disable=import-outside-toplevel

  def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
  path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                   + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _out(f, name="out"):
  return f"--output={f['root'] / name}"


BAD_INPUTS = (
    BadInput("train.py", "a config file that does not exist",
             lambda f: ["--config=experiments/configs/nope.py", f"--workdir={f['root'] / 'w'}"],
             r"--config=experiments/configs/nope.py cannot be loaded: .*No such file", 2),
    BadInput("train.py", "a value of the wrong type (`--config.num_train_steps=abc`)",
             lambda f: [f"--config={TINY}", f"--workdir={f['root'] / 'w'}", "--config.num_train_steps=abc"],
             r"flag --config.num_train_steps=abc: invalid literal for int", 2),
    BadInput("train.py", "no `--workdir`", lambda f: [f"--config={TINY}"], r"Flag --workdir must have a value", 2),
    BadInput("train.py", "a misspelt config key", lambda f: [f"--config={TINY}", f"--workdir={f['root'] / 'w'}",
                                                            "--config.model.base_featurez=8"],
             r"unknown config key 'base_featurez'.*did you mean \"base_features\"", 2),
    BadInput("train.py", "`resolution=100`, `global_batch_size=0`, a negative learning rate",
             lambda f: [f"--config={TINY}", f"--workdir={f['root'] / 'w'}", "--config.resolution=100",
                        "--config.global_batch_size=0", "--config.optimizer.g_learning_rate=-1"],
             r"(?s)(?=.*config.resolution=100: must be a power of two)(?=.*global_batch_size=0: must be a positive "
             r"multiple of the device count)(?=.*g_learning_rate=-1.0: must be a positive)"),
    BadInput("train.py", "a data dir that does not exist",
             lambda f: [f"--config={TINY}", f"--workdir={f['root'] / 'w'}", "--config.data.source=tfds",
                        f"--config.data.data_dir={f['root'] / 'missing'}"],
             r"no face_frames dataset in .*missing.*prepare_data.py"),
    BadInput("train.py", "a workdir trained with another model size",
             lambda f: [f"--config={TINY}", f"--workdir={f['workdir']}", "--config.model.base_features=16"],
             r"checkpoints/1 does not match this config: it was saved with another model"),
    BadInput("evaluate.py", "`--videos` that does not exist",
             lambda f: [f"--videos={f['root'] / 'missing'}", _out(f)], r"--videos=.*missing does not exist"),
    BadInput("evaluate.py", "a folder without videos", lambda f: [f"--videos={f['empty']}", _out(f)],
             r"no videos \(.mp4"),
    BadInput("export.py", "a workdir that does not exist",
             lambda f: [f"--workdir={f['root'] / 'missing'}", _out(f)], r"is not a directory"),
    BadInput("export.py", "a workdir whose newest checkpoint has flipped bytes",
             lambda f: [f"--workdir={f['flipped']}", _out(f)], r"checkpoints/1 is damaged \(.*SHA-256 differs"),
    BadInput("prepare_data.py", "an input folder that does not exist",
             lambda f: [f"--input={f['root'] / 'missing'}", _out(f)], r"input folder .*missing does not exist"),
    BadInput("prepare_data.py", "a folder of only bad files (a broken JPEG, a decompression bomb)",
             lambda f: [f"--input={f['bad_files']}", _out(f, 'bad_out'), "--workers=1"],
             r"none of the 2 input files .* see the skipped files and their reasons in .*summary.json"),
    BadInput("reenact.py", "a 40000x40000 PNG as `--source`",
             lambda f: [f"--checkpoint={f['workdir']}", f"--source={f['bomb']}", f"--driving={f['photo']}",
                        f"--output={f['root'] / 'o.png'}"], r"bomb.png is .*over the limit of 40 megapixels"),
    BadInput("reenact.py", "a workdir whose weights hold NaN",
             lambda f: [f"--checkpoint={f['nan']}", f"--source={f['photo']}", f"--driving={f['photo']}",
                        f"--output={f['root'] / 'o.png'}"], r"checkpoints/1: NaN or infinite values in params/"),
    BadInput("reenact.py", "a `--source` that does not exist",
             lambda f: [f"--checkpoint={f['workdir']}", f"--source={f['root'] / 'missing.jpg'}",
                        f"--driving={f['photo']}", f"--output={f['root'] / 'o.png'}"], r"missing.jpg does not exist"),
)


def run_bad_input(case: BadInput, fixtures: dict) -> tuple:
  """(exit status, the lines the user sees on the console that are not absl/TF log lines)."""
  code, out = run(case.script, *case.args(fixtures), timeout=600)
  shown = [line for line in out.splitlines() if line.startswith("error:") or "Traceback" in line]
  return code, shown, out


def bad_input_table(fixtures: dict) -> str:
  rows = ["| entry point | bad input | exit | what the user sees |", "|---|---|---|---|"]
  root = str(fixtures["root"])
  for case in BAD_INPUTS:
    code, shown, _ = run_bad_input(case, fixtures)
    text = "<br>".join(line.replace(root, "DIR").replace(str(REPO) + "/", "") for line in shown)
    text = re.sub(r"d/[0-9a-f]{32}", "d/...", text).replace("|", "\\|")
    rows.append(f"| `{case.script}` | {case.what} | {code} | `{text}` |" if text else
                f"| `{case.script}` | {case.what} | {code} | (nothing) |")
    print(rows[-1], flush=True)
  return "\n".join(rows)


def write_table(path: pathlib.Path, table: str) -> None:
  text = path.read_text()
  if BEGIN not in text or END not in text:
    raise ValueError(f"{path} has no '{BEGIN}' ... '{END}' markers for the table")
  head, rest = text.split(BEGIN, 1)
  _, tail = rest.split(END, 1)
  command = "python benchmarks/faults.py --n=0 --table=" + os.path.relpath(path, REPO)
  path.write_text(f"{head}{BEGIN}\n<!-- written by `{command}` -->\n{table}\n{END}{tail}")


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--n", type=int, default=10, help="how many faults to inject")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one, removed)")
  parser.add_argument("--table", default=None, help="also write the bad-input table into this Markdown file")
  args = parser.parse_args()
  root = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="facegen_faults_"))
  try:
    if args.table:
      write_table(pathlib.Path(args.table), bad_input_table(make_fixtures(root / "bad_inputs")))
      print(f"wrote the bad-input table into {args.table}")
    if args.n > 0:
      survived = inject_faults(args.n, args.seed, root / "faults")
      print(f"survived {survived} of {args.n} faults")
      if survived != args.n:
        sys.exit(1)
  finally:
    if args.workdir is None:
      shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
  main()
