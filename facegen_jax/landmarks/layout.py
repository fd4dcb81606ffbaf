"""The iBUG 300-W 68-point landmark layout (dlib's and face-alignment's order).

Landmarks everywhere in facegen-jax are float32 arrays `[68, 2]` (or `[..., 68, 2]`) of
`(x, y)` pixel coordinates in the image they belong to, x to the right, y down.
"""

import numpy as np

NUM_LANDMARKS = 68

# Part name -> (first index, one past the last index, closed polygon?).
PARTS = {
    "jaw": (0, 17, False),
    "right_brow": (17, 22, False),  # the subject's right, image left
    "left_brow": (22, 27, False),
    "nose_bridge": (27, 31, False),
    "nose_base": (31, 36, False),
    "right_eye": (36, 42, True),
    "left_eye": (42, 48, True),
    "outer_lips": (48, 60, True),
    "inner_lips": (60, 68, True),
}
PART_NAMES = tuple(PARTS)

# Index permutation that mirrors a face horizontally: after flipping x, point i of the
# flipped face is point FLIP_PERMUTATION[i] of the original.
FLIP_PERMUTATION = (
    list(range(16, -1, -1))  # jaw
    + list(range(26, 21, -1))  # brows swap
    + list(range(21, 16, -1))
    + [27, 28, 29, 30]  # nose bridge
    + [35, 34, 33, 32, 31]  # nose base
    + [45, 44, 43, 42, 47, 46]  # eyes swap
    + [39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lips
    + [64, 63, 62, 61, 60, 67, 66, 65]  # inner lips
)
assert len(FLIP_PERMUTATION) == NUM_LANDMARKS and sorted(FLIP_PERMUTATION) == list(range(68))

CONTOUR = tuple(range(0, 17))
FEATURES = tuple(range(17, 68))


def rescale(landmarks, scale):
  """Landmarks of an image resized by `scale`, pixel centres at integers: `(lm + 0.5) * scale - 0.5`."""
  return (landmarks + 0.5) * scale - 0.5


# Mean of dlib's 68 landmarks over 20 real photos, each normalised to its landmark bounding box
# (centre 0, longest side 1).
MEAN_FACE = np.array([
    [-0.487, -0.289], [-0.478, -0.16], [-0.459, -0.032], [-0.435, 0.096], [-0.391, 0.218],
    [-0.314, 0.323], [-0.215, 0.408], [-0.1, 0.476], [0.029, 0.491], [0.155, 0.469],
    [0.259, 0.396], [0.348, 0.305], [0.414, 0.198], [0.45, 0.077], [0.469, -0.048],
    [0.483, -0.173], [0.486, -0.297], [-0.389, -0.394], [-0.327, -0.457], [-0.237, -0.478],
    [-0.145, -0.467], [-0.057, -0.433], [0.095, -0.434], [0.18, -0.468], [0.269, -0.478],
    [0.355, -0.457], [0.411, -0.395], [0.022, -0.343], [0.025, -0.256], [0.028, -0.169],
    [0.032, -0.08], [-0.069, -0.021], [-0.022, -0.005], [0.029, 0.01], [0.078, -0.006],
    [0.121, -0.022], [-0.283, -0.32], [-0.231, -0.352], [-0.169, -0.351], [-0.113, -0.313],
    [-0.172, -0.301], [-0.234, -0.3], [0.147, -0.315], [0.201, -0.353], [0.263, -0.353],
    [0.313, -0.32], [0.267, -0.302], [0.206, -0.303], [-0.171, 0.146], [-0.096, 0.115],
    [-0.023, 0.097], [0.029, 0.108], [0.08, 0.095], [0.147, 0.112], [0.214, 0.139],
    [0.15, 0.201], [0.085, 0.233], [0.029, 0.241], [-0.026, 0.237], [-0.098, 0.21],
    [-0.141, 0.151], [-0.023, 0.14], [0.03, 0.144], [0.081, 0.138], [0.184, 0.144],
    [0.081, 0.168], [0.028, 0.176], [-0.025, 0.17]], np.float32)
