"""Writes a protocol's Results: metrics.json, metrics.md, per_video.csv and grid.png."""

import csv
import json
import math
import os
from typing import Dict

import numpy as np
from PIL import Image, ImageDraw

from facegen_jax.evaluation.protocols import METRICS, Results

OUTPUT_FILES = ("metrics.json", "metrics.md", "per_video.csv", "grid.png")


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
  lines.append("| method | frames | " + " | ".join(f"{c} {arrows[METRICS[c]]}" for c in cols) + " |")
  lines.append("|---" * (len(cols) + 2) + "|")
  for name in results.methods:
    row = results.summary[name]
    lines.append(f"| {name} | {row['frames']} | " + " | ".join(_fmt(row.get(c)) for c in cols) + " |")
  lines += ["", *(f"- {k}: {v}" for k, v in info.items())]
  if results.skipped:
    lines += ["", "Skipped:", *(f"- {s}" for s in results.skipped)]
  return "\n".join(lines) + "\n"


README_BEGIN = "<!-- evaluate.py table: begin (generated, do not edit) -->"
README_END = "<!-- evaluate.py table: end -->"


def readme_block(markdown: str, command: str) -> str:
  """metrics.md as a README section body: the table and its notes under the command that made it
  (the H1 title becomes a bold line; machine-specific paths are dropped)."""
  lines = markdown.rstrip("\n").split("\n")
  title = lines[0].lstrip("# ").strip()
  body = [ln for ln in lines[1:] if not ln.startswith("- videos:")]
  return "\n".join([f"**{title}**, written by `{command}`:", *body])


def update_readme(path: str, block: str) -> str:
  """Replaces the text between README_BEGIN and README_END in `path` with `block` (atomically)."""
  with open(path) as f:
    text = f.read()
  start, end = text.find(README_BEGIN), text.find(README_END)
  if start < 0 or end < start:
    raise ValueError(f"{path} has no '{README_BEGIN}' ... '{README_END}' markers: add them where the "
                     "evaluation table belongs")
  new = text[:start + len(README_BEGIN)] + "\n" + block.rstrip("\n") + "\n" + text[end:]
  tmp = path + ".partial"
  with open(tmp, "w") as f:
    f.write(new)
  os.replace(tmp, path)
  return path


def write_csv(results: Results, path: str):
  cols = ["video", "method", "frames"] + [c for c in _columns(results) if c != "fid"]
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
  """Writes the four outputs into `output_dir`; returns name -> path."""
  os.makedirs(output_dir, exist_ok=True)
  paths = {name: os.path.join(output_dir, name) for name in OUTPUT_FILES}
  with open(paths["metrics.json"], "w") as f:
    json.dump(to_json(results, info), f, indent=2)
  with open(paths["metrics.md"], "w") as f:
    f.write(to_markdown(results, info))
  write_csv(results, paths["per_video.csv"])
  Image.fromarray(grid_image(results)).save(paths["grid.png"])
  return paths

