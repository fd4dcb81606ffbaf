"""Inference: the Reenactor API, video I/O, motion transfer, detail blend, paste-back."""

from facegen_jax.inference.generator_model import GeneratorModel
from facegen_jax.inference.reenactor import Reenactor, SourceFace, VideoReport
