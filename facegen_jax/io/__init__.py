"""The bottom layer: files and folders every other package reads and writes.

- `video`: reading and writing clips (PyAV), keeping the frame rate and audio track;
- `checkpoints`: orbax checkpoints of a training workdir and the generator-only restore;
- `images`: uint8 <-> float image and mask conversions;
- `cache`: the user cache folder.

Imports nothing else of facegen_jax.
"""
