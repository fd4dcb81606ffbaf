"""Flax modules of the reenactment GAN (NHWC throughout)."""

from facegen_jax.models.decoders import GenerationDecoder, ReconstructionDecoder
from facegen_jax.models.discriminator import MultiScaleDiscriminator, PatchDiscriminator
from facegen_jax.models.encoder import TextureEncoder
from facegen_jax.models.generator import Generator, num_levels
from facegen_jax.models.mask_affine_norm import MaskAffineNorm
