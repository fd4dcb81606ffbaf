"""VGG19 (torchvision's `vgg19().features`) in Flax, for a perceptual loss on ImageNet features.

No weights ship with facegen-jax and none can be downloaded: the user supplies torchvision's
ImageNet state dict (keys `features.<i>.weight` `[out, in, 3, 3]` and `features.<i>.bias`), either
as the `.pth` itself, read with torch (only then imported), or converted to `.npz` by
`experiments/convert_vgg19.py` (same keys and layout), which needs no torch at training time.
`load_vgg19(weights_path)` returns a FrozenNet whose `features` are relu1_1, relu2_1, relu3_1,
relu4_1 and relu5_1 (the layers of the usual perceptual losses) and whose `embedding` is empty.
"""

import os
import pathlib
import zipfile
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from facegen_jax.nets import face_align
from facegen_jax.nets.base import FrozenNet
from facegen_jax.nets.weights_cache import WeightsError

# (block, convs per block): conv<b>_<k>, each 3x3 / pad 1 / ReLU, a 2x2 max pool after each block.
BLOCKS: Tuple[Tuple[int, int], ...] = ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4))
CHANNELS = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}
FEATURE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")  # taken after their ReLU
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_FIX = ("Pass torchvision's ImageNet VGG19 state dict (vgg19-dcbb9e9d.pth; reading it needs torch) or the .npz "
        "that `python experiments/convert_vgg19.py vgg19-dcbb9e9d.pth vgg19.npz` writes from it.")
_TORCH_SUFFIXES = (".pth", ".pt")


def torchvision_indices() -> Dict[str, int]:
  """conv name -> its index in torchvision's `vgg19().features` Sequential."""
  out, i = {}, 0
  for block, convs in BLOCKS:
    for k in range(1, convs + 1):
      out[f"conv{block}_{k}"] = i
      i += 2  # conv, relu
    i += 1  # max pool
  return out


def _needed_convs() -> List[str]:
  last = FEATURE_LAYERS[-1]
  names = list(torchvision_indices())
  return names[:names.index(last) + 1]


class VGG19Features(nn.Module):
  """VGG19's convolutional trunk up to relu5_1, on ImageNet-normalised input.

  Attributes:
    feature_layers: convs whose ReLU outputs are returned (in order).
  """

  feature_layers: Sequence[str] = FEATURE_LAYERS

  @nn.compact
  def __call__(self, images: jnp.ndarray) -> List[jnp.ndarray]:
    """Args: images `[B, H, W, 3]` RGB in [-1, 1]. Returns the feature maps, `f_k`
    `[B, H / 2**k, W / 2**k, c_k]` for relu1_1 ... relu5_1."""
    x = ((images.astype(jnp.float32) + 1.0) / 2.0 - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
    last = self.feature_layers[-1]
    features = []
    for block, convs in BLOCKS:
      if block > 1:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      for k in range(1, convs + 1):
        name = f"conv{block}_{k}"
        x = nn.relu(nn.Conv(CHANNELS[block], (3, 3), padding=((1, 1), (1, 1)), name=name)(x))
        if name in self.feature_layers:
          features.append(x)
        if name == last:
          return features
    return features


def params_from_torchvision(state: Dict[str, np.ndarray], source: str = "weights") -> Dict[str, object]:
  """Flax variables of `VGG19Features` from torchvision `features.<i>.weight/bias` arrays."""
  params = {}
  in_channels = 3
  index = torchvision_indices()
  for name in _needed_convs():
    block = int(name[4])
    w_key, b_key = f"features.{index[name]}.weight", f"features.{index[name]}.bias"
    if w_key not in state or b_key not in state:
      raise WeightsError(f"{source} lacks {w_key} / {b_key}: not a torchvision VGG19 state dict. {_FIX}")
    w, b = np.asarray(state[w_key], np.float32), np.asarray(state[b_key], np.float32)
    want = (CHANNELS[block], in_channels, 3, 3)
    if w.shape != want or b.shape != (want[0],):
      raise WeightsError(f"{source}: {w_key} has shape {w.shape} (bias {b.shape}), VGG19 needs {want}. {_FIX}")
    if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
      raise WeightsError(f"{source}: {w_key} holds non-finite values. {_FIX}")
    params[name] = {"kernel": np.transpose(w, (2, 3, 1, 0)), "bias": b}  # OIHW -> HWIO
    in_channels = want[0]
  return {"params": params}


def _torch_state_arrays(state: Mapping, path: pathlib.Path) -> Dict[str, np.ndarray]:
  """The trunk of a loaded torch state dict as float32 arrays, as `experiments/convert_vgg19.py` writes them."""
  import torch  # pylint: disable=import-outside-toplevel  # already imported by read_torch_state_dict
  if isinstance(state, Mapping) and "state_dict" in state:  # a training checkpoint wrapping it
    state = state["state_dict"]
  if not isinstance(state, Mapping):
    raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict: expected torchvision's vgg19 "
                       f"`model.state_dict()`. {_FIX}")
  arrays = {}
  for key, value in state.items():
    if not isinstance(key, str):
      continue
    key = key[len("module."):] if key.startswith("module.") else key  # DataParallel prefix
    if not key.startswith("features."):
      continue  # the classifier, which the loss does not use
    if not torch.is_tensor(value):
      raise WeightsError(f"{path}: {key} is a {type(value).__name__}, not a tensor. {_FIX}")
    arrays[key] = value.detach().to("cpu", torch.float32).numpy()
  return arrays


def read_torch_state_dict(weights_path: os.PathLike) -> Dict[str, np.ndarray]:
  """torchvision's VGG19 `.pth` state dict as the arrays `experiments/convert_vgg19.py` saves to `.npz`.

  Args:
    weights_path: a `torch.save`d state dict (`features.<i>.weight` / `.bias`; a `module.` prefix
      or a `{"state_dict": ...}` wrapper is accepted, the classifier is dropped).

  Returns:
    `features.*` name -> float32 array, torchvision layout (`[out, in, 3, 3]` kernels).

  Raises:
    WeightsError: torch is not installed, or the file is damaged or not a state dict.
  """
  path = pathlib.Path(weights_path)
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise WeightsError(
        f"reading {path} needs torch, which is not installed: `pip install -e \".[bench]\"` (or `pip install torch`), "
        f"or run `python experiments/convert_vgg19.py {path.name} vgg19.npz` where torch is installed and set "
        "loss.vgg19_weights to the .npz.") from e
  try:
    state = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # pylint: disable=broad-except  # a damaged file makes torch.load raise almost anything
    # torch's first sentence only: its UnpicklingError goes on to suggest weights_only=False, unsafe here.
    reason = (str(e).strip().splitlines() or [""])[0].split(". ")[0][:200].rstrip(".")
    reason = f"{type(e).__name__}: {reason}" if reason else type(e).__name__
    raise WeightsError(f"cannot read VGG19 weights {path} with torch.load(weights_only=True) ({reason}): the "
                       "file is damaged or not a state dict saved with `torch.save(model.state_dict(), ...)`. "
                       f"{_FIX}") from e
  return _torch_state_arrays(state, path)


def read_weights(weights_path: os.PathLike) -> Dict[str, object]:
  """Flax variables from torchvision's `.pth`/`.pt` state dict (needs torch) or its converted `.npz`."""
  path = pathlib.Path(weights_path)
  if not path.is_file():
    raise WeightsError(f"VGG19 weights not found at {path}. {_FIX}")
  if path.suffix.lower() in _TORCH_SUFFIXES:
    return params_from_torchvision(read_torch_state_dict(path), source=str(path))
  try:
    with np.load(path, allow_pickle=False) as data:
      state = {k: np.asarray(data[k]) for k in data.files}
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
    raise WeightsError(f"cannot read VGG19 weights {path}: {e}. {_FIX}") from e
  return params_from_torchvision(state, source=str(path))


def load_vgg19(weights_path: Optional[os.PathLike] = None, use_face_chip: bool = False,
               chip_size: int = 224) -> FrozenNet:
  """The FrozenNet "vgg19".

  Args:
    weights_path: torchvision's ImageNet VGG19 state dict, as `.pth`/`.pt` (needs torch) or converted
      to `.npz`; required.
    use_face_chip: run on dlib-aligned face chips (`chip_size`, padding 0.25) instead of the whole
      image; the landmarks are used only then.
    chip_size: side of those chips.
  """
  if not weights_path:
    raise WeightsError("the vgg19 loss network needs ImageNet weights: pass weights_path= (config "
                       f"loss.vgg19_weights). {_FIX}")
  variables = read_weights(weights_path)
  model = VGG19Features()

  def apply(params, images, landmarks):
    if use_face_chip:
      images = face_align.extract_face_chips(images, landmarks, size=chip_size, padding=0.25)
    features = model.apply(params, images)
    return {"embedding": jnp.zeros((images.shape[0], 0), jnp.float32), "features": features}

  return FrozenNet(name="vgg19", params=jax.tree.map(jnp.asarray, variables), apply=apply)
