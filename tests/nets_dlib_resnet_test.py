"""The Flax port of dlib's face-recognition ResNet against dlib itself, on real faces.

Golden file: tests/golden/identity_golden.npz, made by tests/golden/make_identity_golden.py
(dlib's HOG detector + 68-point predictor landmarks and dlib's descriptors for 20 photos of
shared/faces).
"""

import itertools
import pathlib

import dlib
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from facegen_jax.losses.identity import identity_loss
from facegen_jax.nets import WeightsError, dlib_resnet, face_align, face_resnet, load_frozen_net

GOLDEN = pathlib.Path(__file__).parent / "golden" / "identity_golden.npz"
# Photos whose chips we also align in JAX: no pyramid (sides 199, 289), then 1, 1, 2 and 3
# pyramid levels (sides 349 .. 1440), a tall and a 2048-pixel image among them.
ALIGN_SUBSET = ("aflw_woman__face_alignment__aflw-test.jpg", "jeff_bezos__deepface__img21.jpg",
                "joe_biden__face_recognition__biden.jpg", "matt_damon__deepface__img30.jpg",
                "sundar_pichai__deepface__img24.jpg", "paul_rudd__facenet_pytorch__1.jpg")


def cosine(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.sum(a * b, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def dlib_shape(landmarks, box):
  return dlib.full_object_detection(dlib.rectangle(*[int(v) for v in box]),
                                    [dlib.point(int(x), int(y)) for x, y in landmarks])


@pytest.fixture(scope="session")
def weights_cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("facegen_cache")


@pytest.fixture(scope="session")
def net(weights_cache_dir):
  return load_frozen_net("dlib_resnet", cache=weights_cache_dir)


@pytest.fixture(scope="session")
def golden(shared_faces):
  g = dict(np.load(GOLDEN))
  images = []
  for name, sha in zip(g["name"], g["sha256"]):
    path = shared_faces / "images" / name
    import hashlib  # pylint: disable=import-outside-toplevel
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha, f"{path} changed; rerun {GOLDEN.parent}/make_identity_golden.py"
    images.append(np.asarray(Image.open(path).convert("RGB")))
  g["images"] = images
  g["dlib_chips"] = np.stack([dlib.get_face_chip(im, dlib_shape(lm, box), 150, 0.25)
                              for im, lm, box in zip(images, g["landmarks"], g["box"])])
  return g


@pytest.fixture(scope="session")
def model_and_vars(weights_cache_dir, net):
  del net  # converts the weights into the cache first
  variables, mean = dlib_resnet.load_dlib_resnet_variables(cache=weights_cache_dir)
  return face_resnet.FaceRecognitionResNet(mean_rgb=mean), variables


@pytest.fixture(scope="session")
def run_chips(model_and_vars):
  """Jitted network on batches of exactly 16 chips (the last batch padded)."""
  model, variables = model_and_vars
  forward = jax.jit(model.apply)

  def run(chips_uint8):
    chips = np.asarray(chips_uint8, np.float32) / 127.5 - 1.0
    n = len(chips)
    pad = (-n) % 16
    chips = np.concatenate([chips, np.zeros((pad,) + chips.shape[1:], np.float32)])
    outs = [forward(variables, jnp.asarray(chips[i:i + 16])) for i in range(0, len(chips), 16)]
    return {k: np.concatenate([np.asarray(o[k]) for o in outs])[:n] for k in ("descriptor", "embedding")}, forward

  return run


def test_golden_descriptors_match_dlib_on_the_same_chip(golden, run_chips):
  assert len(golden["name"]) >= 10
  out, _ = run_chips(golden["dlib_chips"])
  cos = cosine(out["descriptor"], golden["descriptor_chip"])
  assert np.all(cos >= 0.999), dict(zip(golden["name"], cos))
  # Not only the direction: the port reproduces dlib's raw descriptor.
  np.testing.assert_allclose(out["descriptor"], golden["descriptor_chip"], atol=1e-4)
  # dlib still computes what the golden file holds (same models, same chips).
  recognizer = dlib.face_recognition_model_v1(str(dlib_resnet.default_model_path()))
  now = np.array(recognizer.compute_face_descriptor(golden["dlib_chips"][0]))
  np.testing.assert_allclose(now, golden["descriptor_chip"][0], atol=1e-5)


def test_jitted_batch_of_16_chips(golden, run_chips):
  out, forward = run_chips(golden["dlib_chips"][:16])
  assert out["embedding"].shape == (16, 128)
  assert np.all(np.isfinite(out["embedding"]))
  np.testing.assert_allclose(np.linalg.norm(out["embedding"], axis=-1), 1.0, atol=1e-5)
  assert forward._cache_size() == 1  # pylint: disable=protected-access


def test_same_person_closer_than_every_different_person_pair(golden, run_chips):
  emb = run_chips(golden["dlib_chips"])[0]["descriptor"]
  ids = golden["identity"]
  same, different = [], []
  for i, j in itertools.combinations(range(len(ids)), 2):
    (same if ids[i] == ids[j] else different).append(np.linalg.norm(emb[i] - emb[j]))
  assert len(same) == 2  # Angelina Jolie and Matt Damon, two photos each
  assert max(same) < min(different), (sorted(same), sorted(different)[:3])
  assert max(same) < 0.6 < min(different)  # dlib's decision threshold separates them too


@pytest.fixture(scope="session")
def jax_chips(golden):
  """Our chips for ALIGN_SUBSET: (indices, exact-float chips, dlib-rounded chips), uint8 scale."""
  idx = [list(golden["name"]).index(n) for n in ALIGN_SUBSET]
  both = jax.jit(lambda x, lm: (face_align.extract_face_chips(x, lm, quantize=False),
                                face_align.extract_face_chips(x, lm, quantize=True)))
  plain, rounded = [], []
  for i in idx:
    x = jnp.asarray(golden["images"][i][None], jnp.float32) / 127.5 - 1.0
    chips = both(x, jnp.asarray(golden["landmarks"][i][None]))
    for chip, out in zip(chips, (plain, rounded)):
      out.append((np.asarray(chip[0]) + 1.0) * 127.5)
  return idx, np.stack(plain), np.round(np.stack(rounded))


def test_jax_alignment_equals_dlib_get_face_chip(golden, jax_chips):
  idx, plain, rounded = jax_chips
  ref = golden["dlib_chips"][idx].astype(np.float32)
  sides = np.asarray(face_align.chip_rectangles(jnp.asarray(golden["landmarks"][idx]))[1])
  assert sides.min() < 250 and sides.max() > 1000  # no pyramid ... 3 pyramid levels
  # With dlib's uint8 truncation the chips agree to the last bit almost everywhere.
  diff = np.abs(rounded - ref)
  assert diff.max() <= 2.0 and diff.mean() < 0.05, (diff.max(), diff.mean())
  assert np.mean(diff == 0) > 0.97
  # Without it (the differentiable default) they differ by the truncation: under 2 levels on average.
  diff = np.abs(plain - ref)
  assert diff.max() <= 4.0 and diff.mean() < 2.0, (diff.max(), diff.mean())


def test_full_path_matches_dlib_compute_face_descriptor(golden, jax_chips, run_chips):
  """Our alignment + our network vs dlib's compute_face_descriptor(image, landmarks)."""
  idx, plain, _ = jax_chips
  out, _ = run_chips(np.clip(plain, 0, 255))  # run_chips rescales; float chips are fine
  cos = cosine(out["descriptor"], golden["descriptor_full"][idx])
  assert np.all(cos >= 0.999), cos


def test_frozen_net_identity_gradients_reach_the_image(golden, net):
  i = list(golden["name"]).index("matt_damon__deepface__img29.jpg")
  image, lm = golden["images"][i], golden["landmarks"][i]
  # A 256x256 training-size image around the face, as the generator would produce.
  cx, cy = lm.mean(0)
  box = (int(cx) - 200, int(cy) - 200, int(cx) + 200, int(cy) + 200)
  crop = np.asarray(Image.fromarray(image).crop(box).resize((256, 256), Image.BILINEAR))
  lm_crop = (lm - np.array(box[:2], np.float32)) * (256 / 400)
  x = jnp.asarray(crop[None], jnp.float32) / 127.5 - 1.0
  lms = jnp.asarray(lm_crop[None])
  ref = jax.lax.stop_gradient(net.apply(net.params, x, lms)["embedding"])
  generated = x + 0.2 * jax.random.normal(jax.random.key(0), x.shape)

  def loss(g):
    return identity_loss(ref, net.apply(net.params, g, lms)["embedding"]).sum()

  value, grad = jax.jit(jax.value_and_grad(loss))(generated)
  grad = np.asarray(grad[0])
  assert 0.0 < float(value) < 0.5  # noisy, but still the same person
  assert np.all(np.isfinite(grad))
  per_pixel = np.abs(grad).sum(-1)
  face = per_pixel[int(lm_crop[:, 1].min()):int(lm_crop[:, 1].max()), int(lm_crop[:, 0].min()):int(lm_crop[:, 0].max())]
  assert np.mean(face > 0) > 0.9  # every face pixel gets a gradient ...
  assert per_pixel[:8, :8].sum() == 0.0  # ... the corners, outside the chip, none


def test_weights_are_converted_once_into_the_cache(weights_cache_dir, net):
  files = list(pathlib.Path(weights_cache_dir).glob("dlib_resnet_v1-*.npz"))
  assert len(files) == 1
  stamp = files[0].stat().st_mtime_ns
  again = load_frozen_net("dlib_resnet", cache=weights_cache_dir)
  assert files[0].stat().st_mtime_ns == stamp
  chex_equal = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), net.params, again.params)
  assert all(jax.tree.leaves(chex_equal))


def test_default_cache_dir_comes_from_the_environment(tmp_path, monkeypatch):
  monkeypatch.setenv("FACEGEN_CACHE_DIR", str(tmp_path / "c"))
  dlib_resnet.load_dlib_resnet_variables()
  assert len(list((tmp_path / "c").glob("dlib_resnet_v1-*.npz"))) == 1


def test_corrupt_cache_file_names_itself_and_the_fix(tmp_path):
  dat = dlib_resnet.default_model_path()
  dlib_resnet.load_dlib_resnet_variables(cache=tmp_path)
  (cached,) = tmp_path.glob("*.npz")
  cached.write_bytes(cached.read_bytes()[:1000])
  with pytest.raises(WeightsError, match=f"{cached}.*Delete {cached}"):
    dlib_resnet.load_dlib_resnet_variables(dat, cache=tmp_path)
  cached.unlink()  # deleting it, as the message says, converts again
  dlib_resnet.load_dlib_resnet_variables(dat, cache=tmp_path)


def test_missing_or_damaged_dat_file(tmp_path):
  with pytest.raises(WeightsError, match="not found at .*nothing.dat.*pip install --force-reinstall face-recognition-models"):
    load_frozen_net("dlib_resnet", dat_path=tmp_path / "nothing.dat", cache=tmp_path)
  damaged = tmp_path / "damaged.dat"
  damaged.write_bytes(dlib_resnet.default_model_path().read_bytes()[:5_000_000])
  with pytest.raises(WeightsError, match="damaged.dat is not a readable dlib .*end of data.*pip install"):
    load_frozen_net("dlib_resnet", dat_path=damaged, cache=tmp_path)
  assert not list(tmp_path.glob("*.npz"))  # nothing half-written into the cache


def test_unknown_network_name():
  with pytest.raises(ValueError, match="unknown loss network 'resnet50'.*dlib_resnet, vgg19"):
    load_frozen_net("resnet50")
