r"""Reenactment speed per runtime: time per stage, their sum, end to end and peak RSS, in one run.

  python benchmarks/reenact.py [--cases=default,shipped] [--runtimes=jax,jax_export,onnxruntime,torch]
      [--frames=60] [--generator_only] [--rss_seconds=15] [--long_clip] [--out=BENCHMARKS.md]

Cases: "default", experiments/configs/default.py at 256x256 with freshly initialised weights (as
fast as trained ones); "shipped", weights/demo_128 (128x128, with motion). Each case's generator is
exported (inference/export_formats.py) into a temporary folder; the runtimes (inference/runtimes.py):
jax (GeneratorModel: oneDNN convolutions on CPU), jax_export (the StableHLO program), onnxruntime
(the ONNX graph; $FACEGEN_ORT_PROVIDERS picks the providers, CUDA where installed), and torch (the
PyTorch reference generator of benchmarks/torch_reference.py, only for a generator without motion).

Stages, each timed alone over the same frames: decode (PyAV), landmarks (detect every 5th frame +
tracking + smoothing), generate (per runtime: batches of 8, after one untimed batch of each size,
which JAX compiles), blend (landmarks of the output + the detail post-process of docs/method.md), paste-back,
encode (H.264 + audio copy). Then `Reenactor.reenact_video` end to end per runtime (blend on; its
stages overlap: inference/stages.py), with the process's peak RSS after it (getrusage: a running
maximum over the run, so a later row includes what earlier rows held).

For onnxruntime, the share of its kernel time per ONNX operator type (onnxruntime's profiler, one
batch) says where its time goes, and the graph as jax2onnx writes it (transposed convolutions as
ConvTranspose; the export rewrites them as sub-pixel convolutions) is timed beside it. The ratio
of onnxruntime's generate time to JAX's is printed per case. --rss_seconds=10,20 also reenacts
720p clips of those lengths (the bundled clip resized and looped, written first, one frame in
memory at a time) with the shipped model through `reenact_video`'s pipeline, each in a process of
its own, and reports their wall time and peak RSS: flat in the clip's length when the pipeline's
memory is bounded by its queues. --long_clip adds the 2-minute one and checks it against 1.5 GB.

--generator_only times only the generators, on synthetic faces' landmarks (no dlib, no video):
the figures a GPU machine without dlib can give. With --out, the tables go into that file between
`<!-- inference:begin -->` and `<!-- inference:end -->`.
"""

import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
from absl import flags  # pylint: disable=wrong-import-position

from benchmarks import common  # pylint: disable=wrong-import-position
from benchmarks.run import cpu_model  # pylint: disable=wrong-import-position
from facegen_jax import entry  # pylint: disable=wrong-import-position

flags.DEFINE_list("cases", ["default", "shipped"], "default (256x256, untrained) and/or shipped (weights/demo_128).")
flags.DEFINE_list("runtimes", ["jax", "jax_export", "onnxruntime", "torch"], "Runtimes to time.")
flags.DEFINE_string("source", "sample_data/jianzhu_guo__3ddfa_v2__JianzhuGuo.jpg", "Source photo.")
flags.DEFINE_string("driving", "sample_data/lp_d12_man__liveportrait__d12.mp4", "Driving clip.")
flags.DEFINE_integer("frames", 60, "Driving frames to use.")
flags.DEFINE_integer("batch", 8, "Generator batch.")
flags.DEFINE_bool("generator_only", False, "Only the generators, on synthetic landmarks (no dlib, no video).")
flags.DEFINE_string("out", None, "Markdown file to write the section into.")
flags.DEFINE_list("rss_seconds", [], "Lengths (s) of 720p clips whose end-to-end peak RSS to measure.")
flags.DEFINE_bool("long_clip", False, "Also the 2-minute 720p clip (LONG_CLIP_SECONDS), against RSS_LIMIT_MIB.")
flags.DEFINE_string("rss_child", None, "Internal: reenact this clip with the shipped model and print the peak RSS.")
FLAGS = flags.FLAGS
BEGIN, END = "<!-- inference:begin -->", "<!-- inference:end -->"
PROFILES = []  # onnxruntime's time per operator type, a line per case
RATIOS = []  # onnxruntime's generate time over JAX's, a line per case
SHARES = {}  # (case, runtime) -> onnxruntime's kernel time by operator type
LONG_CLIP_SECONDS = 120
RSS_LIMIT_MIB = 1536  # issue 20: under 1.5 GB for a 2-minute 720p clip
CONV_TRANSPOSE = "onnxruntime, ConvTranspose"  # the graph without the sub-pixel rewrite


def _case_model(name: str):
  from facegen_jax.inference.generator_model import GeneratorModel, init_generator_variables  # pylint: disable=import-outside-toplevel
  if name == "shipped":
    return GeneratorModel.load(str(common.REPO_ROOT / "weights" / "demo_128"))
  if name != "default":
    raise ValueError(f"--cases: unknown case {name!r}; choose default or shipped")
  config = common.benchmark_config("default", 256, FLAGS.batch)
  return GeneratorModel(config, init_generator_variables(config, jax.random.PRNGKey(0)))


def _timed_cpu(fn):
  """(fn(), wall seconds, this process's CPU seconds, all threads)."""
  start, cpu = time.perf_counter(), time.process_time()
  out = fn()
  return out, time.perf_counter() - start, time.process_time() - cpu


def _timed(fn):
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


def _peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _TorchGenerator:
  """The PyTorch reference generator with `GeneratorModel.outputs`' interface (timing only)."""

  def __init__(self, model):
    import torch  # pylint: disable=import-outside-toplevel
    from benchmarks import torch_reference  # pylint: disable=import-outside-toplevel
    self.torch = torch
    self.net = torch_reference.Generator(model.config).eval()
    self.resolution, self.mask_per_part, self.mask_channels = model.resolution, model.mask_per_part, model.mask_channels

  def outputs(self, sources, masks, source_landmarks, driving_landmarks):
    del source_landmarks, driving_landmarks  # the reference has no motion
    t = self.torch
    with t.no_grad():
      s = t.from_numpy(np.ascontiguousarray(sources.transpose(0, 3, 1, 2), np.float32) / 127.5 - 1.0)
      m = t.from_numpy(np.ascontiguousarray(masks.transpose(0, 3, 1, 2), np.float32) / 255.0)
      out = self.net(s, m)["generated"].numpy().transpose(0, 2, 3, 1)
    return {"generated": np.clip(np.round((out + 1.0) * 127.5), 0, 255).astype(np.uint8)}


def _generators(model, folder: str) -> dict:
  """runtime -> generator (those of --runtimes that apply to `model`)."""
  from facegen_jax.inference import export_formats, runtimes  # pylint: disable=import-outside-toplevel
  wanted = list(FLAGS.runtimes)
  formats = [f for f, r in (("jax", "jax_export"), ("onnx", "onnxruntime")) if r in wanted]
  if formats:
    export_formats.export(model, folder, formats)
  out = {}
  for runtime in wanted:
    if runtime == "jax":
      out[runtime] = model
    elif runtime in ("jax_export", "onnxruntime"):
      out[runtime] = runtimes.load_generator(folder, runtime=runtime)
      if runtime == "onnxruntime":  # for comparison: the graph without the sub-pixel rewrite
        plain = os.path.join(folder, "convtranspose")
        os.makedirs(plain)
        out[CONV_TRANSPOSE] = runtimes.load_generator(export_formats.export_onnx(model, plain, subpixel=False))
    elif runtime == "torch":
      if model.config.model.motion == "none":
        out[runtime] = _TorchGenerator(model)
    else:
      raise ValueError(f"--runtimes: unknown runtime {runtime!r}")
  return out


def _time_generator(generator, crops, source_landmarks, landmarks, masks) -> tuple:
  """(wall, CPU) seconds to generate every frame in batches of --batch (one batch of each size
  first, untimed: JAX compiles a program per batch size, the last batch's too)."""
  b = FLAGS.batch
  for size in sorted({min(b, len(landmarks)), len(landmarks) % b} - {0}):
    generator.outputs(crops[:size], masks[:size], source_landmarks[:size], landmarks[:size])

  def run():
    for i in range(0, len(landmarks), b):
      generator.outputs(crops[i:i + b], masks[i:i + b], source_landmarks[i:i + b], landmarks[i:i + b])
  return _timed_cpu(run)[1:]


def _onnx_profile(generator, crops, source_landmarks, landmarks, masks) -> dict:
  """onnxruntime's kernel time by operator type for one batch, as shares (largest first)."""
  import json  # pylint: disable=import-outside-toplevel
  import onnxruntime as ort  # pylint: disable=import-outside-toplevel
  options = ort.SessionOptions()
  options.enable_profiling = True
  with tempfile.TemporaryDirectory() as tmp:
    options.profile_file_prefix = os.path.join(tmp, "ort")
    session = ort.InferenceSession(generator.path, options, providers=generator.providers)
    b = FLAGS.batch
    from facegen_jax.io import images  # pylint: disable=import-outside-toplevel
    inputs = [images.to_float_image(crops[:b]), images.to_float_mask(masks[:b]), source_landmarks[:b], landmarks[:b]]
    flow = generator.tps_flow(source_landmarks[:b], landmarks[:b])  # with motion, the fifth input
    feeds = dict(zip([i.name for i in session.get_inputs()], inputs + ([] if flow is None else [flow])))
    session.run(None, feeds)
    with open(session.end_profiling()) as f:
      events = json.load(f)
  per_op = {}
  for e in events:
    if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
      op = e.get("args", {}).get("op_name", "?")
      per_op[op] = per_op.get(op, 0) + e["dur"]
  total = sum(per_op.values()) or 1
  return {op: t / total for op, t in sorted(per_op.items(), key=lambda kv: -kv[1])}


def _generator_only_rows(name, model, generators) -> list:
  from facegen_jax.landmarks.masks import render_masks  # pylint: disable=import-outside-toplevel
  faces = common.synthetic_batch(model.config, FLAGS.frames)
  lms = np.asarray(faces["driving_landmarks"], np.float32)
  src_lms = np.asarray(faces["source_landmarks"], np.float32)
  crops = np.asarray(faces["source"], np.uint8)  # the training batch format: uint8 crops
  masks = render_masks(lms, model.resolution, per_part=model.mask_per_part)
  rows = []
  times = {}
  for runtime, generator in generators.items():
    t = times[runtime] = _time_generator(generator, crops, src_lms, lms, masks)[0]
    rows.append(f"| {name} | {model.resolution} | {runtime} | {1000 * t / len(lms):.1f} |")
    _profile(name, runtime, generator, crops, src_lms, lms, masks)
  _ratio(name, times, model)
  return rows


def _profile(name, runtime, generator, crops, src_lms, lms, masks) -> None:
  if runtime in ("onnxruntime", CONV_TRANSPOSE):
    shares = _onnx_profile(generator, crops, src_lms, lms, masks)
    SHARES[(name, runtime)] = shares
    PROFILES.append(f"{name} ({'sub-pixel' if runtime == 'onnxruntime' else 'ConvTranspose'} graph): "
                    + ", ".join(f"{op} {100 * t:.0f}%" for op, t in list(shares.items())[:6]))


def _ratio(name, times: dict, model) -> None:
  """onnxruntime's generate time over JAX's for case `name` (and the ConvTranspose graph's), and
  where onnxruntime is slower, the share of its kernel time its convolutions take."""
  if "jax" in times and "onnxruntime" in times:
    ratio = times["onnxruntime"] / times["jax"]
    line = f"{name}: {ratio:.2f}x"
    if CONV_TRANSPOSE in times:
      line += f" (ConvTranspose graph {times[CONV_TRANSPOSE] / times['jax']:.2f}x)"
    shares = SHARES.get((name, "onnxruntime"), {})
    if ratio > 1.0 and shares:
      from facegen_jax.models.conv import resolve_impl  # pylint: disable=import-outside-toplevel
      line += (f", slower: {100 * shares.get('Conv', 0.0):.0f}% of onnxruntime's kernel time is its Conv kernels, "
               f"which JAX runs on conv_impl {resolve_impl(model.config.model.conv_impl)!r}")
    RATIOS.append(line)


def _full_rows(name, model, generators) -> tuple:
  from facegen_jax.inference import paste_back  # pylint: disable=import-outside-toplevel
  from facegen_jax.inference.reenactor import Reenactor, fill_missing  # pylint: disable=import-outside-toplevel
  from facegen_jax.io import video as video_io  # pylint: disable=import-outside-toplevel
  from facegen_jax.landmarks import load_image  # pylint: disable=import-outside-toplevel
  from facegen_jax.landmarks.masks import render_masks  # pylint: disable=import-outside-toplevel
  from facegen_jax.landmarks.video import track_frames  # pylint: disable=import-outside-toplevel
  reenactor = Reenactor(model)
  source = reenactor.prepare_source(load_image(FLAGS.source))
  info = video_io.probe(FLAGS.driving)
  frames, t_decode, c_decode = _timed_cpu(lambda: list(video_io.read_frames(FLAGS.driving, FLAGS.frames)))
  n = len(frames)
  track, t_landmarks, c_landmarks = _timed_cpu(lambda: track_frames(frames, fps=float(info.fps), detect_every=5))
  lms = reenactor.transfer_motion(source, fill_missing(track.landmarks, track.found), track.found, "relative")
  crops = np.repeat(source.crop[None], n, 0)
  src_lms = np.repeat(source.landmarks[None], n, 0)
  masks = render_masks(lms, model.resolution, per_part=model.mask_per_part)
  faces = reenactor.generate(crops, source.landmarks, lms)
  blended, t_blend, c_blend = _timed_cpu(lambda: [reenactor._finish(source, f, l, blend=True, paste_back=False)  # pylint: disable=protected-access
                                     for f, l in zip(faces, lms)])
  pasted, t_paste, c_paste = _timed_cpu(lambda: [paste_back.paste_back(source.image, f, source.transform.box) for f in blended])
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    _, t_encode, c_encode = _timed_cpu(lambda: video_io.write_video(os.path.join(tmp, "o.mp4"), pasted, info.fps,
                                                      audio_from=FLAGS.driving))
    shared = t_decode + t_landmarks + t_blend + t_paste + t_encode
    times = {}
    for runtime, generator in generators.items():
      t_generate, c_generate = _time_generator(generator, crops, src_lms, lms, masks)
      times[runtime] = t_generate
      # No overlap beats the slowest stage, nor the stages' CPU time spread over every core.
      bound = max(t_decode, t_landmarks, t_generate, t_blend, t_paste, t_encode,
                  (c_decode + c_landmarks + c_generate + c_blend + c_paste + c_encode) / os.cpu_count())
      _profile(name, runtime, generator, crops, src_lms, lms, masks)
      if runtime not in ("torch", CONV_TRANSPOSE):  # these time the generator only
        r = Reenactor(generator, detector=reenactor.detector)
        report, t_total = _timed(lambda r=r: r.reenact_video(load_image(FLAGS.source), FLAGS.driving,
                                                              os.path.join(tmp, "e2e.mp4"), blend=True, max_frames=n,
                                                              progress=False, overwrite=True))
        total = shared + t_generate
        e2e = (f"{1000 * t_total / report.frames:.1f} | {report.frames / t_total:.2f} | {t_total / total:.2f} | "
               f"{bound / total:.2f} | {_peak_rss_mib():.0f}")
      else:
        e2e = "n/a | n/a | n/a | n/a | n/a"
      rows.append(f"| {name} | {model.resolution} | {runtime} | {1000 * t_decode / n:.1f} | {1000 * t_landmarks / n:.1f} "
                  f"| {1000 * t_generate / n:.1f} | {1000 * t_blend / n:.1f} | {1000 * t_paste / n:.1f} | "
                  f"{1000 * t_encode / n:.1f} | {1000 * (shared + t_generate) / n:.1f} | {e2e} |")
  _ratio(name, times, model)
  clip = f"{n} frames of {FLAGS.driving} ({info.width}x{info.height}), source {source.image.shape[1]}x{source.image.shape[0]}"
  return rows, clip


def _long_clip(path: str, seconds: int) -> int:
  """Writes a 1280x720 clip of `seconds` (the bundled driving clip resized onto a 720p frame and
  looped, decoded again each loop: one frame in memory); returns its frame count."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from facegen_jax.io import video as video_io  # pylint: disable=import-outside-toplevel
  fps = video_io.probe(FLAGS.driving).fps
  total = int(seconds * float(fps))

  def frames():
    count = 0
    while count < total:
      for frame in video_io.read_frames(FLAGS.driving, total - count):
        canvas = np.zeros((720, 1280, 3), np.uint8)
        canvas[:, 280:1000] = np.asarray(Image.fromarray(frame).resize((720, 720)))
        count += 1
        yield canvas
  return video_io.write_video(path, frames(), fps)


def _rss_child(clip: str) -> None:
  from facegen_jax.inference.reenactor import Reenactor  # pylint: disable=import-outside-toplevel
  from facegen_jax.landmarks import load_image  # pylint: disable=import-outside-toplevel
  reenactor = Reenactor.from_checkpoint(str(common.REPO_ROOT / "weights" / "demo_128"))
  with tempfile.TemporaryDirectory() as tmp:
    report, t = _timed(lambda: reenactor.reenact_video(load_image(FLAGS.source), clip, os.path.join(tmp, "o.mp4"),
                                                       progress=False))
  print(f"RSS {report.frames} {t:.1f} {_peak_rss_mib():.0f}")


def _rss_rows() -> list:
  import subprocess  # pylint: disable=import-outside-toplevel
  rows = []
  lengths = [int(x) for x in FLAGS.rss_seconds] + ([LONG_CLIP_SECONDS] if FLAGS.long_clip else [])
  with tempfile.TemporaryDirectory() as tmp:
    for seconds in lengths:
      clip = os.path.join(tmp, f"clip_{seconds}s.mp4")
      _long_clip(clip, seconds)
      out = subprocess.run([sys.executable, os.path.abspath(__file__), f"--rss_child={clip}", f"--source={FLAGS.source}"],
                           capture_output=True, text=True, check=True, cwd=str(common.REPO_ROOT)).stdout
      os.remove(clip)
      _, frames, t, rss = [l for l in out.splitlines() if l.startswith("RSS ")][-1].split()
      limit = f"{'yes' if float(rss) < RSS_LIMIT_MIB else 'NO'} ({RSS_LIMIT_MIB})" if seconds == LONG_CLIP_SECONDS else ""
      length = f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"
      rows.append(f"| {length}, 1280x720 | {frames} | {float(t):.0f} | {int(frames) / float(t):.2f} | {rss} | {limit} |")
      print(rows[-1], flush=True)
  return rows


def main(argv):
  del argv
  if FLAGS.rss_child:
    _rss_child(FLAGS.rss_child)
    return
  start, load = time.time(), os.getloadavg()[0]
  rss = _rss_rows() if FLAGS.rss_seconds or FLAGS.long_clip else []
  rows, clips = [], []
  for name in FLAGS.cases:
    model = _case_model(name)
    with tempfile.TemporaryDirectory() as folder:
      generators = _generators(model, folder)
      if FLAGS.generator_only:
        rows += _generator_only_rows(name, model, generators)
      else:
        case_rows, clip = _full_rows(name, model, generators)
        rows += case_rows
        clips.append(clip)
      print("\n".join(rows[-len(generators):]), flush=True)
  device = jax.devices()[0].device_kind if jax.default_backend() != "cpu" else f"CPU: {cpu_model()}, {os.cpu_count()} cores"
  command = " ".join(["benchmarks/reenact.py"] + [("--out=..." if a.startswith("--out=") else a) for a in sys.argv[1:]])
  lines = [f"Written by `python {command}` in {time.time() - start:.0f} s. {device}; jax {jax.__version__}; "
           f"load average (1 min) {load:.1f} at start, {os.getloadavg()[0]:.1f} at end (a shared machine: figures are "
           "noisy; the rows of one case ran back to back).", ""]
  if FLAGS.generator_only:
    lines += ["| case | res | runtime | generate ms/frame (batch of 8) |", "|---|---|---|---|"] + rows
  else:
    lines += [f"Clip: {'; '.join(sorted(set(clips)))}. ms/frame per stage; sum = the stages one after the other; "
              "end to end = `reenact_video` (blend on), whose stages overlap; e2e / sum below 1 is the overlap; bound / "
              "sum: the least e2e / sum any overlap could reach (the slowest stage, or every stage's CPU time spread "
              f"over the {os.cpu_count()} cores, whichever is longer).", "",
              "| case | res | runtime | decode | landmarks | generate | blend | paste-back | encode | sum | end to end "
              "ms/frame | end to end frames/s | e2e / sum | bound / sum | peak RSS MiB |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"] + rows
  if RATIOS:
    lines += ["", "onnxruntime's generate time over JAX's (the same generator, this CPU): " + "; ".join(RATIOS) + "."]
  if PROFILES:
    lines += ["", "onnxruntime's kernel time by operator type (one batch): " + "; ".join(PROFILES) + "."]
  if rss:
    lines += ["", "`reenact_video` on long 720p clips (shipped model, JAX, blend off; written before, a process each; "
              "wall time and peak RSS of that process):", "",
              "| clip | frames | wall s | frames/s | peak RSS MiB | under 1.5 GB (MiB) |", "|---|---|---|---|---|---|"] + rss
  body = "\n".join(lines)
  print(body)
  if FLAGS.out:
    common.write_section(FLAGS.out, BEGIN, END, "Reenactment per runtime (`benchmarks/reenact.py`)", body)


if __name__ == "__main__":
  entry.run(main)
