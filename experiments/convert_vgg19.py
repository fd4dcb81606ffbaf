"""Converts torchvision's ImageNet VGG19 weights (.pth) to the .npz that facegen-jax reads.

    python experiments/convert_vgg19.py vgg19-dcbb9e9d.pth vgg19.npz

then train with `--config.loss.perceptual_net=vgg19 --config.loss.vgg19_weights=vgg19.npz` on machines
without torch (where torch is installed, `loss.vgg19_weights` may name the .pth itself). Needs torch. The .npz keeps
torchvision's names and layout (`features.<i>.weight` `[out, in, 3, 3]`, `features.<i>.bias`);
the classifier is dropped. The output is checked by loading it as facegen-jax will.
"""

import argparse
import pathlib
import sys
from typing import Dict, Mapping

import numpy as np

from facegen_jax.nets import vgg19


def convert(state_dict: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """torchvision VGG19 state dict (arrays) -> the arrays to save: the conv trunk, float32."""
  state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}
  arrays = {k: np.asarray(v, np.float32) for k, v in state.items() if k.startswith("features.")}
  vgg19.params_from_torchvision(arrays, source="the state dict")  # raises if it is not VGG19
  return arrays


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("pth", type=pathlib.Path, help="torchvision vgg19 state dict, e.g. vgg19-dcbb9e9d.pth")
  parser.add_argument("npz", type=pathlib.Path, help="output .npz")
  args = parser.parse_args(argv)
  if not args.pth.is_file():
    sys.exit(f"{args.pth} does not exist; download torchvision's vgg19 ImageNet weights first")
  try:
    arrays = vgg19.read_torch_state_dict(args.pth)  # the same reader loss.vgg19_weights=*.pth uses
  except vgg19.WeightsError as e:
    sys.exit(str(e))
  args.npz.parent.mkdir(parents=True, exist_ok=True)
  np.savez(args.npz, **arrays)
  vgg19.read_weights(args.npz)
  print(f"wrote {args.npz} ({len(arrays)} arrays)")


if __name__ == "__main__":
  main()
