"""dlib's serialization primitives and the network reader's checks, on constructed bytes."""

import numpy as np
import pytest

from facegen_jax.nets import dlib_format, face_resnet


def dlib_int(value: int) -> bytes:
  """dlib's ser_helper::pack_int."""
  magnitude = abs(value).to_bytes(max(1, (abs(value).bit_length() + 7) // 8), "little")
  return bytes([len(magnitude) | (0x80 if value < 0 else 0)]) + magnitude


def dlib_string(s: str) -> bytes:
  return dlib_int(len(s)) + s.encode()


def test_primitives():
  data = (dlib_int(0) + dlib_int(150) + dlib_int(-28) + dlib_int(4736) + dlib_string("con_4")
          + dlib_int(0xA3D70A) + dlib_int(-28)  # float 0.04 as mantissa * 2**exponent
          + bytes([1])
          + dlib_int(2) + b"".join(dlib_int(d) for d in (2, 1, 1, 3)) + np.arange(6, dtype="<f4").tobytes())
  r = dlib_format.Reader(data)
  assert [r.int(), r.int(), r.int(), r.int()] == [0, 150, -28, 4736]
  assert r.string() == "con_4"
  assert r.float() == pytest.approx(0.04)
  assert r.bool() is True
  np.testing.assert_array_equal(r.tensor(), np.arange(6, dtype=np.float32).reshape(2, 1, 1, 3))
  assert r.pos == len(data)


def test_errors_name_the_source_and_position():
  with pytest.raises(dlib_format.DlibFormatError, match=r"x.dat: bad integer control byte 0x7f \(at byte 1"):
    dlib_format.Reader(b"\x7f", "x.dat").int()
  with pytest.raises(dlib_format.DlibFormatError, match="unexpected end of data"):
    dlib_format.Reader(dlib_int(2) + dlib_int(10) + dlib_int(1) * 3, "t").tensor()


def test_read_network_rejects_other_files():
  with pytest.raises(dlib_format.DlibFormatError, match="not a dlib network file"):
    dlib_format.read_network(dlib_int(7), face_resnet.STRUCTURE, "f")
  with pytest.raises(dlib_format.DlibFormatError, match="expected a loss_metric network, found 'loss_multiclass_log_'"):
    dlib_format.read_network(dlib_int(1) + dlib_string("loss_multiclass_log_"), face_resnet.STRUCTURE, "f")
  header = dlib_int(1) + dlib_string("loss_metric_2") + (dlib_int(1) + dlib_int(0)) * 2
  # A network whose first layers are tags where the ResNet has layers.
  with pytest.raises(dlib_format.DlibFormatError, match="layer 0 should be a layer, found version 7"):
    dlib_format.read_network(header + dlib_int(7), face_resnet.STRUCTURE, "f")


def test_structure_counts_the_resnet_layers():
  s = face_resnet.STRUCTURE
  assert s.count("tag") == 14 + 4 and s.count("skip") == 4  # tag1 per block, tag2 per down block
  # 29 convs, 29 affines, 29 relus, 14 add_prevs, 4+1 avg pools, 1 max pool, 1 fc
  assert s.count("layer") == 29 * 3 + 14 + 5 + 1 + 1
