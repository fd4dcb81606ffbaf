"""What a pretrained loss network looks like to the rest of facegen-jax."""

import dataclasses
from typing import Any, Callable


@dataclasses.dataclass(frozen=True)
class FrozenNet:
  """A pretrained, frozen network used by the identity and perceptual losses and by evaluation.

  Its parameters are passed to the jitted train step as an ordinary argument (never closed over,
  so they are not baked into the compiled program as constants).

  Attributes:
    name: short name, e.g. "dlib_resnet" or "vgg19".
    params: pytree of arrays.
    apply: `apply(params, images, landmarks) -> {"embedding": [B, D], "features": [f1, f2, ...]}`
      with `images` `[B, H, W, 3]` float32 in [-1, 1] (any H, W) and `landmarks` `[B, 68, 2]`
      float32 pixel (x, y) coordinates in those images; each `f_k` is `[B, h_k, w_k, c_k]`.
      Differentiable with respect to `images`. `embedding` is L2-normalised where the net has
      one (VGG has none and returns an empty `[B, 0]` array).
  """

  name: str
  params: Any
  apply: Callable[..., dict]
