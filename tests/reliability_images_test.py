"""Bounded image decoding: a decompression bomb is refused from its header, a JPEG over the limit is
decoded at reduced size, and prepare_data remembers the files it skipped (and always writes its summary)."""

import pathlib
import sys

import numpy as np
import pytest
from PIL import Image

from facegen_jax.data import prepare
from facegen_jax.io import images
from facegen_jax.landmarks import load_image as landmarks_load_image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks import faults  # noqa: E402  pylint: disable=wrong-import-position


def test_the_one_loader_is_the_landmarks_loader():
  assert landmarks_load_image is images.load_image


@pytest.mark.parametrize("side", [40_000, 13_000])  # over PIL's own bomb limit; just under it (169 MP)
def test_huge_png_is_refused_before_decoding(tmp_path, side):
  """The file holds one short row of data: had it been decoded, the error would be another."""
  path = tmp_path / f"bomb{side}.png"
  faults.write_png_header(path, side, side)
  with pytest.raises(images.ImageTooLargeError, match=rf"image .*bomb{side}\.png is .*over the limit of 40 megapixels"):
    images.load_image(str(path))


def test_jpeg_over_the_limit_decodes_at_reduced_size_png_is_refused(tmp_path):
  rng = np.random.default_rng(0)
  pixels = rng.integers(0, 256, (600, 900, 3), np.uint8)
  Image.fromarray(pixels).save(tmp_path / "big.jpg", quality=90)
  Image.fromarray(pixels).save(tmp_path / "big.png")
  assert images.load_image(str(tmp_path / "big.jpg")).shape == (600, 900, 3)  # under the default limit
  assert images.load_image(str(tmp_path / "big.jpg"), max_pixels=200_000).shape == (300, 450, 3)  # 1/2
  assert images.load_image(str(tmp_path / "big.jpg"), max_pixels=10_000).shape == (75, 113, 3)  # 1/8
  with pytest.raises(images.ImageTooLargeError, match="even at 1/8 size"):
    images.load_image(str(tmp_path / "big.jpg"), max_pixels=5_000)
  with pytest.raises(images.ImageTooLargeError, match=r"big\.png is 900x600 \(1 megapixels\), over the limit"):
    images.load_image(str(tmp_path / "big.png"), max_pixels=200_000)


def test_limit_is_configurable_by_environment(tmp_path, monkeypatch):
  Image.new("RGB", (100, 100)).save(tmp_path / "a.png")
  monkeypatch.setenv(images.MAX_PIXELS_ENV, "9999")
  with pytest.raises(images.ImageTooLargeError, match="FACEGEN_MAX_IMAGE_PIXELS"):
    images.load_image(str(tmp_path / "a.png"))
  monkeypatch.setenv(images.MAX_PIXELS_ENV, "10000")
  assert images.load_image(str(tmp_path / "a.png")).shape == (100, 100, 3)
  monkeypatch.setenv(images.MAX_PIXELS_ENV, "lots")
  with pytest.raises(ValueError, match="must be a positive number of pixels"):
    images.load_image(str(tmp_path / "a.png"))


def test_prepare_data_remembers_skipped_files_unless_retry(tmp_path):
  """Also: summary.json is written when no file is usable, and a killed build's folder is removed."""
  src, out = tmp_path / "in", tmp_path / "out"
  src.mkdir()
  (out / ".build-0123abcd" / "face_frames").mkdir(parents=True)  # what a kill during a build leaves
  faults.write_png_header(src / "bomb__huge.png", 40_000, 40_000)
  (src / "broken__file.jpg").write_bytes(b"not an image")
  options = prepare.PrepareOptions(resolution=64)
  with pytest.raises(ValueError, match="none of the 2 input files"):
    prepare.prepare_dataset(src, out, options, workers=1, progress=False)
  assert not (out / ".build-0123abcd").exists()
  summary = prepare.read_summary(out)
  assert summary["files"]["processed_now"] == 2 and summary["files"]["used"] == 0 and summary["dataset_dir"] is None
  skipped = {s["file"]: s for s in summary["skipped"]}
  assert skipped["bomb__huge.png"]["reason"] == "unreadable" and "over the limit" in skipped["bomb__huge.png"]["detail"]
  with pytest.raises(ValueError, match="none of the 2 input files"):
    prepare.prepare_dataset(src, out, options, workers=1, progress=False)
  again = prepare.read_summary(out)
  assert again["files"]["processed_now"] == 0 and again["files"]["from_cache"] == 2
  assert again["skipped"] == summary["skipped"]
  with pytest.raises(ValueError, match="none of the 2 input files"):
    prepare.prepare_dataset(src, out, options, workers=1, retry_skipped=True, progress=False)
  assert prepare.read_summary(out)["files"]["processed_now"] == 2
