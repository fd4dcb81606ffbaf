"""Pretrained networks ported to Flax, used frozen by the identity / perceptual losses and evaluation.

    net = load_frozen_net("dlib_resnet")            # dlib's 128-D face descriptor (default)
    net = load_frozen_net("vgg19", weights_path="vgg19.npz")
    out = net.apply(net.params, images, landmarks)  # {"embedding": [B, D], "features": [...]}
"""

from facegen_jax.nets.base import FrozenNet
from facegen_jax.nets.dlib_resnet import load_dlib_resnet
from facegen_jax.nets.vgg19 import load_vgg19
from facegen_jax.nets.weights_cache import WeightsError

NAMES = ("dlib_resnet", "vgg19")


def load_frozen_net(name: str = "dlib_resnet", **kwargs) -> FrozenNet:
  """Loads a pretrained network by name.

  Args:
    name: "dlib_resnet" (kwargs: dat_path, cache, quantize_chips; see
      `facegen_jax.nets.dlib_resnet.load_dlib_resnet`) or "vgg19" (kwargs: weights_path,
      use_face_chip, chip_size; see `facegen_jax.nets.vgg19.load_vgg19`).
  Raises:
    ValueError: unknown name. WeightsError: weights missing or unreadable (the message says how
      to fix it).
  """
  if name == "dlib_resnet":
    return load_dlib_resnet(**kwargs)
  if name == "vgg19":
    return load_vgg19(**kwargs)
  raise ValueError(f"unknown loss network {name!r}; known: {', '.join(NAMES)}")


__all__ = ["FrozenNet", "WeightsError", "NAMES", "load_frozen_net"]
