"""Reenacts a photo with a driving photo or video; see facegen_jax/inference/cli.py for the flags.

  python experiments/reenact.py --checkpoint=DIR --source=face.jpg --driving=clip.mp4 --output=out.mp4
"""

from facegen_jax.inference import cli

if __name__ == "__main__":
  cli.run()
