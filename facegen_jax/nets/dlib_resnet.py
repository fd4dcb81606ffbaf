"""The dlib face-recognition ResNet as a FrozenNet: converted weights + alignment + network.

`load_dlib_resnet()` converts `dlib_face_recognition_resnet_model_v1.dat` (from the
`face-recognition-models` package) once into the cache (see `weights_cache`) and returns a
FrozenNet whose `apply(params, images, landmarks)` aligns each face as dlib does (150x150 chip,
padding 0.25) and runs the Flax port: `embedding` is dlib's 128-D descriptor, L2-normalised;
`features` are the network's intermediate maps (see `FaceRecognitionResNet`).
"""

import importlib.util
import os
import pathlib
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from facegen_jax.nets import dlib_format
from facegen_jax.nets import face_align
from facegen_jax.nets import face_resnet
from facegen_jax.nets import weights_cache
from facegen_jax.nets.base import FrozenNet

_INSTALL_FIX = "Reinstall the model package: pip install --force-reinstall face-recognition-models"


def face_recognition_models_file(name: str) -> pathlib.Path:
  """A model file of the `face-recognition-models` package, found without importing it (its
  `__init__` needs `pkg_resources`, which recent setuptools no longer ship)."""
  spec = importlib.util.find_spec("face_recognition_models")
  if spec is None or not spec.origin:
    raise weights_cache.WeightsError(
        f"{name} comes from the face-recognition-models package, which is not installed: "
        "pip install face-recognition-models")
  return pathlib.Path(spec.origin).parent / "models" / name


def default_model_path() -> pathlib.Path:
  """Path of `dlib_face_recognition_resnet_model_v1.dat` from `face-recognition-models`."""
  return face_recognition_models_file("dlib_face_recognition_resnet_model_v1.dat")


def convert_dat(dat_path: os.PathLike):
  """Parses dlib's `.dat` into (Flax variables, input mean RGB). Errors name the file."""
  dat_path = pathlib.Path(dat_path)
  if not dat_path.is_file():
    raise weights_cache.WeightsError(f"dlib face-recognition model not found at {dat_path}. {_INSTALL_FIX}")
  try:
    network = dlib_format.read_network_file(dat_path, face_resnet.STRUCTURE)
    return face_resnet.params_from_dlib(network), face_resnet.input_mean(network)
  except dlib_format.DlibFormatError as e:
    raise weights_cache.WeightsError(
        f"{dat_path} is not a readable dlib face-recognition ResNet ({e}). {_INSTALL_FIX}") from e


def _reference_variables():
  model = face_resnet.FaceRecognitionResNet()
  chips = jax.ShapeDtypeStruct((1, face_resnet.CHIP_SIZE, face_resnet.CHIP_SIZE, 3), jnp.float32)
  return jax.eval_shape(model.init, jax.random.key(0), chips)


def load_dlib_resnet_variables(dat_path: Optional[os.PathLike] = None, cache: Optional[os.PathLike] = None):
  """Flax variables and mean RGB of the dlib ResNet, from the cache or converted into it.

  Args:
    dat_path: the dlib `.dat` file (default: the one of `face-recognition-models`).
    cache: cache directory (default: `weights_cache.cache_dir()`).
  Returns:
    `(variables, mean_rgb)`.
  """
  dat_path = pathlib.Path(dat_path) if dat_path is not None else default_model_path()
  if not dat_path.is_file():
    raise weights_cache.WeightsError(f"dlib face-recognition model not found at {dat_path}. {_INSTALL_FIX}")
  cache_file = weights_cache.cache_dir(cache) / f"dlib_resnet_v1-{weights_cache.file_digest(dat_path)}.npz"
  if not cache_file.exists():
    variables, mean = convert_dat(dat_path)
    weights_cache.save_tree(cache_file, variables, extra={"mean_rgb": np.asarray(mean, np.float32)})
  variables, extra = weights_cache.load_tree(
      cache_file, _reference_variables(), fix=f"Delete {cache_file} to convert {dat_path} again.")
  if extra.get("mean_rgb", np.zeros(0)).shape != (3,):
    raise weights_cache.WeightsError(f"weights file {cache_file} lacks the input mean. Delete it to convert again.")
  return variables, tuple(float(v) for v in extra["mean_rgb"])


def load_dlib_resnet(dat_path: Optional[os.PathLike] = None, cache: Optional[os.PathLike] = None,
                     quantize_chips: bool = False) -> FrozenNet:
  """The FrozenNet "dlib_resnet" (see the module docstring).

  Args:
    dat_path: the dlib `.dat` file (default: the one of `face-recognition-models`).
    cache: cache directory for the converted weights.
    quantize_chips: round the aligned chips to uint8 steps like dlib (for bit-level comparisons;
      gradients pass straight through).
  """
  variables, mean = load_dlib_resnet_variables(dat_path, cache)
  model = face_resnet.FaceRecognitionResNet(mean_rgb=mean)

  def apply(params, images, landmarks):
    chips = face_align.extract_face_chips(images, landmarks, size=face_resnet.CHIP_SIZE, padding=0.25,
                                          quantize=quantize_chips)
    out = model.apply(params, chips)
    return {"embedding": out["embedding"], "features": out["features"]}

  return FrozenNet(name="dlib_resnet", params=jax.tree.map(jnp.asarray, variables), apply=apply)
