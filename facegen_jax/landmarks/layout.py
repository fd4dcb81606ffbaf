"""The iBUG 300-W 68-point landmark layout (dlib's and face-alignment's order).

Landmarks everywhere in facegen-jax are float32 arrays `[68, 2]` (or `[..., 68, 2]`) of
`(x, y)` pixel coordinates in the image they belong to, x to the right, y down.
"""

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
