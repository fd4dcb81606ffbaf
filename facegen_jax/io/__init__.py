"""The bottom layer: files and folders every other package reads and writes.

- `video`: reading clips as displayed (display rotation applied) and writing them (PyAV), keeping
  the frame rate and audio track;
- `checkpoints`: orbax checkpoints of a training workdir (sealed with checksums, damaged steps set
  aside) and the generator-only restore;
- `images`: the one image-file loader (bounded: a pixel limit checked before decoding) and uint8 <->
  float image and mask conversions;
- `cache`: the user cache folder;
- `paths`: local paths and bucket URLs (`gs://`) through etils.epath, and the local copies made for
  readers and writers of local files only.

Imports nothing else of facegen_jax.
"""
