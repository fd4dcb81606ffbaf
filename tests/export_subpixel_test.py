"""The ONNX export's sub-pixel rewrite of transposed convolutions (inference/export_formats.py,
`subpixel_transposed_convs`): on small graphs, onnxruntime gives the ConvTranspose's results
(with and without a bias and a batch norm folded in), and what it cannot rewrite stays."""

import numpy as np
import pytest

from facegen_jax.inference import export_formats

onnx = pytest.importorskip("onnx", reason="the onnx extra (pip install -e '.[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402  pylint: disable=wrong-import-position


def _graph(kernel: int, pads: list, bias: bool, batch_norm: bool, strides=(2, 2), seed: int = 0):
  """x [2, 5, 6, 7] -> ConvTranspose (-> BatchNormalization) -> y, random constants."""
  rng = np.random.default_rng(seed)
  c_in, c_out = 5, 3
  inits = [numpy_helper.from_array(rng.normal(size=(c_in, c_out, kernel, kernel)).astype(np.float32), "w")]
  inputs = ["x", "w"]
  if bias:
    inits.append(numpy_helper.from_array(rng.normal(size=c_out).astype(np.float32), "b"))
    inputs.append("b")
  nodes = [helper.make_node("ConvTranspose", inputs, ["t" if batch_norm else "y"], name="ct", strides=list(strides),
                            pads=pads)]
  if batch_norm:
    for name, value in (("gamma", rng.uniform(0.5, 2, c_out)), ("beta", rng.normal(size=c_out)),
                        ("mean", rng.normal(size=c_out)), ("var", rng.uniform(0.5, 2, c_out))):
      inits.append(numpy_helper.from_array(value.astype(np.float32), name))
    nodes.append(helper.make_node("BatchNormalization", ["t", "gamma", "beta", "mean", "var"], ["y"], name="bn",
                                  epsilon=1e-3))
  graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, c_in, 6, 7])],
                            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, c_out, 12, 14])], inits)
  return helper.make_model(graph, opset_imports=[helper.make_opsetid("", export_formats.ONNX_OPSET)])


def _run(proto, x):
  session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
  return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("kernel,pads,bias,batch_norm", [
    (4, [1, 1, 1, 1], False, True),  # the decoders' layers: 4x4, padding 1, a batch norm after
    (4, [1, 1, 1, 1], True, False),
    (2, [0, 0, 0, 0], True, True),
    (4, [2, 0, 0, 2], False, False),  # uneven padding: the phases' own paddings differ
])
def test_rewritten_graph_gives_the_transposed_convolutions_results(kernel, pads, bias, batch_norm):
  proto = _graph(kernel, pads, bias, batch_norm)
  x = np.random.default_rng(1).normal(size=(2, 5, 6, 7)).astype(np.float32)
  want = _run(proto, x)
  rewritten = _graph(kernel, pads, bias, batch_norm)
  assert export_formats.subpixel_transposed_convs(rewritten) == 1
  ops = [n.op_type for n in rewritten.graph.node]
  assert ops == ["Conv"] * 4 + ["Concat", "DepthToSpace"]  # the batch norm folded into the phases
  onnx.checker.check_model(rewritten, full_check=True)
  got = _run(rewritten, x)
  assert got.shape == want.shape == (2, 3, 12, 14)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_what_does_not_double_its_input_stays_a_conv_transpose():
  for proto in (_graph(3, [1, 1, 1, 1], False, False), _graph(4, [1, 1, 1, 1], False, False, strides=(1, 1))):
    assert export_formats.subpixel_transposed_convs(proto) == 0
    assert [n.op_type for n in proto.graph.node] == ["ConvTranspose"]
