r"""Writes the generated section of a model card from the files of its training run.

  python experiments/write_model_card.py --workdir=workdirs/faces_model --out=weights/demo_128 \
      --input=../shared/faces --data_dir=workdirs/faces_tfds --config=experiments/configs/faces.py

Fills the text of OUT/README.md between `<!-- model card: begin (generated, do not edit) -->` and
`<!-- model card: end -->`; the markers are inserted after the card's first paragraph when the card
has none (a card that does not exist yet is started with a title and one line). Unless
--noevaluation_markers, the markers experiments/evaluate.py writes its self- and cross-reenactment
tables between are added where absent (the cross pair after the self table, else both in an
Evaluation section at the end). A rerun replaces the section and adds nothing. Every figure in it is read from a file:
- data: the input folder (its files by `facegen_jax.data.prepare.find_inputs`, the sha256 of its
  MANIFEST.tsv when it has one) and the prepared dataset (`DATA_DIR/summary.json` of
  experiments/prepare_data.py and the dataset's metadata.json: the split, per-split counts);
- the held-out identities (the dataset's test split) by name, with their files;
- the config: OUT/config.json (the workdir's config.json when OUT has none), its key settings;
- training: the steps of the workdir's newest checkpoint and of OUT/export.json, and the wall time
  from the workdir's TensorBoard event files (each event carries its wall-clock time; a run of
  train.py is one event file, counted from its first event, written when the model is built, to
  its last);
- the machine: /proc/cpuinfo, the core count and jax's backend and devices, as seen by this
  command (the recipe, experiments/train_demo_model.sh, runs it right after training).
"""

import collections
import csv
import datetime
import hashlib
import json
import os
import pathlib
import shlex
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=wrong-import-position

from facegen_jax import entry  # pylint: disable=wrong-import-position
from facegen_jax.evaluation import report  # pylint: disable=wrong-import-position

flags.DEFINE_string("workdir", None, "Training workdir of the model (checkpoints, tensorboard/, config.json).")
flags.DEFINE_string("out", None, "Export directory of the model; its README.md is the card.")
flags.DEFINE_string("input", None, "The folder of clips and photos the dataset was prepared from (or the prepared "
                    "dataset itself, when training ran on one).")
flags.DEFINE_string("data_dir", None, "The prepared dataset (experiments/prepare_data.py --output; default: the "
                    "config's data.data_dir).")
flags.DEFINE_string("config", None, "The config file the model was trained with (as passed to train.py).")
flags.DEFINE_string("command", None, "The training command, shown in the card.")
flags.DEFINE_bool("evaluation_markers", True, "Also add experiments/evaluate.py's table markers (self and cross) "
                  "where the card lacks them.")
flags.mark_flags_as_required(["workdir", "out"])
FLAGS = flags.FLAGS

BEGIN = "<!-- model card: begin (generated, do not edit) -->"
END = "<!-- model card: end -->"
EVAL_MARKERS = (*report.readme_markers("self"), *report.readme_markers("cross"))  # evaluate.py --readme


# Files.

def sha256_of(path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _json(path):
  path = pathlib.Path(path)
  return json.loads(path.read_text()) if path.is_file() else None


def read_events(path) -> list:
  """(wall_time, step) of every event of a TensorBoard event file (TFRecord framing: length, its
  crc, the Event proto, its crc); a record cut short by a killed run ends the list."""
  from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel
  data = pathlib.Path(path).read_bytes()
  events, i = [], 0
  while i + 12 <= len(data):
    (length,) = struct.unpack("<Q", data[i:i + 8])
    record = data[i + 12:i + 12 + length]
    if len(record) < length:
      break
    event = event_pb2.Event.FromString(record)
    events.append((event.wall_time, int(event.step)))
    i += 12 + length + 4
  return events


def training_runs(workdir) -> list:
  """One dict per run of train.py in `workdir` (an event file each): start and end (seconds since
  the epoch, its first and last event) and the last step it logged; oldest first. A run that
  trained no step (a finished workdir started again) is left out."""
  runs = []
  for path in sorted(pathlib.Path(workdir, "tensorboard").glob("events.out.tfevents.*")):
    events = read_events(path)
    if events and max(s for _, s in events) > 0:
      runs.append({"file": path.name, "start": min(t for t, _ in events), "end": max(t for t, _ in events),
                   "last_step": max(s for _, s in events)})
  return sorted(runs, key=lambda r: r["start"])


def latest_checkpoint_step(workdir):
  """The newest complete checkpoint's step in `workdir`/checkpoints, or None."""
  root = pathlib.Path(workdir, "checkpoints")
  steps = [int(p.name) for p in root.glob("*") if p.name.isdigit() and (p / "_CHECKPOINT_METADATA").exists()]
  return max(steps, default=None)


def dataset_metadata(data_dir, resolution):
  """The prepared dataset's metadata.json (identity split, per-split video table) at `resolution`,
  else its only one, or None."""
  candidates = (sorted(pathlib.Path(data_dir).glob(f"face_frames/r{resolution}/*/metadata.json"))
                or sorted(pathlib.Path(data_dir).glob("face_frames/r*/*/metadata.json")))
  return _json(candidates[-1]) if candidates else None


def _files_of_inputs(input_dir, identity_split, skipped):
  """{split: [(rel path, is clip, identity)]} of the input folder's files (skipped ones left out)."""
  from facegen_jax.data import prepare  # pylint: disable=import-outside-toplevel
  by_split = {}
  for inp in prepare.find_inputs(input_dir):
    if inp.rel not in skipped and inp.identity in identity_split:
      by_split.setdefault(identity_split[inp.identity], []).append((inp.rel, inp.is_video, inp.identity))
  return by_split


def _files_of_metadata(metadata):
  """{split: [(video id, is clip, identity)]} from the dataset's video table (a clip: more than one frame)."""
  return {split: [(v, n > 1, i) for v, n, i in zip(table["video_ids"], table["num_frames"], table["identities"])]
          for split, table in metadata["splits"].items()}


def data_facts(input_dir, data_dir, resolution) -> dict:
  """What the card says about the data, read from the input folder and the prepared dataset."""
  summary = _json(pathlib.Path(data_dir, "summary.json")) if data_dir else None
  metadata = dataset_metadata(data_dir, resolution) if data_dir else None
  prepared_input = bool(input_dir) and os.path.isdir(os.path.join(input_dir, "face_frames"))
  facts = {"input": input_dir, "prepared_input": prepared_input, "data_dir": data_dir, "summary": summary,
           "manifest_sha256": None, "files_by_split": None, "files_from": None}
  split = (summary or {}).get("identity_split") or (metadata or {}).get("identity_split") or {}
  facts["identity_split"] = split
  if input_dir and os.path.isfile(os.path.join(input_dir, "MANIFEST.tsv")):
    facts["manifest_sha256"] = sha256_of(os.path.join(input_dir, "MANIFEST.tsv"))
  if input_dir and os.path.isdir(input_dir) and not prepared_input and split:
    skipped = {s["file"] for s in (summary or {}).get("skipped", [])}
    facts["files_by_split"], facts["files_from"] = _files_of_inputs(input_dir, split, skipped), "input"
  elif metadata:
    facts["files_by_split"], facts["files_from"] = _files_of_metadata(metadata), "metadata"
  facts["train_licenses"] = _training_licenses(input_dir, facts["files_by_split"] or {})
  return facts


def _training_licenses(input_dir, by_split) -> dict:
  """{license: number of training files} from MANIFEST.tsv's filename and repo_license columns."""
  path = os.path.join(input_dir or "", "MANIFEST.tsv")
  if not input_dir or not os.path.isfile(path):
    return {}
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f, delimiter="\t"))
  if not rows or "filename" not in rows[0] or "repo_license" not in rows[0]:
    return {}
  license_of = {row["filename"]: row["repo_license"] for row in rows}
  names = [pathlib.PurePosixPath(str(rel)).name for rel, _, _ in by_split.get("train", [])]
  return dict(collections.Counter(license_of.get(n, "not in MANIFEST.tsv") for n in names).most_common())


def machine_facts() -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  from benchmarks.run import cpu_flags, cpu_model  # pylint: disable=import-outside-toplevel
  return {"cpu": cpu_model(), "cores": os.cpu_count(), "cpu_flags": cpu_flags(), "jax": jax.__version__,
          "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()]}


# The section.

def _utc(seconds: float) -> str:
  return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return (f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s") + f" ({seconds} s)"


def _count(n: int, noun: str, plural: str = "") -> str:
  return f"{n} {noun if n == 1 else plural or noun + 's'}"


def _settings(group: dict) -> str:
  return ", ".join(f"{k} {v}" for k, v in group.items())


def _data_lines(facts: dict) -> list:
  lines = ["### Data"]
  summary, by_split = facts["summary"], facts["files_by_split"] or {}
  if facts["prepared_input"]:
    where = f"the prepared dataset `{facts['input']}`" + (", made by prepare_data.py from" if summary else "")
  else:
    where = f"`{facts['input']}`" if facts["input"] else "not given (--input)"
    where += ":" if summary else ""
  if summary:
    f = summary["files"]
    people = _count(len(summary["identity_split"]), "identity", "identities")
    where += (f" {_count(f['found'], 'file')} ({_count(f['videos'], 'clip')}, {_count(f['photos'], 'photo')}) "
              f"of {people}; {f['used']} used, {f['skipped']} skipped"
              + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(f['skipped_by_reason'].items()))})"
                 if f["skipped"] else ""))
  lines.append(f"- input: {where}")
  if facts["manifest_sha256"]:
    lines.append(f"- `MANIFEST.tsv` sha256: `{facts['manifest_sha256']}`")
  train = by_split.get("train", [])
  if train:
    clips = sum(is_clip for _, is_clip, _ in train)
    people = {who for _, _, who in train}
    counted = "" if facts["files_from"] == "input" else "; a clip: a file with more than one frame"
    lines.append(f"- used in training: {_count(len(train), 'file')} ({_count(clips, 'clip')}, "
                 f"{_count(len(train) - clips, 'photo')}{counted}) of {_count(len(people), 'identity', 'identities')}")
  if facts.get("train_licenses"):
    lines.append("- licenses of the training files (MANIFEST.tsv `repo_license`): "
                 + ", ".join(f"{k} {v}" for k, v in facts["train_licenses"].items()))
  if summary:
    lines += [f"- prepared dataset: `{facts['data_dir']}` (`summary.json` of experiments/prepare_data.py):", "",
              "| split | identities | files | frames |", "|---|---|---|---|"]
    lines += [f"| {name} | {s['identities']} | {s['videos']} | {s['frames']} |"
              for name, s in summary["splits"].items()]
    lines.append("")
  elif facts["data_dir"]:
    lines.append(f"- prepared dataset: `{facts['data_dir']}` (no summary.json there)")
  else:
    lines.append("- prepared dataset: none (the config's data.source is not tfds)")
  return lines


def _held_out_lines(facts: dict) -> list:
  held_out = sorted(i for i, s in facts["identity_split"].items() if s == "test")
  lines = ["### Held-out identities", "The dataset's test split, never seen in training (held out by identity, "
           "never by file):", "", "| identity | files |", "|---|---|"]
  if not held_out:
    return lines[:1] + ["- none (no prepared dataset with a test split)"]
  test = (facts["files_by_split"] or {}).get("test", [])
  for identity in held_out:
    mine = [rel for rel, _, who in test if who == identity]
    lines.append(f"| {identity} | " + (", ".join(f"`{r}`" for r in mine) or "none used") + " |")
  return lines


def _config_lines(config: dict, config_path) -> list:
  model, loss = config["model"], config["loss"]
  motion = {k: v for k, v in model.items() if k.startswith("motion")}
  lines = ["### Config",
           f"- config file: `{config_path}`" if config_path else "- config file: not given (--config)",
           "- the full resolved config: [`config.json`](config.json), beside this card",
           f"- resolution {config['resolution']}, global batch {config['global_batch_size']}, "
           f"{config['num_train_steps']} steps, compute dtype {config['compute_dtype']}",
           f"- motion: {_settings(motion)}",
           f"- loss weights, first kind (a1..a5): {_settings(loss['first'])}; perturbed kind (a6..a10): "
           f"{_settings(loss['perturbed'])}; " + _settings({k: loss[k] for k in ("feature_matching", "blend_prior",
                                                                                 "decoder_pixel") if k in loss}),
           f"- sample kinds (same video, other person, perturbed): {tuple(config['data']['kind_ratios'])}",
           f"- optimizer: {_settings(config['optimizer'])}"]
  return lines


def _training_lines(workdir, export, command) -> list:
  lines = ["### Training", f"- workdir: `{workdir}`"]
  if command:
    lines.append(f"- command: `{command}`")
  step = latest_checkpoint_step(workdir)
  exported = f"; the exported weights are step {export['step']} ({export['weights']})" if export else ""
  lines.append(f"- steps trained: {step if step is not None else 'no checkpoint'} (newest checkpoint){exported}")
  runs = training_runs(workdir)
  if runs:
    total = sum(r["end"] - r["start"] for r in runs)
    lines.append(f"- wall time: {_duration(total)} in {len(runs)} run{'s' if len(runs) > 1 else ''} of train.py, "
                 f"{_utc(runs[0]['start'])} to {_utc(runs[-1]['end'])} (TensorBoard event files in "
                 f"`{workdir}/tensorboard`: each run from its first event, written once the model is built, to its "
                 "last)")
    if len(runs) > 1:
      lines += [f"  - run {i + 1}: {_duration(r['end'] - r['start'])}, to step {r['last_step']}"
                for i, r in enumerate(runs)]
  else:
    lines.append(f"- wall time: not recorded (no TensorBoard event file in `{workdir}/tensorboard`)")
  return lines


def _machine_lines(machine: dict) -> list:
  return ["### Machine", "As seen by this command, which the recipe runs right after training on the machine that "
          "trained:", f"- CPU: {machine['cpu']}, {machine['cores']} cores ({machine['cpu_flags']})",
          f"- jax {machine['jax']}, backend {machine['backend']}, devices: {', '.join(machine['devices'])}"]


def card_section(workdir, out, facts: dict, config: dict, config_path, machine: dict, command=None,
                 written_by=None) -> str:
  """The generated section (without its markers), Markdown."""
  export = _json(pathlib.Path(out, "export.json"))
  head = f"**Model card**, written by `{written_by}` from the files it names; regenerate it, never edit it."
  parts = [[head], _data_lines(facts), _held_out_lines(facts), _config_lines(config, config_path),
           _training_lines(workdir, export, command), _machine_lines(machine)]
  return "\n\n".join("\n".join(p).strip("\n") for p in parts) + "\n"


def _new_card(out) -> str:
  return (f"# {out}: a facegen-jax generator\n\nThe EMA weights of a facegen-jax generator, exported by "
          "experiments/export.py; load it with `Reenactor.from_checkpoint`.\n")


def _with_evaluation_markers(text: str) -> str:
  """`text` with both pairs of evaluate.py's markers: the cross pair after the self-reenactment
  table, or both in an Evaluation section at the end."""
  self_begin, self_end, cross_begin, cross_end = EVAL_MARKERS
  if cross_begin in text:
    return text
  if self_end in text:
    at = text.index(self_end) + len(self_end)
    return text[:at] + f"\n\n{cross_begin}\n{cross_end}" + text[at:]
  if self_begin in text:
    raise ValueError(f"'{self_begin}' without '{self_end}'")
  return text.rstrip("\n") + f"\n\n## Evaluation\n\n{self_begin}\n{self_end}\n\n{cross_begin}\n{cross_end}\n"


def _after_first_paragraph(text: str) -> int:
  """Index just after the first paragraph that is not a heading (the end of the text if none)."""
  lines = text.split("\n")
  pos, in_paragraph = 0, False
  for line in lines:
    blank = not line.strip()
    if in_paragraph and blank:
      return pos
    if not blank and not line.startswith("#"):
      in_paragraph = True
    pos += len(line) + 1
  return len(text)


def update_card(path, section: str, evaluation_markers: bool = True) -> str:
  """Writes `section` between the markers of the card `path` (started when missing; the markers
  inserted after its first paragraph when absent), atomically; returns `path`. With
  `evaluation_markers`, evaluate.py's markers are added where absent."""
  path = pathlib.Path(path)
  text = path.read_text() if path.exists() else _new_card(path.parent.as_posix())
  if evaluation_markers:
    text = _with_evaluation_markers(text)
  if BEGIN not in text or END not in text:
    at = _after_first_paragraph(text)
    text = text[:at].rstrip("\n") + f"\n\n{BEGIN}\n{END}\n\n" + text[at:].lstrip("\n")
  start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
  if end < start:
    raise ValueError(f"{path}: '{END}' comes before '{BEGIN}'")
  text = text[:start] + "\n" + section.rstrip("\n") + "\n" + text[end:]
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".partial")
  tmp.write_text(text)
  os.replace(tmp, path)
  return str(path)


def write_card(workdir, out, input_dir=None, data_dir=None, config_path=None, command=None, written_by=None,
               evaluation_markers: bool = True) -> str:
  """Reads every file the card needs and writes its section into `out`/README.md; returns the path."""
  config = _json(pathlib.Path(out, "config.json")) or _json(pathlib.Path(workdir, "config.json"))
  if config is None:
    raise FileNotFoundError(f"no config.json in {out} or {workdir}: export the model first (experiments/export.py)")
  if data_dir is None and config["data"]["source"] == "tfds":
    data_dir = config["data"]["data_dir"]
  facts = data_facts(input_dir, data_dir, config["resolution"])
  section = card_section(workdir, out, facts, config, config_path, machine_facts(), command,
                         written_by or "python experiments/write_model_card.py")
  return update_card(pathlib.Path(out, "README.md"), section, evaluation_markers)


def main(argv):
  del argv
  shown = [a for a in sys.argv[1:] if not a.startswith("--command=")]  # the command has a line of its own
  written_by = shlex.join(["python", "experiments/write_model_card.py", *shown])
  path = write_card(FLAGS.workdir, FLAGS.out, FLAGS.input, FLAGS.data_dir, FLAGS.config, FLAGS.command, written_by,
                    FLAGS.evaluation_markers)
  print(f"updated {path}")


if __name__ == "__main__":
  entry.run(main)
