"""TensorRT-readiness lint (exporters/trt_lint.py, `edgeasr lint-trt`): small hand-built graphs, no TensorRT."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from edgeasr.exporters.trt_lint import ERROR, WARNING, lint_model, load_op_table
from edgeasr.cli.lint import lint_trt

K, N = 8, 6


def _model(nodes, inputs, outputs, inits=(), opset=17, domains=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    m = helper.make_model(g, opset_imports=imports)
    m.ir_version = 8
    return m


def _x(name="x", dims=("B", "T", K), dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, list(dims))


def _w(name="W", shape=(K, N)):
    return numpy_helper.from_array(np.random.default_rng(0).standard_normal(shape).astype(np.float32), name)


def clean_model():
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="proj"),
             helper.make_node("Relu", ["h"], ["y"], name="act")]
    return _model(nodes, [_x()], [_x("y", ("B", "T", N))], [_w()])


def errors(problems):
    return [p for p in problems if p.severity == ERROR]


def by_node(problems, name):
    return [p for p in problems if p.node == name]


def qdq_model(zp_dtype=TensorProto.INT8, zp_value=0, axis=1, per_channel=True, opset=17, weight_shape=(K, N)):
    """x -> Q/DQ (per-tensor) -> MatMul(DQ(W int8, per-channel scales))."""
    rng = np.random.default_rng(1)
    np_zp = {TensorProto.INT8: np.int8, TensorProto.UINT8: np.uint8}[zp_dtype]
    wq = rng.integers(-127, 127, weight_shape).astype(np.int8)
    n_scales = weight_shape[axis] if per_channel else 1
    w_scale = np.full(n_scales, 0.01, np.float32) if per_channel else np.array(0.01, np.float32)
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
             numpy_helper.from_array(np.array(zp_value, np_zp), "x_zp"),
             numpy_helper.from_array(wq, "Wq"),
             numpy_helper.from_array(w_scale, "w_scale"),
             numpy_helper.from_array(np.zeros(w_scale.shape, np.int8), "w_zp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["xq"], name="x_q"),
             helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xdq"], name="x_dq"),
             helper.make_node("DequantizeLinear", ["Wq", "w_scale", "w_zp"], ["wdq"], name="w_dq",
                              **({"axis": axis} if per_channel else {})),
             helper.make_node("MatMul", ["xdq", "wdq"], ["y"], name="proj")]
    return _model(nodes, [_x()], [_x("y", ("B", "T", N))], inits, opset=opset)


def test_op_table_describes_its_version_and_source():
    table = load_op_table()
    assert table["trt_version"].startswith("10.") and table["baseline_trt_version"] == "10.12"
    assert "onnx-tensorrt" in table["source"]["url"]
    assert table["ops"]["MatMul"]["supported"] and not table["ops"]["Unique"]["supported"]


def test_clean_matmul_relu_passes():
    assert errors(lint_model(clean_model())) == []


@pytest.mark.parametrize("op, domain", [("Unique", ""), ("StringNormalizer", ""), ("FancyMix", "com.example")])
def test_unsupported_op_flagged_by_node_name(op, domain):
    m = clean_model()
    m.graph.node.append(helper.make_node(op, ["y"], ["u"], name="bad_node", domain=domain))
    m.graph.output.append(helper.make_tensor_value_info("u", TensorProto.FLOAT, None))
    if domain:
        m.opset_import.append(helper.make_opsetid(domain, 1))
    found = errors(by_node(lint_model(m), "bad_node"))
    assert found and found[0].op_type == op


def test_symmetric_int8_qdq_passes():
    assert errors(lint_model(qdq_model())) == []


def test_uint8_nonzero_zero_point_flagged():
    probs = errors(lint_model(qdq_model(zp_dtype=TensorProto.UINT8, zp_value=128)))
    msgs = " ".join(p.message for p in probs)
    assert {"x_q", "x_dq"} <= {p.node for p in probs}
    assert "UINT8" in msgs and "not all zero" in msgs


def test_quantize_without_zero_point_is_uint8():
    m = qdq_model()
    for n in m.graph.node:
        if n.name in ("x_q", "x_dq"):
            del n.input[2]
    assert any("defaults to uint8" in p.message for p in errors(by_node(lint_model(m), "x_q")))


def test_per_channel_wrong_axis_flagged():
    probs = errors(by_node(lint_model(qdq_model(axis=0)), "w_dq"))
    assert any("axis 0 is wrong" in p.message and "axis 1" in p.message for p in probs)


def test_per_channel_needs_opset_13():
    m = qdq_model(opset=12)
    assert any("opset >= 13" in p.message for p in errors(by_node(lint_model(m), "w_dq")))


def test_non_positive_scale_flagged():
    m = qdq_model()
    for t in m.graph.initializer:
        if t.name == "x_scale":
            t.CopyFrom(numpy_helper.from_array(np.array(-1.0, np.float32), "x_scale"))
    assert any("non-positive" in p.message for p in errors(by_node(lint_model(m), "x_q")))


def test_float64_tensor_flagged():
    nodes = [helper.make_node("Cast", ["x"], ["xd"], name="to_double", to=TensorProto.DOUBLE),
             helper.make_node("Relu", ["xd"], ["y"], name="act")]
    m = _model(nodes, [_x()], [_x("y", ("B", "T", K), TensorProto.DOUBLE)])
    probs = errors(lint_model(m))
    assert any(p.node == "to_double" and "DOUBLE" in p.message for p in probs)


def test_qdq_on_state_input_flagged():
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s_scale"),
             numpy_helper.from_array(np.array(0, np.int8), "s_zp")]
    nodes = [helper.make_node("QuantizeLinear", ["in.state", "s_scale", "s_zp"], ["sq"], name="state_q"),
             helper.make_node("DequantizeLinear", ["sq", "s_scale", "s_zp"], ["sdq"], name="state_dq"),
             helper.make_node("Add", ["sdq", "x"], ["out.state"], name="update")]
    m = _model(nodes, [_x(), _x("in.state", ("B", 1, K))], [_x("out.state", ("B", "T", K))], inits)
    probs = errors(lint_model(m))
    assert any(p.node == "state_q" and "in.state" in p.message and "fp32" in p.message for p in probs)


def test_exported_int64_inputs_warned_not_failed():
    nodes = [helper.make_node("Relu", ["x"], ["logprobs"], name="act"),
             helper.make_node("Identity", ["x_lens"], ["out_lens"], name="lens")]
    m = _model(nodes, [_x(), helper.make_tensor_value_info("x_lens", TensorProto.INT64, ["B"])],
               [_x("logprobs"), helper.make_tensor_value_info("out_lens", TensorProto.INT64, ["B"])])
    probs = lint_model(m)
    assert errors(probs) == []
    assert any(p.severity == WARNING and "x_lens" in p.message and "INT64" in p.message for p in probs)


def test_extra_dynamic_dims_warned():
    m = clean_model()
    m.graph.input[0].CopyFrom(_x(dims=("B", "T", "F")))
    assert any("dynamic axes [2]" in p.message for p in lint_model(m) if p.severity == WARNING)


def test_cast_attribute_checked_by_type_name():
    def cast_model(to):
        nodes = [helper.make_node("Cast", ["x"], ["c"], name="cast", to=to),
                 helper.make_node("Cast", ["c"], ["y"], name="back", to=TensorProto.FLOAT)]
        return _model(nodes, [_x()], [_x("y")])

    assert errors(lint_model(cast_model(TensorProto.INT32))) == []
    assert any("to='INT8'" in p.message for p in errors(by_node(lint_model(cast_model(TensorProto.INT8)), "cast")))


def test_int32_bias_dequantize_flagged():
    m = qdq_model()
    m.graph.initializer.extend([numpy_helper.from_array(np.zeros(N, np.int32), "bq"),
                                numpy_helper.from_array(np.array(0.001, np.float32), "b_scale")])
    m.graph.node.extend([helper.make_node("DequantizeLinear", ["bq", "b_scale"], ["b"], name="bias_dq"),
                         helper.make_node("Add", ["y", "b"], ["z"], name="bias_add")])
    m.graph.output[0].CopyFrom(_x("z", ("B", "T", N)))
    assert any("QuantizeBias" in p.message for p in errors(by_node(lint_model(m), "bias_dq")))


def test_restricted_attribute_flagged():
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", mode="cubic")]
    inits = [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    m = _model(nodes, [_x(dims=(1, 1, 4, 4))], [_x("y", (1, 1, 8, 8))], inits)
    assert any("mode='cubic'" in p.message for p in errors(by_node(lint_model(m), "up")))


# ---- ONNX Runtime quantize_static: the DESIGN.md §4 recipe passes, uint8 asymmetric fails -------------------------


def _ort_quantized(tmp_path, activation_type, symmetric):
    pytest.importorskip("onnxruntime.quantization")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    src = tmp_path / "fp32.onnx"
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="proj"),
             helper.make_node("Relu", ["h"], ["y"], name="act")]
    m = _model(nodes, [_x(dims=(1, 4, K))], [_x("y", (1, 4, N))], [_w(shape=(K, N))], opset=17)
    onnx.save(m, src)

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.batches = iter([{"x": rng.standard_normal((1, 4, K)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    out = tmp_path / f"q_{activation_type.name}.onnx"
    quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ, activation_type=activation_type,
                    weight_type=QuantType.QInt8, per_channel=True,
                    extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True})
    return out


def test_ort_s8s8_symmetric_per_channel_passes(tmp_path):
    from onnxruntime.quantization import QuantType

    path = _ort_quantized(tmp_path, QuantType.QInt8, symmetric=True)
    model = onnx.load(str(path))
    assert any(n.op_type == "DequantizeLinear" for n in model.graph.node)
    assert errors(lint_model(path)) == []


def test_ort_uint8_asymmetric_fails(tmp_path):
    from onnxruntime.quantization import QuantType

    probs = errors(lint_model(_ort_quantized(tmp_path, QuantType.QUInt8, symmetric=False)))
    assert any("UINT8" in p.message for p in probs)


# ---- CLI ----------------------------------------------------------------------------------------------------------


def test_cli_exit_codes(tmp_path):
    runner = CliRunner()
    clean = tmp_path / "clean.onnx"
    onnx.save(clean_model(), clean)
    r = runner.invoke(lint_trt, [str(clean)])
    assert r.exit_code == 0, r.output
    assert "TensorRT 10." in r.output

    bad = tmp_path / "bad.onnx"
    onnx.save(qdq_model(zp_dtype=TensorProto.UINT8, zp_value=3), bad)
    r = runner.invoke(lint_trt, [str(bad)])
    assert r.exit_code == 1 and "x_q" in r.output
    r = runner.invoke(lint_trt, [str(bad), "--json"])
    assert r.exit_code == 1
    report = json.loads(r.output)
    assert report["errors"] > 0 and any(p["node"] == "x_q" for p in report["problems"])

    warn_only = tmp_path / "warn.onnx"
    m = clean_model()
    m.graph.input[0].CopyFrom(_x(dims=("B", "T", "F")))
    onnx.save(m, warn_only)
    r = runner.invoke(lint_trt, [str(warn_only), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["warnings"] >= 1


def test_cli_missing_and_corrupt_file(tmp_path):
    runner = CliRunner()
    r = runner.invoke(lint_trt, [str(tmp_path / "nope.onnx")])
    assert r.exit_code == 2 and "error:" in r.output and len(r.output.strip().splitlines()) == 1
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\xffnot an onnx model at all\x12\x34" * 10)
    r = runner.invoke(lint_trt, [str(junk)])
    assert r.exit_code == 2 and "error:" in r.output
