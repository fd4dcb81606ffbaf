"""Exported generators (inference/export_formats.py, inference/runtimes.py) of both shipped weights:
the jax (StableHLO) and ONNX programs give the JAX generator's images within 1e-4 at batch 1 and 5
from one export, with motion and without, on the bundled clip's frames where the float32 spline is
worst (near-coincident driving landmarks: every runtime takes the float64 flow of landmarks/tps.py),
the ONNX file passes onnx.checker, damaged or mismatched exports are refused naming the file, and
the Reenactor reenacts the bundled clip from an ONNX export.

The layers changed so they export (nearest mask pyramid, linear upsampling) are checked to be
bit-identical to what they replaced.
"""

import json
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from facegen_jax.inference import Reenactor, export_formats, runtimes
from facegen_jax.inference.generator_model import GeneratorModel
from facegen_jax.inference.reenactor import fill_missing
from facegen_jax.io import images
from facegen_jax.io import video as video_io
from facegen_jax.landmarks import load_image, tps
from facegen_jax.landmarks.masks import render_masks
from facegen_jax.landmarks.video import track_video
from facegen_jax.models import layers, motion
from tests.conftest import REPO_ROOT

onnx = pytest.importorskip("onnx", reason="the onnx extra (pip install -e '.[onnx]')")
pytest.importorskip("onnxruntime", reason="the onnx extra")
pytest.importorskip("jax2onnx", reason="the onnx extra")

SOURCE = REPO_ROOT / "sample_data" / "barack_obama__face_recognition__obama.jpg"
DRIVING = REPO_ROOT / "sample_data" / "lp_d12_man__liveportrait__d12.mp4"
KINDS = {"motion": REPO_ROOT / "weights" / "demo_128", "spec": REPO_ROOT / "weights" / "demo_128_spec"}
TOLERANCE = 1e-4


def test_nearest_mask_resize_is_the_resize_it_replaced():
  mask = jax.random.uniform(jax.random.PRNGKey(0), (2, 128, 128, 3))
  for size in (64, 32, 16, 8):
    want = jax.image.resize(mask, (2, size, size, 3), "nearest")
    assert bool((layers.resize_mask(mask, size, "nearest") == want).all()), size


def test_linear_upsampling_is_the_resize_it_replaced():
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 4))
  for size in (32, 64, 128):
    want = jax.jit(lambda v, s=size: jax.image.resize(v, (2, s, s, 4), "linear"))(x)
    got = jax.jit(lambda v, s=size: motion.resize_linear(v, s))(x)
    assert bool((got == want).all()), size


@pytest.fixture(scope="module")
def frames():
  """Bundled frames as generator inputs: the held-out photo's crop x 5, posed by the 5 frames of
  the bundled clip (relative motion, as the Reenactor makes them) where the float32 spline of the
  generator's graph is furthest from the float64 one, and how far (px at R/2)."""
  reenactor = Reenactor(GeneratorModel.load(str(KINDS["spec"])))
  source = reenactor.prepare_source(load_image(str(SOURCE)))
  track = track_video(str(DRIVING), None)
  lms = reenactor.transfer_motion(source, fill_missing(track.landmarks, track.found), track.found, "relative")
  lms = lms.astype(np.float32)
  src = np.repeat(source.landmarks[None], len(lms), 0).astype(np.float32)
  r = reenactor.resolution
  in_graph = np.asarray(jax.jit(lambda s, d: motion.generator_flow(s, d, r))(src, lms))
  error = np.abs(in_graph - tps.host_flow(src, lms, r)).max(axis=(1, 2, 3)) * tps.flow_size(r) / 2
  worst = np.sort(np.argsort(-error)[:5])
  return {"crops": np.repeat(source.crop[None], 5, 0), "source_landmarks": src[worst], "landmarks": lms[worst],
          "float32_error_px": error[worst]}


@pytest.fixture(scope="module", params=sorted(KINDS))
def exported(request, frames, tmp_path_factory):
  """(kind, the shipped JAX generator, export folder with all three formats, float inputs)."""
  model = GeneratorModel.load(str(KINDS[request.param]))
  folder = tmp_path_factory.mktemp(f"export_{request.param}")
  written = export_formats.export(model, str(folder), export_formats.FORMATS)
  assert sorted(p.rsplit("/", 1)[1] for p in written) == ["generator.jax", "generator.msgpack", "generator.onnx"]
  inputs = (images.to_float_image(frames["crops"]),
            images.to_float_mask(render_masks(frames["landmarks"], model.resolution, per_part=model.mask_per_part)),
            frames["source_landmarks"], frames["landmarks"])
  return request.param, model, folder, inputs


def _jax_images(model, inputs):
  """The JAX runtime's images (with motion, on the float64 host flow, as GeneratorModel.outputs)."""
  flow = model.tps_flow(*inputs[2:])
  out = jax.jit(model.float_outputs)(model.variables, *(jnp.asarray(x) for x in inputs), flow)
  return {k: np.asarray(v) for k, v in out.items()}


def _max_error(got: dict, want: dict, batch: int) -> float:
  assert sorted(got) == sorted(want)
  return max(float(np.abs(got[k] - want[k][:batch]).max()) for k in want)


@pytest.mark.parametrize("runtime", ["jax_export", "onnxruntime"])
def test_exported_program_gives_the_jax_generators_images(exported, runtime):
  kind, model, folder, inputs = exported
  program = runtimes.load_generator(str(folder), runtime=runtime)
  assert isinstance(program, runtimes.ExportedGenerator) and program.output_names == model.output_names
  assert program.input_names[4:] == ((export_formats.FLOW_INPUT,) if kind == "motion" else ())
  want = _jax_images(model, inputs)
  for batch in (1, 5):  # one export, two batch sizes
    got = program.float_outputs(*(x[:batch] for x in inputs))
    assert _max_error(got, want, batch) < TOLERANCE, (kind, runtime, batch)


def test_the_frames_are_where_a_float32_spline_would_differ(frames):
  # What the test above would meet if each program solved the spline in float32 on its own:
  # 0.02 to 0.05 px at R/2 on these frames (median 0.0014 px over the clip), which the bilinear
  # warp turned into up to 0.05 (of [-1, 1]) at the source's edges.
  assert frames["float32_error_px"].min() > 0.01, frames["float32_error_px"]


def test_onnx_file_passes_the_checker_and_has_a_dynamic_batch(exported):
  _, model, folder, _ = exported
  path = folder / "generator.onnx"
  onnx.checker.check_model(str(path), full_check=True)
  graph = onnx.load(str(path)).graph
  assert [i.name for i in graph.input] == list(export_formats.input_names(model))
  assert [o.name for o in graph.output] == list(model.output_names)
  assert all(i.type.tensor_type.shape.dim[0].dim_param == export_formats.BATCH for i in graph.input)
  # Every transposed convolution became four sub-pixel convolutions (the images above are theirs).
  ops = [n.op_type for n in graph.node]
  assert "ConvTranspose" not in ops and "DepthToSpace" in ops


def test_contract_describes_the_inputs(exported):
  _, model, folder, _ = exported
  for name in export_formats.PROGRAM_FILES.values():
    contract = json.loads((folder / (name + ".json")).read_text())
    assert contract["sha256"] == export_formats.sha256(str(folder / name))
    assert (contract["resolution"], contract["mask_channels"]) == (128, model.mask_channels)
    shapes = {i["name"]: i["shape"] for i in contract["inputs"]}
    assert shapes["masks"] == ["batch", 128, 128, model.mask_channels]
    assert {i["name"]: i["range"] for i in contract["inputs"]}["sources"] == [-1.0, 1.0]
    assert [o["name"] for o in contract["outputs"]] == list(model.output_names)
    assert contract["weights"] == model.info
    if model.motion_smoothing is None:
      assert export_formats.FLOW_INPUT not in shapes and "tps" not in contract
    else:  # what the caller needs to compute the flow input
      assert shapes[export_formats.FLOW_INPUT] == ["batch", 64, 64, 2]
      module = "pwa" if model.motion == "landmark_pwa" else "tps"  # the shipped model's: pwa
      assert contract["tps"] == {"function": f"facegen_jax.landmarks.{module}.host_flow", "size": 64,
                                 "smoothing": model.config.model.motion_smoothing, "anchors_per_side": 4}


def test_damaged_or_mismatched_exports_are_refused(exported, tmp_path):
  kind, _, folder, _ = exported
  bad = tmp_path / "bad"
  shutil.copytree(folder, bad)
  onnx_path = bad / "generator.onnx"
  onnx_path.write_bytes(onnx_path.read_bytes()[:1000])  # truncated
  with pytest.raises(ValueError, match=r"generator\.onnx is damaged or was replaced: its sha256"):
    runtimes.load_generator(str(bad), runtime="onnxruntime")
  # A contract that promises other inputs than the program takes.
  contract_path = bad / "generator.jax.json"
  contract = json.loads(contract_path.read_text())
  contract["inputs"][0]["shape"] = ["batch", 256, 256, 3]
  contract_path.write_text(json.dumps(contract))
  with pytest.raises(ValueError, match=r"generator\.jax takes inputs .*256"):
    runtimes.load_generator(str(bad / "generator.jax"))
  (bad / "generator.jax.json").unlink()
  with pytest.raises(FileNotFoundError, match=r"generator\.jax\.json not found"):
    runtimes.load_generator(str(bad / "generator.jax"))
  # The program of the other shipped model in this folder: the config.json beside it differs.
  other = KINDS["spec" if kind == "motion" else "motion"]
  shutil.copy(other / "config.json", bad / "config.json")
  shutil.copy(folder / "generator.onnx", onnx_path)
  with pytest.raises(ValueError, match=r"generator\.onnx does not match the config\.json beside it \(motion"):
    runtimes.load_generator(str(bad), runtime="onnxruntime")


def test_folder_and_file_pick_their_runtime(exported, tmp_path):
  _, _, folder, _ = exported
  assert isinstance(runtimes.load_generator(str(folder)), GeneratorModel)  # msgpack first
  only_programs = tmp_path / "programs"
  shutil.copytree(folder, only_programs)
  (only_programs / "generator.msgpack").unlink()
  assert runtimes.load_generator(str(only_programs)).runtime == "jax_export"
  assert runtimes.load_generator(str(only_programs / "generator.onnx")).runtime == "onnxruntime"
  with pytest.raises(ValueError, match="runtime 'jax_export' cannot run it"):
    runtimes.load_generator(str(only_programs / "generator.onnx"), runtime="jax_export")
  with pytest.raises(ValueError, match="personalization"):
    _ = runtimes.load_generator(str(only_programs / "generator.jax")).variables


def test_reenactor_reenacts_the_bundled_clip_from_an_onnx_export(exported, tmp_path):
  kind, _, folder, _ = exported
  if kind != "motion":
    pytest.skip("one clip is enough: the shipped model with motion")
  model_file = tmp_path / "model.onnx"  # a program file alone, under another name, with its contract
  shutil.copy(folder / "generator.onnx", model_file)
  shutil.copy(folder / "generator.onnx.json", str(model_file) + ".json")
  reenactor = Reenactor.from_checkpoint(str(model_file))
  assert reenactor.model.runtime == "onnxruntime"
  out = tmp_path / "out.mp4"
  report = reenactor.reenact_video(load_image(str(SOURCE)), str(DRIVING), str(out), progress=False)
  driving, written = video_io.probe(str(DRIVING)), video_io.probe(str(out))
  assert report.frames == written.num_frames == driving.num_frames
  assert written.fps == driving.fps and written.has_audio and driving.has_audio


def test_onnx_example_reenacts_a_photo(exported, tmp_path):
  kind, _, folder, _ = exported
  if kind != "motion":
    pytest.skip("one run of the example is enough")
  out = tmp_path / "out.png"
  argv = [str(REPO_ROOT / "examples" / "onnx_reenact.py"), f"--model={folder / 'generator.onnx'}", f"--source={SOURCE}",
          f"--driving={REPO_ROOT / 'sample_data' / 'lp_d18_d19_man__liveportrait__d19.jpg'}", f"--output={out}"]
  # The example run as a script, then what it imported: neither JAX nor flax.
  run = (f"import runpy, sys; sys.argv = {argv!r}; runpy.run_path(sys.argv[0], run_name='__main__'); "
         "print('loaded:', sorted(m for m in ('jax', 'jaxlib', 'flax') if m in sys.modules))")
  result = subprocess.run([sys.executable, "-c", run], capture_output=True, text=True, timeout=300,
                          cwd=str(REPO_ROOT), check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "loaded: []" in result.stdout, result.stdout
  picture = np.asarray(Image.open(out))
  assert picture.shape == (128, 128, 3) and picture.std() > 10  # a face, not a flat image
