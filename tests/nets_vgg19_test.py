"""VGG19 loss network: structure with random torchvision-layout weights, loading errors, converter."""

import importlib.util
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from facegen_jax.nets import WeightsError, face_align, load_frozen_net, vgg19

REPO = pathlib.Path(__file__).resolve().parent.parent


def random_state_dict(seed=0, with_classifier=True):
  """A torchvision-style vgg19 state dict with random values (all 16 convs)."""
  rng = np.random.default_rng(seed)
  state, in_ch = {}, 3
  for name, index in vgg19.torchvision_indices().items():
    out_ch = vgg19.CHANNELS[int(name[4])]
    state[f"features.{index}.weight"] = rng.normal(0, np.sqrt(2 / (9 * in_ch)), (out_ch, in_ch, 3, 3)).astype(np.float32)
    state[f"features.{index}.bias"] = rng.normal(0, 0.01, (out_ch,)).astype(np.float32)
    in_ch = out_ch
  if with_classifier:
    state["classifier.0.weight"] = rng.normal(size=(8, 4)).astype(np.float32)
  return state


@pytest.fixture(scope="module")
def weights_npz(tmp_path_factory):
  path = tmp_path_factory.mktemp("vgg") / "vgg19.npz"
  np.savez(path, **{k: v for k, v in random_state_dict().items() if k.startswith("features.")})
  return path


def test_torchvision_layout():
  idx = vgg19.torchvision_indices()
  assert len(idx) == 16
  assert [idx[n] for n in ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1", "conv5_4")] == [0, 5, 10, 19, 28, 34]


def test_features_shapes_and_first_layer_against_numpy(weights_npz):
  net = load_frozen_net("vgg19", weights_path=weights_npz)
  assert net.name == "vgg19"
  rng = np.random.default_rng(1)
  images = rng.uniform(-1, 1, (2, 64, 48, 3)).astype(np.float32)
  out = jax.jit(net.apply)(net.params, jnp.asarray(images), jnp.zeros((2, 68, 2)))
  assert out["embedding"].shape == (2, 0)
  shapes = [f.shape for f in out["features"]]
  assert shapes == [(2, 64, 48, 64), (2, 32, 24, 128), (2, 16, 12, 256), (2, 8, 6, 512), (2, 4, 3, 512)]
  # relu1_1 by hand: ImageNet-normalised [0, 1] input, cross-correlation with the OIHW kernel.
  state = np.load(weights_npz)
  w, b = state["features.0.weight"], state["features.0.bias"]
  x = ((images + 1) / 2 - np.array(vgg19.IMAGENET_MEAN)) / np.array(vgg19.IMAGENET_STD)
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  ref = np.zeros((2, 64, 48, 64))
  for dy in range(3):
    for dx in range(3):
      ref += np.einsum("bhwi,oi->bhwo", xp[:, dy:dy + 64, dx:dx + 48], w[:, :, dy, dx])
  ref = np.maximum(ref + b, 0)
  np.testing.assert_allclose(out["features"][0], ref, atol=2e-4)


def test_face_chip_option_runs_on_aligned_faces(weights_npz):
  net = load_frozen_net("vgg19", weights_path=weights_npz, use_face_chip=True, chip_size=32)
  template = face_align.template_points(100, 0.0)  # a face filling a 100 px box
  landmarks = np.zeros((1, 68, 2), np.float32)
  landmarks[0, list(face_align.FIT_INDICES)] = template + 20
  out = net.apply(net.params, jnp.zeros((1, 140, 140, 3)), jnp.asarray(landmarks))
  assert out["features"][0].shape == (1, 32, 32, 64)


def test_missing_or_wrong_weights_fail_clearly(tmp_path):
  with pytest.raises(WeightsError, match="needs ImageNet weights: pass weights_path=.*convert_vgg19.py"):
    load_frozen_net("vgg19")
  with pytest.raises(WeightsError, match="not found at .*nope.npz.*convert_vgg19.py"):
    load_frozen_net("vgg19", weights_path=tmp_path / "nope.npz")
  pth = tmp_path / "vgg19.pth"
  pth.write_bytes(b"PK")
  with pytest.raises(WeightsError, match="vgg19.pth is a PyTorch file.*convert_vgg19.py"):
    load_frozen_net("vgg19", weights_path=pth)
  bad = tmp_path / "bad.npz"
  bad.write_bytes(b"not a zip")
  with pytest.raises(WeightsError, match="cannot read VGG19 weights .*bad.npz"):
    load_frozen_net("vgg19", weights_path=bad)
  state = random_state_dict(with_classifier=False)
  state["features.5.weight"] = state["features.5.weight"][:, :32]
  wrong = tmp_path / "wrong.npz"
  np.savez(wrong, **state)
  with pytest.raises(WeightsError, match=r"features.5.weight has shape \(128, 32, 3, 3\).*needs \(128, 64, 3, 3\)"):
    load_frozen_net("vgg19", weights_path=wrong)


def _load_converter():
  spec = importlib.util.spec_from_file_location("convert_vgg19", REPO / "experiments" / "convert_vgg19.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_converter_keeps_the_trunk_and_needs_torch_only_to_read_pth(tmp_path, monkeypatch):
  converter = _load_converter()
  state = {"module." + k: v for k, v in random_state_dict().items()}  # DataParallel prefixes too
  arrays = converter.convert(state)
  assert sorted(arrays) == sorted(k for k in random_state_dict() if k.startswith("features."))
  out = tmp_path / "converted.npz"
  np.savez(out, **arrays)
  assert set(vgg19.read_weights(out)["params"]) == set(list(vgg19.torchvision_indices())[:13])
  with pytest.raises(WeightsError, match="lacks features.0.weight"):
    converter.convert({"classifier.0.weight": np.zeros((2, 2))})
  monkeypatch.setitem(sys.modules, "torch", None)  # as on a machine without torch
  with pytest.raises(SystemExit, match="needs torch: pip install torch"):
    converter.main([str(tmp_path / "in.pth"), str(tmp_path / "out.npz")])
