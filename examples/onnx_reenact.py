"""Reenacts a photo with the pose of another photo on an exported ONNX generator, with no model
code and no JAX: numpy, onnxruntime and facegen_jax.landmarks (dlib landmarks, face crops, face
masks and, for a generator with motion, the thin-plate spline's flow) are all it uses.

  python experiments/export.py --workdir=weights/demo_128 --output=/tmp/export --format=onnx
  python examples/onnx_reenact.py --model=/tmp/export/generator.onnx --source=face.jpg \
      --driving=pose.jpg --output=out.png

The generator's inputs follow the contract export.py writes beside the model (generator.onnx.json):
face crops in [-1, 1], the driving face mask in [0, 1], both faces' landmarks in crop pixels and,
with motion, the landmark flow from those landmarks (`tps.host_flow` or `pwa.host_flow`, float64 numpy, with the
contract's smoothing). The output is the generated face crop.
"""

import argparse
import json

import numpy as np
import onnxruntime as ort
from PIL import Image

from facegen_jax.landmarks import create_detector, crop as crop_lib, load_image, pwa, render_masks, tps

CROP_SCALE = 1.8  # the crop box the shipped models were trained on (Reenactor's default)


def face_crop(detector, path: str, resolution: int):
  """(crop [R, R, 3] uint8, its landmarks [68, 2] in crop pixels) of the largest face in `path`."""
  image = load_image(path)
  faces = detector.detect(image)
  if not faces:
    raise SystemExit(f"error: no face found in {path}")
  crop, landmarks, _ = crop_lib.crop_face(image, np.asarray(faces[0].landmarks, np.float32), resolution, CROP_SCALE)
  return crop, landmarks.astype(np.float32)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--model", required=True, help="generator.onnx written by experiments/export.py")
  parser.add_argument("--source", required=True, help="photo of the person to animate")
  parser.add_argument("--driving", required=True, help="photo giving the pose and expression")
  parser.add_argument("--output", required=True, help="output PNG (the generated face crop)")
  args = parser.parse_args()
  with open(args.model + ".json") as f:
    contract = json.load(f)
  r = int(contract["resolution"])
  detector = create_detector("dlib")
  source, source_landmarks = face_crop(detector, args.source, r)
  _, driving_landmarks = face_crop(detector, args.driving, r)  # the driving pose, framed as the source
  masks = render_masks(driving_landmarks[None], r, per_part=bool(contract["mask_per_part"]))
  inputs = {
      "sources": source[None].astype(np.float32) / 127.5 - 1.0,
      "masks": masks.astype(np.float32) / 255.0,
      "source_landmarks": source_landmarks[None],
      "driving_landmarks": driving_landmarks[None],
  }
  if "tps" in contract:  # a generator with motion: the flow is computed here, in float64
    if contract["tps"]["function"].endswith("pwa.host_flow"):  # motion "landmark_pwa"
      inputs["tps_flow"] = pwa.host_flow(inputs["source_landmarks"], inputs["driving_landmarks"], r)
    else:
      inputs["tps_flow"] = tps.host_flow(inputs["source_landmarks"], inputs["driving_landmarks"], r,
                                         float(contract["tps"]["smoothing"]))
  session = ort.InferenceSession(args.model, providers=ort.get_available_providers())
  generated = session.run(["generated"], inputs)[0][0]
  Image.fromarray(np.clip(np.round((generated + 1.0) * 127.5), 0, 255).astype(np.uint8)).save(args.output)
  print(f"wrote {args.output} ({r}x{r}, {session.get_providers()[0]})")


if __name__ == "__main__":
  main()
