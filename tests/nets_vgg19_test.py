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


def test_missing_or_wrong_weights_fail_clearly(tmp_path, monkeypatch):
  with pytest.raises(WeightsError, match="needs ImageNet weights: pass weights_path=.*convert_vgg19.py"):
    load_frozen_net("vgg19")
  with pytest.raises(WeightsError, match="not found at .*nope.npz.*convert_vgg19.py"):
    load_frozen_net("vgg19", weights_path=tmp_path / "nope.npz")
  with pytest.raises(WeightsError, match="not found at .*nope.pth"):
    load_frozen_net("vgg19", weights_path=tmp_path / "nope.pth")
  pth = tmp_path / "vgg19.pth"
  pth.write_bytes(b"PK")
  with monkeypatch.context() as m:
    m.setitem(sys.modules, "torch", None)  # as on a machine without torch
    with pytest.raises(WeightsError, match=r'vgg19.pth needs torch.*pip install -e ".\[bench\]".*convert_vgg19.py'):
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
  (tmp_path / "in.pth").write_bytes(b"not read")
  monkeypatch.setitem(sys.modules, "torch", None)  # as on a machine without torch
  with pytest.raises(SystemExit, match="in.pth needs torch, which is not installed"):
    converter.main([str(tmp_path / "in.pth"), str(tmp_path / "out.npz")])
  assert not (tmp_path / "out.npz").exists()


def _save_torch(state, path):
  torch = pytest.importorskip("torch")
  torch.save({k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in state.items()}, path)
  return path


def test_pth_loads_like_its_converted_npz(tmp_path):
  torch = pytest.importorskip("torch")
  pth = _save_torch(random_state_dict(seed=3), tmp_path / "vgg19-dcbb9e9d.pth")  # with the classifier, as shipped
  npz = tmp_path / "converted" / "vgg19.npz"
  _load_converter().main([str(pth), str(npz)])
  from_pth, from_npz = vgg19.read_weights(pth), vgg19.read_weights(npz)
  assert jax.tree.structure(from_pth) == jax.tree.structure(from_npz)
  for a, b in zip(jax.tree.leaves(from_pth), jax.tree.leaves(from_npz)):
    assert a.dtype == b.dtype == np.float32
    np.testing.assert_array_equal(a, b)
  net_pth = load_frozen_net("vgg19", weights_path=pth)
  net_npz = load_frozen_net("vgg19", weights_path=npz)
  images = jnp.asarray(np.random.default_rng(4).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32))
  landmarks = jnp.zeros((1, 68, 2))
  for a, b in zip(net_pth.apply(net_pth.params, images, landmarks)["features"],
                  net_npz.apply(net_npz.params, images, landmarks)["features"]):
    np.testing.assert_array_equal(a, b)
  # A DataParallel prefix and a checkpoint's {"state_dict": ...} wrapper read the same.
  wrapped = tmp_path / "wrapped.pt"
  inner = {"module." + k: torch.from_numpy(v) for k, v in random_state_dict(seed=3).items()}
  torch.save({"state_dict": inner, "epoch": 90}, wrapped)
  for a, b in zip(jax.tree.leaves(vgg19.read_weights(wrapped)), jax.tree.leaves(from_npz)):
    np.testing.assert_array_equal(a, b)


def test_damaged_or_unrelated_pth_fails_naming_the_file(tmp_path):
  torch = pytest.importorskip("torch")
  for name, data in (("empty.pth", b""), ("pk.pth", b"PK"), ("text.pt", b"not a checkpoint\n")):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(WeightsError, match=f"cannot read VGG19 weights .*{name} with torch.load.*state_dict"):
      load_frozen_net("vgg19", weights_path=tmp_path / name)
  good = _save_torch(random_state_dict(), tmp_path / "good.pth").read_bytes()
  (tmp_path / "truncated.pth").write_bytes(good[:len(good) // 2])
  with pytest.raises(WeightsError, match="cannot read VGG19 weights .*truncated.pth"):
    load_frozen_net("vgg19", weights_path=tmp_path / "truncated.pth")
  torch.save(torch.zeros(3), tmp_path / "tensor.pth")
  with pytest.raises(WeightsError, match="tensor.pth holds a Tensor, not a state dict"):
    load_frozen_net("vgg19", weights_path=tmp_path / "tensor.pth")
  _save_torch({"conv1.weight": np.zeros((64, 3, 7, 7), np.float32)}, tmp_path / "resnet.pth")
  with pytest.raises(WeightsError, match="resnet.pth lacks features.0.weight.*not a torchvision VGG19 state dict"):
    load_frozen_net("vgg19", weights_path=tmp_path / "resnet.pth")
  state = random_state_dict(with_classifier=False)
  state["features.5.weight"] = state["features.5.weight"][:, :32]
  _save_torch(state, tmp_path / "wrong.pth")
  with pytest.raises(WeightsError, match=r"wrong.pth: features.5.weight has shape \(128, 32, 3, 3\)"):
    load_frozen_net("vgg19", weights_path=tmp_path / "wrong.pth")
