"""The grain training pipeline over a small FaceFrames dataset of SYNTHETIC faces written by the
real builder (6 clips of 3 people, 5 frames each): batch format, sample kinds, per-process
sharding, resume, augmentation consistency. Real-face coverage is in data_prepare_test.py."""

import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

from facegen_jax.data import augment, batch as batch_lib, config as data_config, frames, pipeline, synthetic, tfds_builder
from facegen_jax.landmarks import masks

R = 64
NUM_VIDEOS, NUM_FRAMES = 6, 5


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("synthetic_frames")
  cache = frames.FrameCache(tmp / "cache")
  rng = np.random.default_rng(0)
  entries = []
  for v in range(NUM_VIDEOS):
    ident = synthetic._identity(rng)  # pylint: disable=protected-access
    lms = [synthetic.random_landmarks(rng, ident, R) for _ in range(NUM_FRAMES)]
    prepared = frames.PreparedFile(
        source=f"v{v}.mp4", identity=f"person{v // 2}", video_id=f"person{v // 2}/v{v}", is_video=True,
        frame_indices=np.arange(NUM_FRAMES), landmarks=np.stack(lms),
        images=[frames.encode_png(synthetic.draw_face(l, ident, R)) for l in lms],
        masks=[frames.encode_png(masks.render_mask(l, R)) for l in lms],
        part_masks=[frames.encode_png(frames.tile_parts(masks.render_mask(l, R, per_part=True))) for l in lms])
    key = cache.key(prepared.source, "test")
    cache.save(key, prepared)
    entries.append(tfds_builder.CachedFrames(str(cache.root), key, prepared.identity, prepared.video_id, NUM_FRAMES))
  builder = tfds_builder.FaceFrames(entries=entries, data_dir=str(tmp / "out"),
                                    config=tfds_builder.FaceFramesConfig(resolution=R, test_fraction=0.0))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False),
                               file_format="array_record")
  return str(tmp / "out")


def _config(data_dir, **overrides):
  cfg = data_config.default_data_config()
  cfg.data_dir = data_dir
  cfg.num_workers = 0
  for key, value in overrides.items():
    cfg[key] = value
  return cfg


def _iterator(data_dir, batch_size=8, resolution=R, per_part=False, seed=0, index=0, count=1, **overrides):
  return pipeline.create_train_iterator(_config(data_dir, **overrides), global_batch_size=batch_size * count,
                                        resolution=resolution, mask_per_part=per_part, seed=seed,
                                        process_index=index, process_count=count)


@pytest.mark.parametrize("per_part", [False, True])
def test_batches_follow_the_batch_format(data_dir, per_part):
  it = _iterator(data_dir, per_part=per_part)
  for _ in range(3):
    batch = next(it)
    batch_lib.validate_batch(batch, R, masks.mask_channels(per_part))
    assert set(batch["sample_kind"]) <= {0, 1}
    assert np.all((batch["source_landmarks"] >= 0) & (batch["source_landmarks"] <= R - 1))
    assert batch["driving_mask"].max() == 255


def test_resizes_a_dataset_of_another_resolution(data_dir):
  batch = next(_iterator(data_dir, resolution=32))
  batch_lib.validate_batch(batch, 32, 1)
  assert batch["source_landmarks"].max() < 32


def test_sample_kinds(data_dir):
  plain = dict(augment=dict(flip_probability=0.0, brightness=0.0, contrast=0.0, saturation=0.0))
  # (a) only: two different frames of one video; the target is the driving frame.
  batch = next(_iterator(data_dir, kind_ratios=(1.0, 0.0, 0.0), **plain))
  assert np.all(batch["sample_kind"] == 0)
  for i in range(len(batch["source"])):
    assert not np.array_equal(batch["source"][i], batch["target"][i])
    np.testing.assert_array_equal(batch["driving_landmarks"][i], batch["target_landmarks"][i])
    np.testing.assert_array_equal(batch["driving_mask"][i], batch["target_mask"][i])
  # (b) only: another person's pose; the target is the source with its own mask.
  batch = next(_iterator(data_dir, kind_ratios=(0.0, 1.0, 0.0), **plain))
  assert np.all(batch["sample_kind"] == 0)
  np.testing.assert_array_equal(batch["source"], batch["target"])
  np.testing.assert_array_equal(batch["source_landmarks"], batch["target_landmarks"])
  for i in range(len(batch["source"])):
    np.testing.assert_array_equal(batch["target_mask"][i], masks.render_mask(batch["target_landmarks"][i], R))
    assert np.abs(batch["driving_landmarks"][i] - batch["source_landmarks"][i]).mean() > 1.0
  # (c) only: own landmarks perturbed, mask rendered from them, sample_kind 1.
  cfg_perturb = dict(feature_shift=0.05, contour_shift=0.03, feature_scale=0.0)
  batch = next(_iterator(data_dir, kind_ratios=(0.0, 0.0, 1.0), perturb=cfg_perturb, **plain))
  assert np.all(batch["sample_kind"] == 1)
  np.testing.assert_array_equal(batch["source"], batch["target"])
  for i in range(len(batch["source"])):
    src, drv = batch["source_landmarks"][i], batch["driving_landmarks"][i]
    face = np.max(src.max(0) - src.min(0))
    shift = np.linalg.norm(drv - src, axis=-1)
    assert 0 < shift.max() <= (0.05 + 0.03) * face + 1e-3
    np.testing.assert_array_equal(batch["driving_mask"][i], masks.render_mask(drv, R))


def test_processes_read_disjoint_records(data_dir, monkeypatch):
  read = {}  # id(SampleMaker) -> global records it read
  original = pipeline.SampleMaker._read  # pylint: disable=protected-access

  def logged(self, k):
    read.setdefault(id(self), set()).add(int(self.records[k]))
    return original(self, k)

  monkeypatch.setattr(pipeline.SampleMaker, "_read", logged)
  makers = []
  for index in (0, 1):
    it = _iterator(data_dir, batch_size=4, index=index, count=2, read_threads=1)
    makers.append(id(it.maker))
    for _ in range(6):
      batch = next(it)
      batch_lib.validate_batch(batch, R, 1)
      assert len(batch["source"]) == 4  # this process's share of the global batch of 8
    it.close()
  first, second = read[makers[0]], read[makers[1]]
  assert first and second and not first & second
  assert first | second == set(range(NUM_VIDEOS * NUM_FRAMES))  # 6 batches of 4 touch every record


def test_too_many_processes_is_a_clear_error(data_dir):
  with pytest.raises(ValueError, match="whole videos"):
    _iterator(data_dir, batch_size=1, index=0, count=NUM_VIDEOS + 1)


def test_deterministic_and_resumes_at_the_same_sample(data_dir):
  first = next(_iterator(data_dir, seed=3))
  np.testing.assert_array_equal(first["source"], next(_iterator(data_dir, seed=3))["source"])
  assert not np.array_equal(first["source"], next(_iterator(data_dir, seed=4))["source"])

  it = _iterator(data_dir, seed=3)
  for _ in range(3):
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  expected = [next(it) for _ in range(2)]
  resumed = _iterator(data_dir, seed=3, num_workers=2)  # grain worker processes: the same stream
  resumed.set_state(state)
  try:
    for want in expected:
      got = next(resumed)
      for key in batch_lib.KEYS:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  finally:
    resumed.close()


def test_flip_is_consistent_for_landmarks_and_masks():
  rng = np.random.default_rng(1)
  lm = synthetic.random_landmarks(rng, synthetic._identity(rng), R)  # pylint: disable=protected-access
  np.testing.assert_allclose(augment.flip_landmarks(augment.flip_landmarks(lm, R), R), lm, atol=1e-4)
  flipped = augment.flip_landmarks(lm, R)
  # The right eye (36-41) of the mirrored face is where the left eye (42-47) was, mirrored.
  np.testing.assert_allclose(flipped[36:42].mean(0)[0], R - 1 - lm[42:48].mean(0)[0], atol=1e-4)
  for per_part in (False, True):
    mirrored = augment.flip_mask(masks.render_mask(lm, R, per_part=per_part)).astype(np.float32)
    rendered = masks.render_mask(flipped, R, per_part=per_part).astype(np.float32)
    error = np.abs(mirrored - rendered).mean()
    assert error < 3.0  # the same drawing, up to PIL's rasterisation asymmetry of 1-px lines
    if per_part:  # without the left/right channel swap the parts would be far off
      unswapped = masks.render_mask(lm, R, per_part=True)[:, ::-1].astype(np.float32)
      assert np.abs(unswapped - rendered).mean() > 3 * error


def test_color_jitter_is_shared_by_source_and_target(data_dir):
  jitter = dict(flip_probability=1.0, brightness=0.3, contrast=0.3, saturation=0.3)
  plain = dict(flip_probability=0.0, brightness=0.0, contrast=0.0, saturation=0.0)
  a = next(_iterator(data_dir, kind_ratios=(1.0, 0.0, 0.0), augment=jitter))
  b = next(_iterator(data_dir, kind_ratios=(1.0, 0.0, 0.0), augment=plain))
  # Same records, flipped and jittered: undo the flip, then each image's change is one affine map.
  for i in range(len(a["source"])):
    np.testing.assert_allclose(augment.flip_landmarks(a["target_landmarks"][i], R), b["target_landmarks"][i],
                               atol=1e-4)
    for key in ("source", "target"):
      x = b[key][i].reshape(-1, 3).astype(np.float64)
      y = augment.flip_image(a[key][i]).reshape(-1, 3).astype(np.float64)
      assert not np.array_equal(x, y)
      keep = (y > 2).all(1) & (y < 253).all(1)  # unclipped pixels
      grey = x @ [0.299, 0.587, 0.114]
      design = np.stack([x[keep, 0], grey[keep], np.ones(keep.sum())], 1)
      coef = np.linalg.lstsq(design, y[keep, 0], rcond=None)[0]
      if key == "source":
        source_coef = coef
      else:
        np.testing.assert_allclose(coef[:2], source_coef[:2], atol=0.03)  # the same draw
