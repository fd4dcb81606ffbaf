"""A reader for dlib's binary serialization of DNNs (`.dat` files), in numpy; no dlib needed.

dlib (dlib/serialize.h, dlib/dnn/{core,layers,input,loss,tensor}.h) writes a network as nested
objects, the outermost first:

* integers: one control byte (low 4 bits = byte count, bit 0x80 = negative) then that many
  little-endian magnitude bytes;
* strings: the length as an integer, then the bytes; bools: one byte;
* float / double scalars: two integers, mantissa and exponent (value = mantissa * 2**exponent);
* tensors: version 2 = integer header (n, k, nr, nc) then raw little-endian float32
  (version 1 stores each float as a scalar above); alias tensors: version + (n, k, nr, nc);
* `add_loss_layer`: version, loss details, subnetwork; `add_layer`: version, *subnetwork*, layer
  details, then its state (flags and cached tensors); tags and skips: version, subnetwork.

So a file starts with one version integer per layer (outermost first), then the input layer, then
each computational layer's details from the innermost outwards. Tags and skips leave only their
version, so the graph itself (which tag a residual adds) comes from the network's C++ type;
`read_network` checks that the file's layer sequence matches the one the caller expects.
"""

import dataclasses
import pathlib
from typing import Any, Dict, List, Sequence

import numpy as np


class DlibFormatError(ValueError):
  """The bytes are not the dlib serialization this reader expects."""


@dataclasses.dataclass
class Layer:
  """One deserialized computational layer.

  Attributes:
    kind: dlib's layer class without version suffix: "con", "affine", "relu", "add_prev",
      "avg_pool", "max_pool", "fc", "input_rgb_image_sized".
    version: the serialized version string, e.g. "con_4".
    attrs: scalars (filter sizes, strides, paddings, modes, ...).
    arrays: float32 numpy arrays (`filters` `[out, in, kh, kw]`, `biases` `[out]`, `gamma`,
      `beta` `[C]`, `weights` `[in, out]`).
  """

  kind: str
  version: str
  attrs: Dict[str, Any] = dataclasses.field(default_factory=dict)
  arrays: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


class Reader:
  """Sequential reader of dlib's primitive encodings over an in-memory buffer."""

  def __init__(self, data: bytes, name: str = "<bytes>"):
    self.buf = memoryview(data)
    self.pos = 0
    self.name = name

  def fail(self, what: str):
    raise DlibFormatError(f"{self.name}: {what} (at byte {self.pos} of {len(self.buf)})")

  def take(self, n: int) -> memoryview:
    if n < 0 or self.pos + n > len(self.buf):
      self.fail(f"unexpected end of data reading {n} bytes")
    out = self.buf[self.pos:self.pos + n]
    self.pos += n
    return out

  def int(self) -> int:
    control = self.take(1)[0]
    size = control & 0x0F
    if size == 0 or size > 8 or control & 0x70:
      self.fail(f"bad integer control byte 0x{control:02x}")
    value = int.from_bytes(self.take(size), "little")
    return -value if control & 0x80 else value

  def bool(self) -> bool:
    byte = self.take(1)[0]
    if byte not in (0, 1, ord("0"), ord("1")):
      self.fail(f"bad bool byte 0x{byte:02x}")
    return byte in (1, ord("1"))

  def string(self) -> str:
    n = self.int()
    if n > 1 << 20:
      self.fail(f"implausible string length {n}")
    return bytes(self.take(n)).decode("latin-1")

  def float(self) -> float:
    mantissa, exponent = self.int(), self.int()
    # float_details marks inf / -inf / nan with reserved exponents.
    special = {32000: np.inf, 32001: -np.inf, 32002: np.nan}
    if exponent in special:
      return float(special[exponent])
    return float(np.ldexp(float(mantissa), exponent))

  def tensor(self) -> np.ndarray:
    """A resizable_tensor, returned as float32 `[n, k, nr, nc]`."""
    version = self.int()
    if version not in (1, 2):
      self.fail(f"unknown tensor version {version}")
    shape = tuple(self.int() for _ in range(4))
    if any(d < 0 for d in shape) or np.prod(shape, dtype=np.int64) > 1 << 28:
      self.fail(f"implausible tensor shape {shape}")
    count = int(np.prod(shape, dtype=np.int64))
    if version == 2:
      data = np.frombuffer(self.take(4 * count), dtype="<f4").astype(np.float32)
    else:
      data = np.array([self.float() for _ in range(count)], np.float32)
    return data.reshape(shape)

  def alias_tensor(self) -> tuple:
    if self.int() != 1:
      self.fail("unknown alias_tensor version")
    return tuple(self.int() for _ in range(4))


def _split(params: np.ndarray, sizes: Sequence[int], reader: Reader, kind: str) -> List[np.ndarray]:
  flat = params.reshape(-1)
  if sum(sizes) != flat.size:
    reader.fail(f"{kind}: parameter tensor holds {flat.size} values, its aliases need {sum(sizes)}")
  return np.split(flat, np.cumsum(sizes)[:-1])


def _read_con(r: Reader, version: str) -> Layer:
  if version not in ("con_4", "con_5", "con_6"):
    r.fail(f"unsupported conv version {version!r}")
  params = r.tensor()
  attrs = {k: r.int() for k in ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")}
  filters, biases = r.alias_tensor(), r.alias_tensor()
  for k in ("lr_mult", "wd_mult", "bias_lr_mult", "bias_wd_mult"):
    attrs[k] = r.float()
  attrs["use_bias"] = r.bool() if version in ("con_5", "con_6") else True
  attrs["use_relu"] = r.bool() if version == "con_6" else False
  sizes = [int(np.prod(filters))] + ([int(np.prod(biases))] if attrs["use_bias"] else [])
  parts = _split(params, sizes, r, version)
  arrays = {"filters": parts[0].reshape(filters)}  # [out, in, kh, kw]
  arrays["biases"] = parts[1] if attrs["use_bias"] else np.zeros(filters[0], np.float32)
  return Layer("con", version, attrs, arrays)


def _read_affine(r: Reader, version: str) -> Layer:
  if version not in ("affine_", "affine_2"):
    r.fail(f"unsupported affine version {version!r} (batch-norm layers must be converted to affine)")
  params = r.tensor()
  gamma, beta = r.alias_tensor(), r.alias_tensor()
  attrs = {"mode": r.int()}  # 0 = CONV_MODE (per channel), 1 = FC_MODE
  attrs["disabled"] = r.bool() if version == "affine_2" else False
  g, b = _split(params, [int(np.prod(gamma)), int(np.prod(beta))], r, version)
  return Layer("affine", version, attrs, {"gamma": g, "beta": b})


def _read_pool(r: Reader, version: str) -> Layer:
  if version not in ("max_pool_2", "avg_pool_2"):
    r.fail(f"unsupported pooling version {version!r}")
  attrs = {k: r.int() for k in ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")}
  return Layer(version[:-2], version, attrs)


def _read_fc(r: Reader, version: str) -> Layer:
  if version not in ("fc_2", "fc_3"):
    r.fail(f"unsupported fc version {version!r}")
  attrs = {"num_outputs": r.int(), "num_inputs": r.int()}
  params = r.tensor()
  weights, biases = r.alias_tensor(), r.alias_tensor()
  attrs["bias_mode"] = r.int()  # 0 = FC_HAS_BIAS, 1 = FC_NO_BIAS
  for k in ("lr_mult", "wd_mult", "bias_lr_mult", "bias_wd_mult"):
    attrs[k] = r.float()
  attrs["use_bias"] = r.bool() if version == "fc_3" else True
  has_bias = attrs["bias_mode"] == 0 and attrs["use_bias"]
  sizes = [int(np.prod(weights))] + ([int(np.prod(biases))] if has_bias else [])
  parts = _split(params, sizes, r, version)
  arrays = {"weights": parts[0].reshape(attrs["num_inputs"], attrs["num_outputs"])}  # [in, out]
  if has_bias:
    arrays["biases"] = parts[1]
  return Layer("fc", version, attrs, arrays)


def _read_relu(r: Reader, version: str) -> Layer:
  if version == "relu_2":
    return Layer("relu", version, {"disabled": r.bool()})
  if version != "relu_":
    r.fail(f"unsupported relu version {version!r}")
  return Layer("relu", version, {"disabled": False})


def _read_add_prev(r: Reader, version: str) -> Layer:
  if version != "add_prev_":
    r.fail(f"unsupported add_prev version {version!r}")
  return Layer("add_prev", version)


_DETAIL_READERS = {
    "con_": _read_con, "affine_": _read_affine, "max_pool_": _read_pool, "avg_pool_": _read_pool,
    "fc_": _read_fc, "relu_": _read_relu, "add_prev_": _read_add_prev,
}


def _read_details(r: Reader) -> Layer:
  version = r.string()
  for prefix, read in _DETAIL_READERS.items():
    if version.startswith(prefix):
      return read(r, version)
  return r.fail(f"unsupported layer {version!r}")


def _read_input_rgb_image_sized(r: Reader) -> Layer:
  version = r.string()
  if version not in ("input_rgb_image_sized", "input_rgb_image"):
    r.fail(f"expected an RGB input layer, found {version!r}")
  attrs = {"avg_red": r.float(), "avg_green": r.float(), "avg_blue": r.float()}
  if version == "input_rgb_image_sized":
    attrs["nr"], attrs["nc"] = r.int(), r.int()
  return Layer("input_rgb_image_sized", version, attrs)


def _read_layer_state(r: Reader, add_layer_version: int, at_input: bool):
  """The trailing state an `add_layer` writes after its details (flags and cached tensors)."""
  r.bool()  # this_layer_setup_called
  r.bool()  # gradient_input_is_stale
  r.bool()  # get_output_and_gradient_input_disabled
  r.tensor()  # x_grad
  r.tensor()  # cached_output
  if at_input:
    r.tensor()  # grad_final
    if add_layer_version >= 3:
      r.int()  # _sample_expansion_factor
  elif add_layer_version >= 2:
    r.tensor()  # params_grad


@dataclasses.dataclass
class Network:
  """A deserialized network: loss details, input layer and computational layers, innermost first."""

  loss: Layer
  input: Layer
  layers: List[Layer]


def read_network(data: bytes, structure: Sequence[str], name: str = "<bytes>") -> Network:
  """Reads a dlib `add_loss_layer<LOSS, ...>` network.

  Args:
    data: the file's bytes.
    structure: the network's layers from the outermost (just under the loss) to the innermost
      computational layer, each "layer" (an add_layer), "tag" or "skip", as the C++ type nests
      them (the input layer is implied).
    name: file name for error messages.
  Returns:
    The loss, input and computational layers (innermost first).
  Raises:
    DlibFormatError: the bytes are not such a network or its layers differ from `structure`.
  """
  r = Reader(data, name)
  if r.int() != 1:
    r.fail("not a dlib network file (bad add_loss_layer version)")
  loss_version = r.string()
  if not loss_version.startswith("loss_metric_"):
    r.fail(f"expected a loss_metric network, found {loss_version!r}")
  loss = Layer("loss_metric", loss_version, {"margin": r.float(), "dist_thresh": r.float()})

  versions = []
  for i, token in enumerate(structure):
    v = r.int()
    if token != "layer":
      ok = v == 1
    else:  # the add_layer over the input layer has its own versions (2, 3)
      ok = v in ((2, 3) if i == len(structure) - 1 else (1, 2))
    if not ok:
      r.fail(f"layer {len(versions)} should be a {token}, found version {v}")
    versions.append((token, v))
  if structure[-1] != "layer":
    raise ValueError("structure must end with the innermost computational layer")
  input_layer = _read_input_rgb_image_sized(r)

  layers = []
  add_layer_versions = [v for t, v in versions if t == "layer"]
  for i, v in enumerate(reversed(add_layer_versions)):
    layers.append(_read_details(r))
    _read_layer_state(r, v, at_input=(i == 0))
  if r.pos != len(r.buf):
    r.fail(f"{len(r.buf) - r.pos} bytes left over after the network")
  return Network(loss, input_layer, layers)


def read_network_file(path, structure: Sequence[str]) -> Network:
  """`read_network` on a file; errors name the file."""
  path = pathlib.Path(path)
  return read_network(path.read_bytes(), structure, name=str(path))
