#!/usr/bin/python3
"""Writes tests/fixtures/onnx/helper-model.onnx with the official onnx Python library.

tests/onnx/codec.test.ts decodes it and checks the fields below one by one, so keep the two in
step. It uses every attribute type and every tensor storage kind; the protobuf serializer writes
TensorProto.*_data packed and dims / AttributeProto.floats / ints unpacked, so the decoder sees
both forms. Not a runnable model (it has a custom-domain node); the checker is not run on it.

Run: /usr/bin/python3 bench/parity/make_onnx_fixture.py   (Debian python3-onnx 1.12)
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "onnx", "helper-model.onnx")

F = TensorProto.FLOAT

# Initializers, one per storage kind.
w_float_data = helper.make_tensor("w_float_data", F, [2, 3], [0.5, -1.0, 2.0, 3.25, 0.0, -0.125])
w_raw = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(3, 2) / 4, "w_raw")
w_int64 = helper.make_tensor("w_int64", TensorProto.INT64, [3], [-1, 0, 2**40])
w_int32 = helper.make_tensor("w_int32", TensorProto.INT32, [3], [-7, 0, 123456])
w_double = helper.make_tensor("w_double", TensorProto.DOUBLE, [2], [1.5, -2.25])
w_uint64 = helper.make_tensor("w_uint64", TensorProto.UINT64, [2], [0, 2**63 + 5])
w_string = helper.make_tensor("w_string", TensorProto.STRING, [2], [b"hello", b"onnx"])
w_external = TensorProto(name="w_external", data_type=F, dims=[4])
w_external.data_location = TensorProto.EXTERNAL
for k, v in (("location", "weights.bin"), ("offset", "64"), ("length", "16")):
    entry = w_external.external_data.add()
    entry.key, entry.value = k, v

sparse = helper.make_sparse_tensor(
    helper.make_tensor("sp_values", F, [2], [1.0, 2.0]),
    helper.make_tensor("sp_indices", TensorProto.INT64, [2], [1, 5]),
    [2, 3],
)

# Sub-graphs for If (g attribute) and for the graphs attribute of the custom node.
def branch(name, value):
    c = helper.make_node("Constant", [], [name + "_out"], value=helper.make_tensor(name + "_v", F, [1], [value]))
    return helper.make_graph([c], name, [], [helper.make_tensor_value_info(name + "_out", F, [1])])

if_node = helper.make_node("If", ["cond"], ["if_out"], name="if", then_branch=branch("then", 1.0),
                           else_branch=branch("else", 2.0))

tp_seq = helper.make_tensor_type_proto(TensorProto.INT64, ["n", 4])
custom = helper.make_node(
    "Everything", ["x"], ["y"], name="custom", domain="com.example", doc_string="all attribute types",
    alpha=0.25,
    axis=-1,
    mode="bilinear",
    value=helper.make_tensor("attr_t", F, [2], [1.0, -1.0]),
    body=branch("body", 3.0),
    sparse=sparse,
    elem=tp_seq,
    scales=[1.0, 0.5, -2.0],
    perm=[0, 2, 1, -3],
    names=["a", "bc"],
    weights=[helper.make_tensor("t0", TensorProto.INT32, [1], [9]), numpy_helper.from_array(np.array([1.0], np.float32), "t1")],
    branches=[branch("g0", 4.0), branch("g1", 5.0)],
    sparses=[sparse],
    types=[tp_seq, helper.make_tensor_type_proto(F, None)],
)
ref = helper.make_attribute("ref_alpha", 0.0)
ref.ClearField("f")
ref.type = onnx.AttributeProto.FLOAT
ref.ref_attr_name = "alpha"
custom.attribute.append(ref)

graph = helper.make_graph(
    [if_node, custom],
    "helper_graph",
    [helper.make_tensor_value_info("x", F, ["batch", 3]), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
    [helper.make_tensor_value_info("y", F, ["batch", None]), helper.make_tensor_value_info("if_out", F, [1])],
    [w_float_data, w_raw, w_int64, w_int32, w_double, w_uint64, w_string, w_external],
    doc_string="fixture graph",
    value_info=[helper.make_tensor_value_info("mid", TensorProto.FLOAT16, [2, "k"])],
    sparse_initializer=[sparse],
)
model = helper.make_model(
    graph,
    producer_name="make_onnx_fixture",
    producer_version="1",
    opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
    doc_string="patchdpo codec fixture",
)
model.model_version = 3
model.domain = "org.patchdpo"
helper.set_model_props(model, {"author": "patchdpo", "purpose": "codec test"})

os.makedirs(os.path.dirname(OUT), exist_ok=True)
# SerializeToString, not onnx.save: save would try to resolve the external tensor's file.
with open(OUT, "wb") as f:
    f.write(model.SerializeToString())
print(f"wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT)} bytes, onnx {onnx.__version__}, ir {model.ir_version})")
