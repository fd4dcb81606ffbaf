"""Makes identity_golden.npz: dlib's landmarks and 128-D descriptors of the faces in shared/faces.

For every photo in ../shared/faces/images (RGBA and grey converted to RGB) where dlib's HOG
detector (1 upsample) finds a face, the largest face's 68 landmarks come from dlib's shape
predictor (face_recognition_models' shape_predictor_68_face_landmarks.dat), and two descriptors
from dlib.face_recognition_model_v1(dlib_face_recognition_resnet_model_v1.dat):
  descriptor_chip: compute_face_descriptor(get_face_chip(image, shape, 150, 0.25)) - the network
                   alone on dlib's aligned chip;
  descriptor_full: compute_face_descriptor(image, shape) - dlib's alignment + network.
The file also records each image's sha256 so a test notices when the photos change.

Run from the repository root:  PYTHONPATH=. python tests/golden/make_identity_golden.py [faces_dir]
"""

import hashlib
import pathlib
import sys

import dlib
import numpy as np
from PIL import Image

from facegen_jax.nets.dlib_resnet import face_recognition_models_file

HERE = pathlib.Path(__file__).resolve().parent
DEFAULT_FACES = HERE.parent.parent.parent / "shared" / "faces"


def load_rgb(path: pathlib.Path) -> np.ndarray:
  return np.asarray(Image.open(path).convert("RGB"))


def main(faces_dir: pathlib.Path) -> None:
  detector = dlib.get_frontal_face_detector()
  predictor = dlib.shape_predictor(str(face_recognition_models_file("shape_predictor_68_face_landmarks.dat")))
  recognizer = dlib.face_recognition_model_v1(
      str(face_recognition_models_file("dlib_face_recognition_resnet_model_v1.dat")))
  identities = {}
  for line in (faces_dir / "MANIFEST.tsv").read_text().splitlines()[1:]:
    cols = line.split("\t")
    identities[cols[0]] = cols[3]
  rows = []
  for path in sorted((faces_dir / "images").iterdir()):
    image = load_rgb(path)
    dets = detector(image, 1)
    if not dets:
      print(f"skip {path.name}: no face found")
      continue
    det = max(dets, key=lambda r: r.area())
    shape = predictor(image, det)
    chip = dlib.get_face_chip(image, shape, 150, 0.25)
    rows.append(dict(
        name=path.name, identity=identities[path.name],
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        landmarks=np.array([[p.x, p.y] for p in shape.parts()], np.float32),
        box=np.array([det.left(), det.top(), det.right(), det.bottom()], np.int32),
        descriptor_chip=np.array(recognizer.compute_face_descriptor(chip), np.float32),
        descriptor_full=np.array(recognizer.compute_face_descriptor(image, shape), np.float32)))
    print(f"{path.name}: {image.shape[1]}x{image.shape[0]}")
  out = HERE / "identity_golden.npz"
  np.savez_compressed(out, dlib_version=np.array(dlib.__version__), **{
      k: np.stack([r[k] for r in rows]) if isinstance(rows[0][k], np.ndarray) else np.array([r[k] for r in rows])
      for k in rows[0]})
  print(f"wrote {out} ({len(rows)} faces)")


if __name__ == "__main__":
  main(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_FACES)
