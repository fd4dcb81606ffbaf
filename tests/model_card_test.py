"""experiments/write_model_card.py on a real tiny workdir (tiny config, 2 steps, exported) and a small
input folder with a MANIFEST.tsv: the markers go in once, a rerun replaces the section, and every
figure is the files' own (sha256, held-out people and their files, steps, wall time)."""

import hashlib
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from facegen_jax.inference.generator_model import GeneratorModel
from facegen_jax.train import loop
from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "experiments" / "configs"))
import tiny  # noqa: E402  pylint: disable=wrong-import-position

SCRIPT = REPO_ROOT / "experiments" / "write_model_card.py"
CARD = "# my model\n\nThe first paragraph,\non two lines.\n\n## How it was made\nBy hand.\n"
# input file -> identity (the name's prefix before "__"); dave's clip was skipped by prepare_data
FILES = {"videos/anne__talk.mp4": "anne", "videos/bob__talk.mp4": "bob", "images/bob__photo.jpg": "bob",
         "images/carol__photo.png": "carol", "videos/dave__blurry.mp4": "dave"}
SPLIT = {"anne": "test", "bob": "train", "carol": "test", "dave": "train"}


_SPEC = importlib.util.spec_from_file_location("write_model_card", SCRIPT)
card = importlib.util.module_from_spec(_SPEC)  # loaded once: the script defines absl flags
_SPEC.loader.exec_module(card)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """(workdir, export dir, input folder, dataset folder) of a 2-step tiny run."""
  root = tmp_path_factory.mktemp("card")
  config = tiny.get_config()
  config.num_train_steps, config.checkpoint_every_steps, config.log_every_steps, config.image_every_steps = 2, 2, 1, 0
  workdir, out = root / "workdir", root / "export"
  loop.train(config, str(workdir))
  GeneratorModel.load(str(workdir)).export(str(out))
  faces = root / "faces"
  for rel in FILES:
    (faces / rel).parent.mkdir(parents=True, exist_ok=True)
    (faces / rel).write_bytes(rel.encode())  # names and kinds are all the card reads of them
  (faces / "MANIFEST.tsv").write_text("filename\tidentity\n" + "".join(f"{os.path.basename(f)}\t{i}\n"
                                                                       for f, i in FILES.items()))
  data_dir = root / "tfds"
  data_dir.mkdir()
  summary = {  # the keys experiments/prepare_data.py writes (facegen_jax/data/prepare.py, _summary)
      "files": {"found": 5, "videos": 3, "photos": 2, "processed_now": 5, "from_cache": 0, "used": 4, "skipped": 1,
                "skipped_by_reason": {"no face": 1}},
      "frames": 8, "identities": 3, "identity_split": SPLIT,
      "splits": {"train": {"identities": 1, "videos": 2, "frames": 4},
                 "test": {"identities": 2, "videos": 2, "frames": 4}},
      "skipped": [{"file": "videos/dave__blurry.mp4", "reason": "no face", "detail": "no face in 32 frames"}]}
  (data_dir / "summary.json").write_text(json.dumps(summary))
  (out / "README.md").write_text(CARD)
  return workdir, out, faces, data_dir


def _write(run, **kwargs):
  workdir, out, faces, data_dir = run
  return card.write_card(str(workdir), str(out), str(faces), str(data_dir), "experiments/configs/tiny.py",
                                **kwargs)


def _section(text):
  return text[text.index(card.BEGIN):text.index(card.END)]


def test_markers_inserted_once_after_first_paragraph_and_rerun_replaces(run):
  path = _write(run)
  text = open(path).read()
  assert text.startswith("# my model\n\nThe first paragraph,\non two lines.\n\n" + card.BEGIN + "\n")
  assert text.index(card.END) < text.index("## How it was made")
  for marker in (card.BEGIN, card.END, *card.EVAL_MARKERS):
    assert text.count(marker) == 1, marker
  with open(path, "w") as f:
    f.write(text.replace("### Data", "### Data\nstale line"))
  _write(run)
  again = open(path).read()
  assert "stale line" not in again
  assert again == text
  for marker in (card.BEGIN, card.END, *card.EVAL_MARKERS):
    assert again.count(marker) == 1, marker


def test_card_figures_come_from_the_files(run):
  workdir, out, faces, _ = run
  section = _section(open(_write(run)).read())
  manifest_sha = hashlib.sha256((faces / "MANIFEST.tsv").read_bytes()).hexdigest()
  assert f"`MANIFEST.tsv` sha256: `{manifest_sha}`" in section
  assert f"- input: `{faces}`: 5 files (3 clips, 2 photos) of 4 identities; 4 used, 1 skipped (no face: 1)" in section
  assert "used in training: 2 files (1 clip, 1 photo) of 1 identity" in section
  assert "| anne | `videos/anne__talk.mp4` |" in section
  assert "| carol | `images/carol__photo.png` |" in section
  assert "| train | 1 | 2 | 4 |" in section
  assert "| bob |" not in section and "dave__blurry" not in section
  assert "- steps trained: 2 (newest checkpoint); the exported weights are step 2 (ema)" in section
  assert "resolution 64, global batch 4, 2 steps" in section
  assert "- config file: `experiments/configs/tiny.py`" in section
  runs = card.training_runs(workdir)
  assert len(runs) == 1 and runs[0]["last_step"] == 2 and runs[0]["end"] >= runs[0]["start"]
  assert "in 1 run of train.py" in section
  assert f"{os.cpu_count()} cores" in section and "backend cpu" in section
  assert os.path.isfile(out / "config.json")


def test_new_card_and_cli(run, tmp_path):
  workdir, out, faces, data_dir = run
  fresh = tmp_path / "fresh"
  fresh.mkdir()
  for name in ("config.json", "export.json"):
    (fresh / name).write_bytes((out / name).read_bytes())
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, str(SCRIPT), f"--workdir={workdir}", f"--out={fresh}", f"--input={faces}",
                         f"--data_dir={data_dir}", "--noevaluation_markers"],
                        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  text = (fresh / "README.md").read_text()
  assert text.count(card.BEGIN) == 1 and text.count(card.END) == 1
  assert not any(m in text for m in card.EVAL_MARKERS)
  assert "| anne | `videos/anne__talk.mp4` |" in text


def test_prepared_dataset_as_input(run, tmp_path):
  """Trained on a prepared folder as it is: the files and the split come from its metadata.json."""
  workdir, out, _, _ = run
  data_dir = tmp_path / "shards"
  meta = data_dir / "face_frames" / "r64" / "1.0.0" / "metadata.json"
  meta.parent.mkdir(parents=True)
  meta.write_text(json.dumps({"identity_split": SPLIT, "splits": {
      "train": {"video_ids": ["videos/bob__talk", "images/bob__photo"], "identities": ["bob", "bob"],
                "num_frames": [3, 1]},
      "test": {"video_ids": ["videos/anne__talk", "images/carol__photo"], "identities": ["anne", "carol"],
               "num_frames": [3, 1]}}}))
  fresh = tmp_path / "export"
  fresh.mkdir()
  (fresh / "config.json").write_bytes((out / "config.json").read_bytes())
  section = _section(open(card.write_card(str(workdir), str(fresh), str(data_dir), str(data_dir))).read())
  assert f"- input: the prepared dataset `{data_dir}`" in section
  assert "used in training: 2 files (1 clip, 1 photo; a clip: a file with more than one frame) of 1 identity" in section
  assert "| anne | `videos/anne__talk` |" in section and "| carol | `images/carol__photo` |" in section
