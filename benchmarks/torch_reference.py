"""The facegen-jax generator and discriminator written in PyTorch, for side-by-side timing.

Same layers, shapes, FLOPs and (after `load_flax_params`) the same outputs as
`facegen_jax.models.Generator` / `MultiScaleDiscriminator` built from the same config
(`facegen_jax.models.factory`), NCHW instead of NHWC. Submodules carry the flax module names
(`encoder.conv_0`, `generation_decoder.fuse_1.gamma`, `scale_0.logits`, ...) so parameters copy
over by path. Supported: the configs' choices (batch norm in the generator, instance norm or none
in the discriminator, "nearest"/"area" mask resizing, relu/leaky_relu, no spectral norm).

`TorchTrainStep` is the GAN train step of `facegen_jax.train.step` without the pretrained-net
losses (identity/perceptual weights 0): generator forward once, a discriminator Adam step on
real vs detached fake, then a generator Adam step on pixel + reconstruction L1 and the hinge
adversarial loss, and the EMA update.

Needs the `bench` extra (torch, CPU build).
"""

import re
from typing import Optional

import ml_collections
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facegen_jax.models import factory
from facegen_jax.models.generator import level_features, num_levels


def _activation(name: str):
  table = {"relu": F.relu, "leaky_relu": lambda x: F.leaky_relu(x, 0.2), "gelu": F.gelu, "silu": F.silu}
  return table[name]


def _same_conv(cin: int, cout: int, k: int, stride: int, bias: bool) -> nn.Module:
  """A conv with flax/XLA 'SAME' padding (asymmetric for even kernels at stride 1)."""
  total = k - stride if k > stride else 0  # valid for even sizes, which all layers here have
  lo, hi = total // 2, total - total // 2
  conv = nn.Conv2d(cin, cout, k, stride, padding=lo if lo == hi else 0, bias=bias)
  if lo == hi:
    return conv
  return nn.Sequential(nn.ZeroPad2d((lo, hi, lo, hi)), conv)


def _up(cin: int, cout: int, k: int, bias: bool) -> nn.ConvTranspose2d:
  """flax ConvTranspose(strides=2, padding='SAME') == torch ConvTranspose2d(padding=(k-2)/2)."""
  return nn.ConvTranspose2d(cin, cout, k, 2, padding=(k - 2) // 2, bias=bias)


def _resize_mask(mask: torch.Tensor, size: int, method: str) -> torch.Tensor:
  h = mask.shape[-1]
  if h == size:
    return mask
  f = h // size
  if method == "nearest":  # jax.image.resize "nearest" samples the pixel at the centre
    return mask[:, :, f // 2::f, f // 2::f]
  if method == "area":
    return F.avg_pool2d(mask, f)
  raise NotImplementedError(f"torch reference: mask_resize {method!r}")


class MaskAffineNorm(nn.Module):

  def __init__(self, channels: int, mask_channels: int, hidden: int, gamma_k: int, beta_k: int, modulation: str):
    super().__init__()
    self.param_free_norm = nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1, affine=False)
    cin = mask_channels
    if hidden:
      self.shared = nn.Conv2d(mask_channels, hidden, 3, padding=1)
      cin = hidden
    self.hidden = hidden
    self.gamma = _same_conv(cin, channels, gamma_k, 1, True)
    self.beta = _same_conv(cin, channels, beta_k, 1, True)
    self.modulation = modulation

  def forward(self, x, mask):
    normalized = self.param_free_norm(x)
    feats = F.relu(self.shared(mask)) if self.hidden else mask
    gamma, beta = self.gamma(feats), self.beta(feats)
    if self.modulation == "residual":
      return normalized * (1.0 + gamma) + beta
    return normalized * gamma + beta


class Generator(nn.Module):
  """`facegen_jax.models.Generator` in PyTorch (NCHW)."""

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__()
    m = config.model
    if m.norm != "batch":
      raise NotImplementedError("torch reference: generator norm must be 'batch'")
    self.resolution = config.resolution
    enc = level_features(num_levels(config.resolution, m.bottleneck_size), m.base_features, m.max_features)
    dec = enc[-2::-1]
    self.act = _activation(m.activation)
    self.mask_resize = m.mask_resize
    mask_ch = factory.mask_channels(config)
    k_enc, k_dec = m.encoder_kernel, m.decoder_kernel
    merge = factory.parse_merge_levels(m.merge_levels)
    self.merge = set(range(1, len(dec) + 1) if merge is None else merge)

    self.encoder = nn.ModuleDict()
    cin = 3
    for i, f in enumerate(enc):
      self.encoder[f"conv_{i}"] = nn.Conv2d(cin, f, k_enc, 2, padding=(k_enc - 2) // 2, bias=False)
      self.encoder[f"norm_{i}"] = nn.BatchNorm2d(f, eps=1e-5, momentum=0.1)
      cin = f

    self.reconstruction_decoder = nn.ModuleDict()
    cin = enc[-1]
    for k, f in enumerate(dec):
      self.reconstruction_decoder[f"up_{k}"] = _up(cin, f, k_dec, False)
      self.reconstruction_decoder[f"norm_{k}"] = nn.BatchNorm2d(f, eps=1e-5, momentum=0.1)
      cin = f
    self.reconstruction_decoder[f"up_{len(dec)}"] = _up(cin, 3, k_dec, True)

    g = nn.ModuleDict()
    g["stem"] = _up(enc[-1], dec[0], k_dec, False)
    g["stem_norm"] = nn.BatchNorm2d(dec[0], eps=1e-5, momentum=0.1)
    n, cin = len(dec), dec[0]
    for i in range(1, n + 1):
      if i in self.merge:
        cin += dec[i - 1]
      g[f"fuse_{i}"] = MaskAffineNorm(cin, mask_ch, m.hidden_features, m.gamma_kernel, m.beta_kernel, m.modulation)
      cout = dec[i] if i < n else 3
      g[f"up_{i}"] = _up(cin, cout, k_dec, i == n)
      cin = cout
    self.generation_decoder = g
    self.levels = n

  def forward(self, source: torch.Tensor, mask: torch.Tensor) -> dict:
    """source `[B, 3, R, R]` in [-1, 1], mask `[B, M, R, R]` in [0, 1]."""
    x, e = source, self.encoder
    for i in range(len(e) // 2):
      x = F.relu(e[f"norm_{i}"](e[f"conv_{i}"](x)))
    code = x
    r, inter = self.reconstruction_decoder, []
    for k in range(len(r) // 2):
      x = r[f"norm_{k}"](r[f"up_{k}"](self.act(x)))
      inter.append(x)
    reconstructed = torch.tanh(r[f"up_{len(r) // 2}"](self.act(x)))
    g = self.generation_decoder
    x = self.act(g["stem_norm"](g["stem"](code)))
    for i in range(1, self.levels + 1):
      if i in self.merge:
        x = torch.cat([x, inter[i - 1]], dim=1)
      x = self.act(g[f"fuse_{i}"](x, _resize_mask(mask, x.shape[-1], self.mask_resize)))
      x = g[f"up_{i}"](x)
    return {"generated": torch.tanh(x), "reconstructed": reconstructed}


class PatchDiscriminator(nn.Module):

  def __init__(self, cin: int, base: int, max_features: int, num_layers: int, norm: str):
    super().__init__()
    self.num_layers, self.norm = num_layers, norm
    for i in range(num_layers + 1):
      f = min(base * 2**i, max_features)
      normed = i > 0 and norm != "none"
      self.add_module(f"conv_{i}", _same_conv(cin, f, 4, 2 if i < num_layers else 1, not normed))
      if normed:
        self.add_module(f"norm_{i}", nn.InstanceNorm2d(f, eps=1e-5, affine=True))
      cin = f
    self.logits = _same_conv(cin, 1, 4, 1, True)

  def forward(self, x):
    for i in range(self.num_layers + 1):
      x = getattr(self, f"conv_{i}")(x)
      if i > 0 and self.norm != "none":
        x = getattr(self, f"norm_{i}")(x)
      x = F.leaky_relu(x, 0.2)
    return self.logits(x)


class MultiScaleDiscriminator(nn.Module):
  """`facegen_jax.models.MultiScaleDiscriminator` in PyTorch (NCHW); returns per-scale logits."""

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__()
    d = config.discriminator
    if d.spectral_norm:
      raise NotImplementedError("torch reference: spectral_norm")
    cin = 3 + (factory.mask_channels(config) if d.conditional else 0)
    self.num_scales = d.num_scales
    for k in range(d.num_scales):
      self.add_module(f"scale_{k}", PatchDiscriminator(cin, d.base_features, d.max_features, d.num_layers, d.norm))

  def forward(self, x):
    out = []
    for k in range(self.num_scales):
      if k > 0:
        x = F.avg_pool2d(x, 2)
      out.append(getattr(self, f"scale_{k}")(x))
    return out


def num_params(module: nn.Module) -> int:
  return sum(p.numel() for p in module.parameters())


_AUTO_NAMED = re.compile(r"^(BatchNorm|InstanceNorm)_\d+$")


def load_flax_params(module: nn.Module, flax_params) -> None:
  """Copies a flax params tree (of the same architecture) into `module`, in place."""
  flat = {}

  def walk(tree, path):
    if isinstance(tree, dict) or hasattr(tree, "items"):
      for k, v in tree.items():
        walk(v, path + (k,))
    else:
      flat[path] = np.asarray(tree)

  walk(flax_params, ())
  with torch.no_grad():
    for path, value in flat.items():
      names = [p for p in path[:-1] if not _AUTO_NAMED.match(p)]
      target = module
      for name in names:
        target = target[name] if isinstance(target, nn.ModuleDict) else getattr(target, name)
      if isinstance(target, nn.Sequential):  # ZeroPad2d + conv
        target = target[-1]
      leaf = path[-1]
      if leaf == "kernel":
        if isinstance(target, nn.ConvTranspose2d):  # flax: correlation over the dilated input
          value = np.ascontiguousarray(value[::-1, ::-1].transpose(2, 3, 0, 1))
        else:
          value = value.transpose(3, 2, 0, 1)
        param = target.weight
      elif leaf == "scale":
        param = target.weight
      elif leaf == "bias":
        param = target.bias
      else:
        raise KeyError(f"unexpected flax parameter {'/'.join(path)}")
      if tuple(param.shape) != value.shape:
        raise ValueError(f"{'/'.join(path)}: torch {tuple(param.shape)} vs flax {value.shape}")
      param.copy_(torch.from_numpy(np.array(value, dtype=np.float32)))


class TorchTrainStep:
  """One G+D step of the GAN (see module docstring) on NCHW float tensors."""

  def __init__(self, config: ml_collections.ConfigDict, autocast: Optional[torch.dtype] = None):
    """autocast: None (float32), or torch.bfloat16 to run the forward passes under
    `torch.autocast(<the parameters' device>, autocast)` (float32 parameters and optimizer; no loss scaling, which
    bfloat16's float32 exponent range does not need)."""
    self.autocast = autocast
    self.generator, self.discriminator = Generator(config), MultiScaleDiscriminator(config)
    opt = config.optimizer
    self.g_opt = torch.optim.Adam(self.generator.parameters(), lr=opt.g_learning_rate, betas=(opt.b1, opt.b2))
    self.d_opt = torch.optim.Adam(self.discriminator.parameters(), lr=opt.d_learning_rate, betas=(opt.b1, opt.b2))
    self.ema = [p.detach().clone() for p in self.generator.parameters()]
    self.ema_decay = opt.ema_decay
    self.pixel_w, self.rec_w = config.loss.first.pixel, config.loss.first.reconstruction
    self.adv_w = config.loss.first.adversarial
    self.conditional = config.discriminator.conditional

  def _d_in(self, image, mask):
    return torch.cat([image, mask], dim=1) if self.conditional else image

  def _forward(self):
    device = next(self.generator.parameters()).device.type  # "cpu", or "cuda" (benchmarks/gpu_check.py)
    return torch.autocast(device, dtype=self.autocast or torch.bfloat16, enabled=self.autocast is not None)

  def __call__(self, source, target, driving_mask, target_mask) -> dict:
    self.generator.train()
    with self._forward():
      out = self.generator(source, driving_mask)
    generated, reconstructed = out["generated"], out["reconstructed"]

    self.discriminator.requires_grad_(True)
    real_in, fake_in = self._d_in(target, target_mask), self._d_in(generated.detach(), driving_mask)
    with self._forward():
      logits = self.discriminator(torch.cat([real_in, fake_in], dim=0))
      n = source.shape[0]
      d_loss = sum(F.relu(1 - l[:n]).mean() + F.relu(1 + l[n:]).mean() for l in logits) / len(logits)
    self.d_opt.zero_grad(set_to_none=True)
    d_loss.backward()
    self.d_opt.step()

    self.discriminator.requires_grad_(False)
    with self._forward():
      fake_logits = self.discriminator(self._d_in(generated, driving_mask))
      adv = sum(-l.mean() for l in fake_logits) / len(fake_logits)
      g_loss = (self.pixel_w * (generated - target).abs().mean() + self.rec_w * (reconstructed - source).abs().mean()
                + self.adv_w * adv)
    self.g_opt.zero_grad(set_to_none=True)
    g_loss.backward()
    self.g_opt.step()
    with torch.no_grad():
      for e, p in zip(self.ema, self.generator.parameters()):
        e.mul_(self.ema_decay).add_(p, alpha=1 - self.ema_decay)
    return {"d/loss": float(d_loss.detach()), "g/total": float(g_loss.detach())}
