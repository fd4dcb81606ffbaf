"""Writes a protocol's Results: metrics.json, metrics.md, per_video.csv and grid.png, and puts the
table into README files between the markers of its protocol (`readme_markers`)."""

import csv
import json
import math
import os
from typing import Dict, Tuple

import numpy as np
from PIL import Image, ImageDraw

from facegen_jax.evaluation.protocols import METRICS, Results
from facegen_jax.io import paths as paths_lib

OUTPUT_FILES = ("metrics.json", "metrics.md", "per_video.csv", "grid.png")
# The counts before the metrics in every table and CSV row: frames scored, and frames left out.
COUNTS = ("frames", "frames_without_face")


def _columns(results: Results):
  present = {k for row in results.summary.values() for k in row}
  return [k for k in METRICS if k in present]


def _plain(value):
  """JSON-safe: NaN/inf (e.g. AKD with no detected frame) become null."""
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def _fmt(value) -> str:
  if isinstance(value, str):
    return value
  if isinstance(value, int):
    return str(value)
  if value is None or not math.isfinite(value):
    return "n/a"
  return f"{value:.4f}"


def to_json(results: Results, info: Dict[str, object]) -> dict:
  return {
      "protocol": results.protocol,
      "resolution": results.resolution,
      "methods": results.methods,
      **info,
      "better": {k: METRICS[k] for k in _columns(results)},
      "summary": {m: {k: _plain(v) for k, v in row.items()} for m, row in results.summary.items()},
      "per_video": [{k: _plain(v) for k, v in row.items()} for row in results.per_video],
      "skipped": results.skipped,
  }


def to_markdown(results: Results, info: Dict[str, object]) -> str:
  cols = _columns(results)
  arrows = {"lower": "↓", "higher": "↑"}
  lines = [f"# {results.protocol}-reenactment at {results.resolution}x{results.resolution}", ""]
  header = ["method", *COUNTS, *(f"{c} {arrows[METRICS[c]]}" for c in cols)]
  lines.append("| " + " | ".join(header) + " |")
  lines.append("|---" * len(header) + "|")
  for name in results.methods:
    row = results.summary[name]
    lines.append("| " + " | ".join([name, *(_fmt(row[c]) for c in COUNTS), *(_fmt(row.get(c)) for c in cols)]) + " |")
  lines += ["", *(f"- {k}: {v}" for k, v in info.items())]
  if results.skipped:
    lines += ["", "Skipped:", *(f"- {s}" for s in results.skipped)]
  return "\n".join(lines) + "\n"


README_BEGIN = "<!-- evaluate.py table: begin (generated, do not edit) -->"
README_END = "<!-- evaluate.py table: end -->"
CROSS_README_BEGIN = "<!-- evaluate.py cross table: begin (generated, do not edit) -->"
CROSS_README_END = "<!-- evaluate.py cross table: end -->"


def readme_markers(protocol: str) -> Tuple[str, str]:
  """The (begin, end) markers between which a `protocol` run writes its table: one pair per
  protocol, so one README carries the self-reenactment and the cross-identity table."""
  return (CROSS_README_BEGIN, CROSS_README_END) if protocol == "cross" else (README_BEGIN, README_END)


def readme_block(markdown: str, command: str) -> str:
  """metrics.md as a README section body: the table and its notes under the command that made it
  (the H1 title becomes a bold line; machine-specific paths are dropped)."""
  lines = markdown.rstrip("\n").split("\n")
  title = lines[0].lstrip("# ").strip()
  body = [ln for ln in lines[1:] if not ln.startswith("- videos:")]
  return "\n".join([f"**{title}**, written by `{command}`:", *body])


def update_readme(path: str, block: str, protocol: str = "self") -> str:
  """Replaces the text between the markers of `protocol` (`readme_markers`) in `path` with `block`
  (atomically); the rest of the file, other tables included, is kept."""
  begin_marker, end_marker = readme_markers(protocol)
  with open(path) as f:
    text = f.read()
  start, end = text.find(begin_marker), text.find(end_marker)
  if start < 0 or end < start:
    raise ValueError(f"{path} has no '{begin_marker}' ... '{end_marker}' markers: add them where the "
                     f"{protocol}-reenactment table belongs")
  new = text[:start + len(begin_marker)] + "\n" + block.rstrip("\n") + "\n" + text[end:]
  tmp = path + ".partial"
  with open(tmp, "w") as f:
    f.write(new)
  os.replace(tmp, path)
  return path


def write_csv(results: Results, path: str):
  """One row per (clip, method): the counts, the metrics (FID is over all frames: summary only), then
  what a per-source method reports per clip (`personalization_seconds`; empty on other rows)."""
  cols = ["video", "method", *COUNTS] + [c for c in _columns(results) if c != "fid"]
  cols += sorted({k for row in results.per_video for k in row} - set(cols))
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
    writer.writeheader()
    for row in results.per_video:
      writer.writerow({k: _fmt(v) if isinstance(v, float) else v for k, v in row.items()})


def grid_image(results: Results, max_rows: int = 8) -> np.ndarray:
  """One row per clip (its middle frame): source | driving | each method (and a method's extra
  images, such as the model's warped source and blend mask), with a header line."""
  columns = list(results.samples[0][3]) if results.samples else list(results.methods)
  header = ["source", "driving", *columns]
  r = results.resolution
  rows = []
  for _, source, driving, outputs in results.samples[:max_rows]:
    rows.append(np.concatenate([source, driving, *(outputs[m] for m in columns)], axis=1))
  body = np.concatenate(rows, axis=0)
  title = Image.new("RGB", (body.shape[1], 20), (255, 255, 255))
  draw = ImageDraw.Draw(title)
  for i, text in enumerate(header):
    draw.text((i * r + 4, 4), text, fill=(0, 0, 0))
  return np.concatenate([np.asarray(title), body], axis=0)


def write_all(results: Results, output_dir: str, info: Dict[str, object]) -> Dict[str, str]:
  """Writes the four outputs into `output_dir` (a local folder or a URL: written locally, then
  copied there by `paths.writing_to`); returns name -> path."""
  with paths_lib.writing_to(output_dir) as folder:
    local = {name: os.path.join(folder, name) for name in OUTPUT_FILES}
    with open(local["metrics.json"], "w") as f:
      json.dump(to_json(results, info), f, indent=2)
    with open(local["metrics.md"], "w") as f:
      f.write(to_markdown(results, info))
    write_csv(results, local["per_video.csv"])
    Image.fromarray(grid_image(results)).save(local["grid.png"])
  return {name: str(paths_lib.as_path(output_dir) / name) for name in OUTPUT_FILES}

