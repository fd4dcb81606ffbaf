"""`facegen-app` / `python experiments/app.py`: the web app (Gradio) for reenacting a photo.

  facegen-app                                    # the shipped weights, http://127.0.0.1:7860
  facegen-app --checkpoint=workdirs/demo --checkpoint=weights/demo_128 --port=8080

Upload a source photo and a driving photo or video (or pick a bundled example), choose the motion,
detail blend, paste-back, colour matching, side-by-side, personalization steps and the model; the
page shows a progress bar of the work (the tqdm bars of tracking and generation, through Gradio's
`track_tqdm`), then the result (a video keeps the driving clip's frame rate and audio) and, for a
driving video, the grid PNG to download. A bad input (no face, a corrupt or truncated file, an
image too large to decode safely, a video without frames) is a message in the page, and the app
serves the next request. Every request runs on this machine, on files it uploads; the app listens
on 127.0.0.1 unless --host says otherwise, and sends no usage statistics.
"""

import os
import pathlib
import shutil
import tempfile
import threading
from typing import Dict, Optional, Sequence

from absl import app, flags, logging

from facegen_jax import entry
from facegen_jax.inference import batch
from facegen_jax.inference.reenactor import Reenactor
from facegen_jax.landmarks import load_image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no usage statistics

REPO = pathlib.Path(__file__).resolve().parents[2]
SHIPPED_WEIGHTS = REPO / "weights" / "demo_128"
SAMPLES = REPO / "sample_data"
# Bundled examples: (source photo, driving photo or clip) under sample_data/.
EXAMPLES = (("barack_obama__face_recognition__obama.jpg", "lp_d12_man__liveportrait__d12.mp4"),
            ("jianzhu_guo__3ddfa_v2__JianzhuGuo.jpg", "lp_d18_d19_man__liveportrait__d19.jpg"))

flags.DEFINE_multi_string("checkpoint", [str(SHIPPED_WEIGHTS)], "Models to offer: training workdirs or export "
                          "directories (repeat the flag for several; default: the shipped weights).")
flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: every network interface).")
flags.DEFINE_integer("port", 7860, "Port to listen on.")
flags.DEFINE_integer("max_upload_mb", 200, "Largest upload accepted, in MB.")
FLAGS = flags.FLAGS


class Models:
  """The models of the app by name (the folder's name), each loaded on first use and kept."""

  def __init__(self, paths: Sequence[str]):
    self.paths: Dict[str, str] = {}
    for path in paths:
      name = os.path.basename(os.path.normpath(path))
      self.paths[name if name not in self.paths else path] = path
    self._loaded: Dict[str, Reenactor] = {}
    self._lock = threading.Lock()

  @property
  def names(self):
    return list(self.paths)

  def get(self, name: str) -> Reenactor:
    with self._lock:
      if name not in self._loaded:
        self._loaded[name] = Reenactor.from_checkpoint(self.paths[name])
      return self._loaded[name]


def _message(error: Exception, uploads: Sequence[Optional[str]]) -> str:
  """The error's text with each uploaded file named by its own name, not its temporary path."""
  text = str(error)
  for path in uploads:
    if path:
      text = text.replace(str(path), os.path.basename(path))
  return text


def reenact_request(models: Models, source: Optional[str], driving: Optional[str], model: str, motion: str,
                    blend: bool, paste_back: bool, color_match: bool, side_by_side: bool, finetune_steps: int,
                    work_dir: Optional[str] = None):
  """One request of the page: `(video or None, image or None, grid PNG or None, a line saying what
  was made)`, written into a new folder of `work_dir` (default: the system's temporary folder).
  Raises `gradio.Error` with the reason for a bad input."""
  import gradio as gr  # pylint: disable=import-outside-toplevel
  if not source or not driving:
    raise gr.Error("Upload a source photo and a driving photo or video (or pick an example).")
  try:
    kind = batch.file_kind(driving)
  except ValueError as e:
    raise gr.Error(_message(e, [driving])) from e
  options = batch.Options(motion=motion, blend=bool(blend), paste_back=bool(paste_back),
                          color_match=bool(color_match), side_by_side=bool(side_by_side),
                          finetune_steps=int(finetune_steps or 0))
  out_dir = tempfile.mkdtemp(prefix="request_", dir=work_dir)
  output = os.path.join(out_dir, "result.mp4" if kind == "video" else "result.png")
  grid = os.path.join(out_dir, "grid.png") if kind == "video" else None
  try:
    source_image = load_image(source)
    reenactor = batch.for_source(models.get(model), source_image, options)
    result = batch.reenact_file(reenactor, source_image, driving, output, options, grid_path=grid, progress=True)
  except batch.INPUT_ERRORS as e:
    logging.warning("request failed: %s", e)
    raise gr.Error(_message(e, [source, driving]), duration=None) from e
  if result.kind == "image":
    return None, result.output, None, "A photo in the driving pose."
  audio = "its audio kept" if result.has_audio else "no audio in the driving clip"
  faceless = f", {result.frames_without_face} frames without a face" if result.frames_without_face else ""
  return (result.output, None, result.grid,
          f"{result.frames} frames at {result.fps:g} fps, {audio}{faceless}.")


def build(models: Models, work_dir: str):
  """The page (`gradio.Blocks`). Requests write into folders of `work_dir`; each request first
  removes the folders of the requests before it (the page serves copies from Gradio's cache, whose
  files older than two hours are removed every hour)."""
  import gradio as gr  # pylint: disable=import-outside-toplevel

  def run(source, driving, model, motion, blend, paste_back, color_match, side_by_side, finetune_steps,
          progress=gr.Progress(track_tqdm=True)):  # pylint: disable=unused-argument
    for old in os.listdir(work_dir):  # one request at a time (the queue's concurrency limit is 1)
      shutil.rmtree(os.path.join(work_dir, old), ignore_errors=True)
    return reenact_request(models, source, driving, model, motion, blend, paste_back, color_match, side_by_side,
                           finetune_steps, work_dir)

  media = list(batch.IMAGE_EXTENSIONS) + [".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"]
  with gr.Blocks(title="facegen-jax", delete_cache=(3600, 7200)) as page:
    gr.Markdown("# facegen-jax: face reenactment\nThe person of the source photo, in the pose and expression "
                "of the driving photo or video.")
    with gr.Row():
      with gr.Column():
        source = gr.File(label="Source photo", file_types=list(batch.IMAGE_EXTENSIONS), type="filepath",
                         elem_id="source")
        driving = gr.File(label="Driving photo or video", file_types=media, type="filepath", elem_id="driving")
        model = gr.Dropdown(models.names, value=models.names[0], label="Model", elem_id="model")
        motion = gr.Radio(["relative", "absolute"], value="relative", label="Motion (driving videos)",
                          info="relative: the source's face shape with the driving motion; absolute: the driving "
                          "landmarks as they are")
        with gr.Row():
          blend = gr.Checkbox(False, label="Detail blend")
          paste_back = gr.Checkbox(True, label="Paste back into the photo")
          color_match = gr.Checkbox(False, label="Match colours")
          side_by_side = gr.Checkbox(False, label="Side by side")
        finetune_steps = gr.Slider(0, 200, value=0, step=10, label="Personalization steps (0: none; slow on CPU)")
        button = gr.Button("Reenact", variant="primary", elem_id="run")
      with gr.Column():
        video = gr.Video(label="Result video", elem_id="result_video", interactive=False, height=480)
        status = gr.Markdown(elem_id="status")
        grid = gr.File(label="Grid picture (PNG)", elem_id="grid", interactive=False)
        image = gr.Image(label="Result photo", elem_id="result_image", interactive=False, height=240)
    examples = [[str(SAMPLES / s), str(SAMPLES / d)] for s, d in EXAMPLES
                if (SAMPLES / s).exists() and (SAMPLES / d).exists()]
    if examples:
      gr.Examples(examples, [source, driving], label="Bundled examples")
    button.click(run, [source, driving, model, motion, blend, paste_back, color_match, side_by_side, finetune_steps],
                 [video, image, grid, status])
  return page


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  missing = [p for p in FLAGS.checkpoint if not os.path.isdir(p)]
  if missing:
    raise SystemExit(f"error: no model at {', '.join(missing)}; give --checkpoint=DIR (a training workdir or an "
                     "export directory)")
  import gradio as gr  # pylint: disable=import-outside-toplevel
  work_dir = tempfile.TemporaryDirectory(prefix="facegen_app_")  # pylint: disable=consider-using-with
  page = build(Models(FLAGS.checkpoint), work_dir.name)
  page.queue(default_concurrency_limit=1)
  page.launch(server_name=FLAGS.host, server_port=FLAGS.port, share=False, max_file_size=f"{FLAGS.max_upload_mb}mb",
              ssr_mode=False, mcp_server=False, theme=gr.themes.Base(), allowed_paths=[str(SAMPLES)])


def run():
  """Entry point of `facegen-app` and experiments/app.py."""
  entry.run(main, flag_modules=[__name__])
