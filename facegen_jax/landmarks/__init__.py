"""Landmarks: detector backends, mask rendering, perturbation, video tracking, smoothing, crops."""

from facegen_jax.landmarks.detectors import BackendUnavailableError, Face, create_detector, load_image
from facegen_jax.landmarks.masks import mask_channels, render_mask, render_masks
from facegen_jax.landmarks.perturb import perturb_landmarks
