"""Time per face of the Flax port of dlib's face-recognition ResNet beside dlib's own.

    python benchmarks/identity_net.py [--faces ../shared/faces] [--repeats 5]

Both run on the same 16 aligned 150x150 chips (dlib.get_face_chip of the photos in
shared/faces, repeated to 16): the Flax network jitted on a batch of 16, dlib's
compute_face_descriptor on the list of 16 chips (its own batching). Also times the full
differentiable path (JAX alignment from a 256x256 image + network) per face, and its gradient.
"""

import argparse
import os
import pathlib
import sys
import time

import dlib
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from facegen_jax.losses.identity import identity_loss  # pylint: disable=wrong-import-position
from facegen_jax.nets import dlib_resnet, face_resnet, load_frozen_net  # pylint: disable=wrong-import-position

BATCH = 16


def best_time(fn, repeats):
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return min(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--faces", type=pathlib.Path,
                      default=pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "faces")
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()

  detector = dlib.get_frontal_face_detector()
  predictor = dlib.shape_predictor(str(dlib_resnet.face_recognition_models_file("shape_predictor_68_face_landmarks.dat")))
  chips, crops = [], []
  for path in sorted((args.faces / "images").iterdir())[:BATCH]:
    image = np.asarray(Image.open(path).convert("RGB"))
    dets = detector(image, 1)
    if dets:
      shape = predictor(image, max(dets, key=lambda r: r.area()))
      chips.append(dlib.get_face_chip(image, shape, 150, 0.25))
      crops.append((image, np.array([[p.x, p.y] for p in shape.parts()], np.float32)))
  chips = (chips * BATCH)[:BATCH]
  print(f"{len(set(map(bytes, chips)))} distinct faces, batch {BATCH}, {jax.devices()[0].platform}, "
        f"{os.cpu_count()} CPUs")

  recognizer = dlib.face_recognition_model_v1(str(dlib_resnet.default_model_path()))
  t_dlib = best_time(lambda: recognizer.compute_face_descriptor(chips), args.repeats)

  variables, mean = dlib_resnet.load_dlib_resnet_variables()
  model = face_resnet.FaceRecognitionResNet(mean_rgb=mean)
  forward = jax.jit(model.apply)
  x = jnp.asarray(np.stack(chips), jnp.float32) / 127.5 - 1.0
  t = time.perf_counter()
  forward(variables, x)["embedding"].block_until_ready()
  t_compile = time.perf_counter() - t
  t_flax = best_time(lambda: forward(variables, x)["embedding"].block_until_ready(), args.repeats)

  # Full differentiable path on 256x256 images, as in training.
  net = load_frozen_net("dlib_resnet")
  images, landmarks = [], []
  for image, lm in (crops * BATCH)[:BATCH]:
    c = lm.mean(0)
    half = 1.5 * np.abs(lm - c).max()
    box = tuple(int(v) for v in (c[0] - half, c[1] - half, c[0] + half, c[1] + half))
    half = (box[2] - box[0]) / 2
    images.append(np.asarray(Image.fromarray(image).crop(box).resize((256, 256), Image.BILINEAR)))
    landmarks.append((lm - np.array(box[:2])) * 256 / (2 * half))
  images = jnp.asarray(np.stack(images), jnp.float32) / 127.5 - 1.0
  landmarks = jnp.asarray(np.stack(landmarks), jnp.float32)
  full = jax.jit(net.apply)
  full(net.params, images, landmarks)["embedding"].block_until_ready()
  t_full = best_time(lambda: full(net.params, images, landmarks)["embedding"].block_until_ready(), args.repeats)
  ref = full(net.params, images, landmarks)["embedding"]
  grad = jax.jit(jax.grad(lambda g: identity_loss(ref, net.apply(net.params, g, landmarks)["embedding"]).sum()))
  grad(images).block_until_ready()
  t_grad = best_time(lambda: grad(images).block_until_ready(), args.repeats)

  per = lambda s: f"{1000 * s / BATCH:7.2f} ms/face"
  print(f"dlib compute_face_descriptor (C++, 16 chips) {per(t_dlib)}")
  print(f"Flax ResNet, jitted batch of 16 chips        {per(t_flax)}   (compile {t_compile:.1f} s)")
  print(f"Flax align 256px + ResNet, batch of 16       {per(t_full)}")
  print(f"  ... + gradient of the identity loss        {per(t_grad)}")


if __name__ == "__main__":
  main()
