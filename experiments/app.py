"""The web app; see facegen_jax/inference/app.py for the flags.

  python experiments/app.py --checkpoint=weights/demo_128 --port=7860
"""

from facegen_jax.inference import app

if __name__ == "__main__":
  app.run()
