"""The int8 graph rewrites (wavssl.onnx_int8) on small hand-built graphs, run by ONNX Runtime."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from wavssl.onnx_int8 import fuse_gathered_products, int8_grouped_conv, quantize_before_gather  # noqa: E402


def _run(model: object, feeds: dict[str, np.ndarray]) -> np.ndarray:
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])  # type: ignore[attr-defined]
    return session.run(None, feeds)[0]


def _conv_model(channels: int, groups: int, kernel: int, pads: tuple[int, int], bias: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    weight = (rng.standard_normal((channels, channels // groups, kernel)) / np.sqrt(kernel)).astype(np.float32)
    inits = [numpy_helper.from_array(weight, "w")]
    inputs = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), "b"))
        inputs.append("b")
    node = helper.make_node("Conv", inputs, ["y"], name="pos_conv", group=groups, kernel_shape=[kernel],
                            pads=list(pads))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", channels, "T"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", channels, "T_out"])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


@pytest.mark.parametrize("bias,pads,window_groups", [(True, (8, 7), 4), (False, (3, 3), 1), (True, (0, 0), 16)])
def test_grouped_conv_becomes_int8_product_close_to_float(bias: bool, pads: tuple[int, int], window_groups: int) -> None:
    model = _conv_model(channels=64, groups=8, kernel=16, pads=pads, bias=bias)
    x = np.random.default_rng(1).standard_normal((2, 64, 50)).astype(np.float32)
    want = _run(model, {"x": x})
    assert int8_grouped_conv(model, max_window_groups=window_groups) == 1
    assert [n.op_type for n in model.graph.node].count("Conv") == 0
    assert "MatMulInteger" in {n.op_type for n in model.graph.node}
    assert {t.name for t in model.graph.initializer}.isdisjoint({"w"})  # the float weight is gone
    got = _run(model, {"x": x})
    assert got.shape == want.shape
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err < 0.02, err
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.9995


def test_grouped_conv_window_group_runs_agree_exactly() -> None:
    x = np.random.default_rng(2).standard_normal((1, 32, 40)).astype(np.float32)
    outs = []
    for window_groups in (1, 3, 4):  # 3 leaves a short last run
        model = _conv_model(channels=32, groups=4, kernel=9, pads=(4, 4), bias=True)
        int8_grouped_conv(model, max_window_groups=window_groups)
        outs.append(_run(model, {"x": x}))
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_ungrouped_or_strided_conv_is_left_alone() -> None:
    model = _conv_model(channels=8, groups=1, kernel=3, pads=(1, 1), bias=False)
    assert int8_grouped_conv(model) == 0
    model = _conv_model(channels=8, groups=2, kernel=3, pads=(1, 1), bias=False)
    model.graph.node[0].attribute.append(helper.make_attribute("strides", [2]))
    assert int8_grouped_conv(model) == 0


def _windows_model(frames: int = 41, channels: int = 16, out: int = 24, seed: int = 0, pieces: int = 1):
    """x (1, F, C) -> GELU-free toy of the MatMul front end: gather 3-frame windows at stride 2,
    reshape, MatMul by a constant weight; in ``pieces`` time pieces, concatenated."""
    rng = np.random.default_rng(seed)
    n = (frames - 3) // 2 + 1
    index = (np.arange(n) * 2)[:, None] + np.arange(3)
    bounds = [n * j // pieces for j in range(pieces + 1)]
    nodes, inits = [], [numpy_helper.from_array(np.array([1, -1, 3 * channels], np.int64), "shape"),
                        numpy_helper.from_array(rng.standard_normal((3 * channels, out)).astype(np.float32), "w")]
    for j, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        inits.append(numpy_helper.from_array(index[a:b].reshape(-1).astype(np.int64), f"idx{j}"))
        nodes += [helper.make_node("Gather", ["x", f"idx{j}"], [f"win{j}"], axis=1),
                  helper.make_node("Reshape", [f"win{j}", "shape"], [f"a{j}"]),
                  helper.make_node("MatMul", [f"a{j}", "w"], ["y" if pieces == 1 else f"y{j}"])]
    if pieces > 1:
        nodes.append(helper.make_node("Concat", [f"y{j}" for j in range(pieces)], ["y"], axis=1))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, frames, channels])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n, out])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def test_quantize_before_gather_gathers_bytes_and_keeps_the_result(tmp_path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(_windows_model(), str(src))
    quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8)
    model = onnx.load(str(dst))
    # the windows cover every frame, so quantizing before the gather changes nothing
    x = np.random.default_rng(3).uniform(-1, 1, (1, 41, 16)).astype(np.float32)
    before = _run(model, {"x": x})
    assert quantize_before_gather(model) == 1
    producer = {o: n for n in model.graph.node for o in n.output}
    gather = next(n for n in model.graph.node if n.op_type == "Gather")
    assert producer[gather.input[0]].op_type == "DynamicQuantizeLinear"
    after = _run(model, {"x": x})
    np.testing.assert_array_equal(after, before)
    assert quantize_before_gather(model) == 0  # nothing left to move


def test_time_pieces_quantize_once_and_keep_fused_products(tmp_path) -> None:
    """A block in time pieces: after the rewrites its input is quantized once (the pieces' moved
    quantizations merge), each piece is one MatMulIntegerToFloat, and the result equals the
    one-piece block's."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    x = np.random.default_rng(3).uniform(-1, 1, (1, 41, 16)).astype(np.float32)
    results = {}
    for pieces in (1, 3):
        src, dst = tmp_path / f"f{pieces}.onnx", tmp_path / f"q{pieces}.onnx"
        onnx.save(_windows_model(pieces=pieces), str(src))
        quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8,
                         per_channel=True)
        model = onnx.load(str(dst))
        assert quantize_before_gather(model) == pieces
        assert fuse_gathered_products(model) == pieces
        ops = [n.op_type for n in model.graph.node]
        assert ops.count("DynamicQuantizeLinear") == 1 and ops.count("MatMulIntegerToFloat") == pieces
        assert "MatMulInteger" not in ops and "Cast" not in ops
        results[pieces] = _run(model, {"x": x})
    np.testing.assert_allclose(results[3], results[1], rtol=1e-6, atol=1e-6)
    assert fuse_gathered_products(model) == 0  # nothing left to fuse


def test_int8_weights_fit_the_int16_pair_sums_of_avx2_kernels() -> None:
    """Every int8 weight stays within +-64, so ONNX Runtime's AVX2 (non-VNNI) kernels, which add two
    u8 x s8 products in a saturating int16, give the exact integers that VNNI and ARM kernels give."""
    from wavssl.onnx_int8 import WEIGHT_LIMIT, int8_weight_range

    model = _conv_model(channels=64, groups=8, kernel=16, pads=(8, 7), bias=True)
    int8_grouped_conv(model)
    assert 0 < int8_weight_range(model) <= WEIGHT_LIMIT
    assert 2 * 255 * WEIGHT_LIMIT <= np.iinfo(np.int16).max


_AVX2_CHECK = """
import numpy as np, onnxruntime as ort
from tests.test_onnx_int8 import _conv_model, _run
from wavssl.onnx_int8 import int8_grouped_conv
model = _conv_model(channels=64, groups=8, kernel=16, pads=(8, 7), bias=True)
x = np.random.default_rng(1).standard_normal((2, 64, 50)).astype(np.float32)
want = _run(model, {"x": x})
int8_grouped_conv(model)
got = _run(model, {"x": x})
print("ERR", float(np.abs(got - want).max() / np.abs(want).max()))
"""


@pytest.mark.skipif(shutil.which("qemu-x86_64") is None or platform.machine() != "x86_64",
                    reason="needs qemu-user (Debian qemu-user) on an x86-64 host to emulate an AVX2-only CPU")
def test_int8_conv_is_accurate_on_an_emulated_avx2_only_cpu() -> None:
    """The int8 positional conv run by ONNX Runtime on a Haswell CPU (AVX2, no AVX-512, no VNNI),
    emulated by qemu-user whatever CPU runs the tests: with full-range int8 weights it was 13 % off."""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*sys.path[1:], str(root), str(root / "export")]))
    run = subprocess.run(["qemu-x86_64", "-cpu", "Haswell", os.path.realpath(sys.executable), "-c", _AVX2_CHECK],
                         cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    err = float(run.stdout.split("ERR")[1])
    assert err < 0.02, err
