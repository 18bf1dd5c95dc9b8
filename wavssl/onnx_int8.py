"""Rewrites of a dynamically quantized ONNX graph (after ``onnxruntime.quantization.quantize_dynamic``)
that make it faster on a CPU. Pure functions on ``onnx.ModelProto``; ``wavssl.export`` applies them.

- :func:`quantize_before_gather`: the quantizer puts a ``DynamicQuantizeLinear`` right before each
  int8 product, so a product over gathered windows (the MatMul front end's strided convs, whose
  windows overlap) quantizes every frame k/s times, in float. Moving the quantization ahead of the
  ``Gather`` (and any ``Reshape``) quantizes each frame once and gathers bytes, not floats (once
  for all the time pieces of a block, whose quantizations merge into one). The
  scale then comes from all frames rather than those the windows cover, which differ by at most
  the ``(L - k) % s`` frames past the last window.
- :func:`fuse_gathered_products`: the int8 products over gathered windows keep their fused float
  rescale (``MatMulIntegerToFloat``) when a block runs in time pieces.
- :func:`int8_grouped_conv`: a grouped 1-D convolution with constant weights (the context
  encoder's positional conv: 768 channels, 16 groups, kernel 128) becomes a uint8 ``Gather`` of
  each group's windows and one batched ``MatMulInteger`` with per-output-channel int8 weights:
  ONNX Runtime's float grouped ``Conv`` runs at the float peak and the int8 product at about
  twice that. Groups are done a few at a time so the window buffer stays bounded
  (``max_window_groups``).

Every int8 weight is limited to [-WEIGHT_LIMIT, WEIGHT_LIMIT] (7 bits; :func:`int8_weight_range`
checks a graph): ONNX Runtime runs uint8 x int8 products on x86-64 CPUs without VNNI (AVX2 only) with
``vpmaddubsw``, which sums two u8 x s8 products in a saturating int16, and 255 x 127 x 2 overflows it
(measured: the positional conv 13 % off its float result under AVX2 emulation, 0.4 % with VNNI).
With |w| <= 64 the pair sum fits (2 x 255 x 64 = 32640 <= 32767), so the same file gives the same
integers on AVX2, AVX-512, VNNI, AMX and ARM dot-product kernels; its fused Attention weights are
quantized that way by ONNX Runtime already.

Measured on BASE, 10 s, 2 threads (``benchmarks/cpu_inference.py``; see benchmarks/README.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from wavssl_onnx.cpu import PAIR_SUM_LIMIT
from wavssl_onnx.model_dir import ModelInfo

from .export_graphs import ExportError, put_metadata

_UINT8_PASSTHROUGH = ("Gather", "Reshape")

WEIGHT_LIMIT = PAIR_SUM_LIMIT
"""Largest |int8 weight| (64): a pair of uint8 x int8 products must fit a saturating int16 (AVX2 kernels)."""

INT8_SCHEME = "u8 activations (dynamic, per tensor) x s8 weights in [-64, 64] (per channel): no int16 saturation"
"""What ``wavssl export --int8`` writes, recorded in ``wavssl.json`` (``export.int8.scheme``)."""

_INTEGER_PRODUCTS = {"MatMulInteger": (1,), "MatMulIntegerToFloat": (1,), "DynamicQuantizeMatMul": (1,),
                     "QAttention": (1,), "ConvInteger": (1,)}
"""Integer product ops -> the inputs that carry constant int8 weights."""


def _index(graph: Any) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    producer = {name: node for node in graph.node for name in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return producer, consumers


def _toposort(graph: Any) -> None:
    """Re-order ``graph.node`` so every node follows its inputs' producers; drops stale value_info."""
    known = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    ordered, pending = [], list(graph.node)
    while pending:
        rest = []
        for node in pending:
            if all(name in known for name in node.input):
                ordered.append(node)
                known.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError(f"graph has a cycle or a missing input at {rest[0].name!r}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)
    del graph.value_info[:]  # element types changed along moved chains; ONNX Runtime re-infers them


def quantize_before_gather(model: Any) -> int:
    """Move each ``DynamicQuantizeLinear`` that reads ``Gather``/``Reshape`` chains (containing a
    ``Gather``) of a float tensor to read that tensor; the chain then carries uint8. In place.

    Returns:
        The number of quantizations moved.
    """
    graph = model.graph
    producer, consumers = _index(graph)
    outputs = {o.name for o in graph.output}
    moved = 0
    for dql in [n for n in graph.node if n.op_type == "DynamicQuantizeLinear"]:
        chain, tensor = [], dql.input[0]
        while tensor in producer and producer[tensor].op_type in _UINT8_PASSTHROUGH \
                and len(consumers.get(tensor, [])) == 1 and tensor not in outputs:
            chain.append(producer[tensor])
            tensor = producer[tensor].input[0]
        if not any(n.op_type == "Gather" for n in chain):
            continue
        quantized = dql.output[0]
        dql.input[0] = tensor
        dql.output[0] = f"{quantized}_before_gather"
        chain[-1].input[0] = dql.output[0]
        chain[0].output[0] = quantized
        moved += 1
    if moved:
        _merge_same_input(graph, "DynamicQuantizeLinear")
        _toposort(graph)
    return moved


def _merge_same_input(graph: Any, op_type: str) -> None:
    """Keep one of the ``op_type`` nodes that read the same tensor (a front-end block in time pieces
    quantizes its input once per piece after :func:`quantize_before_gather`); the others' consumers
    read the kept node's outputs. In place."""
    kept: dict[str, Any] = {}
    rename: dict[str, str] = {}
    for node in [n for n in graph.node if n.op_type == op_type]:
        first = kept.setdefault(node.input[0], node)
        if first is not node:
            rename.update(zip(node.output, first.output))
            graph.node.remove(node)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]


def fuse_gathered_products(model: Any) -> int:
    """Fuse each ``MatMulInteger -> Cast -> Mul(scale)`` whose uint8 input is gathered windows (not a
    ``DynamicQuantizeLinear`` output) into one ``com.microsoft.MatMulIntegerToFloat``, the product
    with its float rescale. ONNX Runtime fuses this itself, but not once its common-subexpression pass
    has merged the identical scale products of a block's time pieces into one shared tensor: the
    pieces would then run an int32 product, a cast and a multiply. In place.

    Returns:
        The number of products fused.
    """
    from onnx import helper

    graph = model.graph
    producer, consumers = _index(graph)
    outputs = {o.name for o in graph.output}

    def only_consumer(name: str, op_type: str) -> Any | None:
        users = consumers.get(name, [])
        if len(users) != 1 or users[0].op_type != op_type or name in outputs:
            return None
        return users[0]

    fused, scale_products = 0, []
    for mm in [n for n in graph.node if n.op_type == "MatMulInteger"]:
        source = producer.get(mm.input[0])
        if source is None or source.op_type == "DynamicQuantizeLinear" or len(mm.input) < 4:
            continue
        cast = only_consumer(mm.output[0], "Cast")
        mul = None if cast is None else only_consumer(cast.output[0], "Mul")
        if cast is None or mul is None:
            continue
        scales = producer.get(mul.input[1] if mul.input[0] == cast.output[0] else mul.input[0])
        if scales is None or scales.op_type != "Mul":
            continue
        a_scale, b_scale = scales.input
        node = helper.make_node("MatMulIntegerToFloat", [mm.input[0], mm.input[1], a_scale, b_scale, mm.input[2], mm.input[3]],
                                [mul.output[0]], name=f"{mul.output[0]}_int8_product", domain="com.microsoft")
        graph.node.insert(list(graph.node).index(mm), node)
        for old in (mm, cast, mul):
            graph.node.remove(old)
        scale_products.append(scales)
        fused += 1
    if fused:
        used = {name for n in graph.node for name in n.input} | outputs
        for node in scale_products:
            if node.output[0] not in used and node in graph.node:
                graph.node.remove(node)  # the fused nodes read both scales themselves
        if not any(o.domain == "com.microsoft" for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return fused


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _grouped_conv_spec(node: Any, initializers: dict[str, Any]) -> tuple[int, int, int, int] | None:
    """(groups, kernel, pad_left, pad_right) when ``node`` is a grouped 1-D stride-1 Conv with a
    constant weight (and bias); else None."""
    if node.op_type != "Conv" or node.input[1] not in initializers:
        return None
    if len(node.input) > 2 and node.input[2] and node.input[2] not in initializers:
        return None
    a = _attrs(node)
    kernel = list(a.get("kernel_shape", initializers[node.input[1]].dims[2:]))
    if len(kernel) != 1 or a.get("group", 1) < 2 or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    if list(a.get("strides", [1])) != [1] or list(a.get("dilations", [1])) != [1]:
        return None
    pads = list(a.get("pads", [0, 0]))
    return int(a["group"]), int(kernel[0]), int(pads[0]), int(pads[1])


def int8_grouped_conv(model: Any, *, max_window_groups: int = 4, weight_limit: int = WEIGHT_LIMIT) -> int:
    """Replace each grouped 1-D stride-1 ``Conv`` with constant weights by int8 windows @ weight.

    For input x (B, C, T) float, weight (C_out, C/G, K): x is quantized per tensor to uint8
    (``DynamicQuantizeLinear``), laid out (B, G, T, C/G), padded with its zero point, and for each
    run of up to ``max_window_groups`` groups the K-frame windows are gathered,
    (B, g, T_out, K * C/G), and multiplied by the int8 weight (g, K * C/G, C_out/G) (symmetric, one
    scale per output channel), then scaled back to float and the bias added: (B, C_out, T_out), the
    Conv's output. In place.

    Returns:
        The number of convolutions replaced.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    count = 0
    for conv in [n for n in graph.node if n.op_type == "Conv"]:
        spec = _grouped_conv_spec(conv, initializers)
        if spec is None:
            continue
        groups, kernel, pad_left, pad_right = spec
        weight = numpy_helper.to_array(initializers[conv.input[1]]).astype(np.float32)
        c_out, c_group, _ = weight.shape
        o_group = c_out // groups
        w_q, scale = _group_weights_int8(weight, groups, weight_limit)
        bias = numpy_helper.to_array(initializers[conv.input[2]]).astype(np.float32) \
            if len(conv.input) > 2 and conv.input[2] else None

        p = f"{conv.name}_int8"
        new_inits: list[Any] = []

        def const(suffix: str, value: np.ndarray, p: str = p, new_inits: list[Any] = new_inits) -> str:
            new_inits.append(numpy_helper.from_array(np.asarray(value), f"{p}_{suffix}"))
            return f"{p}_{suffix}"

        x, y = conv.input[0], conv.output[0]
        nodes = [
            helper.make_node("DynamicQuantizeLinear", [x], [f"{p}_xq", f"{p}_xs", f"{p}_xz"]),
            helper.make_node("Reshape", [f"{p}_xq", const("grouped", np.array([0, groups, c_group, -1], np.int64))],
                             [f"{p}_xg"]),
            helper.make_node("Transpose", [f"{p}_xg"], [f"{p}_xt"], perm=[0, 1, 3, 2]),  # (B, G, T, C/G)
            helper.make_node("Pad", [f"{p}_xt", const("pads", np.array([0, 0, pad_left, 0, 0, 0, pad_right, 0],
                                                                        np.int64)), f"{p}_xz"], [f"{p}_xp"]),
            helper.make_node("Shape", [f"{p}_xp"], [f"{p}_tp"], start=2, end=3),
            helper.make_node("Sub", [f"{p}_tp", const("k1", np.array([kernel - 1], np.int64))], [f"{p}_tout"]),
            helper.make_node("Squeeze", [f"{p}_tout"], [f"{p}_n"]),
            helper.make_node("Range", [const("zero", np.array(0, np.int64)), f"{p}_n",
                                       const("one", np.array(1, np.int64))], [f"{p}_t"]),
            helper.make_node("Unsqueeze", [f"{p}_t", const("axis1", np.array([1], np.int64))], [f"{p}_tc"]),
            helper.make_node("Add", [f"{p}_tc", const("taps", np.arange(kernel, dtype=np.int64)[None, :])],
                             [f"{p}_idx"]),  # (T_out, K)
        ]
        parts = []
        for j, start in enumerate(range(0, groups, max_window_groups)):
            stop = min(groups, start + max_window_groups)
            q = f"{p}_{j}"
            nodes += [
                helper.make_node("Slice", [f"{p}_xp", const(f"s{j}", np.array([start], np.int64)),
                                           const(f"e{j}", np.array([stop], np.int64)),
                                           const(f"a{j}", np.array([1], np.int64))], [f"{q}_x"]),
                helper.make_node("Gather", [f"{q}_x", f"{p}_idx"], [f"{q}_win"], axis=2),  # (B, g, T_out, K, C/G)
                helper.make_node("Reshape", [f"{q}_win", const(f"w{j}", np.array([0, 0, 0, kernel * c_group],
                                                                                   np.int64))], [f"{q}_a"]),
                helper.make_node("MatMulInteger", [f"{q}_a", const(f"wq{j}", w_q[start:stop]), f"{p}_xz"],
                                 [f"{q}_acc"]),  # (B, g, T_out, O/G) int32
                helper.make_node("Cast", [f"{q}_acc"], [f"{q}_f"], to=TensorProto.FLOAT),
                helper.make_node("Mul", [f"{p}_xs", const(f"sc{j}", scale[start:stop])], [f"{q}_scale"]),
                helper.make_node("Mul", [f"{q}_f", f"{q}_scale"], [f"{q}_y"]),
            ]
            parts.append(f"{q}_y")
        nodes.append(helper.make_node("Concat", parts, [f"{p}_y"], axis=1) if len(parts) > 1
                     else helper.make_node("Identity", parts, [f"{p}_y"]))
        out = f"{p}_y"
        if bias is not None:
            nodes.append(helper.make_node("Add", [out, const("bias", bias.reshape(groups, 1, o_group))], [f"{p}_yb"]))
            out = f"{p}_yb"
        nodes += [
            helper.make_node("Transpose", [out], [f"{p}_yt"], perm=[0, 1, 3, 2]),  # (B, G, O/G, T_out)
            helper.make_node("Reshape", [f"{p}_yt", const("out", np.array([0, c_out, -1], np.int64))], [y]),
        ]
        position = list(graph.node).index(conv)
        graph.node.remove(conv)
        for offset, node in enumerate(nodes):
            graph.node.insert(position + offset, node)
        graph.initializer.extend(new_inits)
        count += 1
    if count:  # the new nodes sit where the Conv was, so the order stays topological
        _drop_unused_initializers(graph)
    return count


def _group_weights_int8(weight: np.ndarray, groups: int, limit: int = WEIGHT_LIMIT) -> tuple[np.ndarray, np.ndarray]:
    """Grouped conv weight (C_out, C/G, K) -> per group the (K * C/G, C_out/G) matrix that tap-major
    windows (row k * C/G + c) multiply, as symmetric int8 with one scale per output channel:
    (G, K * C/G, C_out/G) int8 and (G, 1, C_out/G) float32 scales."""
    c_out, c_group, kernel = weight.shape
    w = weight.reshape(groups, c_out // groups, c_group, kernel).transpose(0, 3, 2, 1).reshape(
        groups, kernel * c_group, c_out // groups)
    scale = np.abs(w).max(axis=1, keepdims=True) / limit
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    return np.clip(np.rint(w / scale), -limit, limit).astype(np.int8), scale


def int8_weight_range(model: Any) -> int:
    """Largest |value| among the constant int8 weights of the integer products in ``model`` (0 when
    there are none); above WEIGHT_LIMIT the graph's results depend on the CPU that runs it."""
    from onnx import TensorProto, numpy_helper

    initializers = {t.name: t for t in model.graph.initializer}
    largest = 0
    for node in model.graph.node:
        for i in _INTEGER_PRODUCTS.get(node.op_type, ()):
            t = initializers.get(node.input[i]) if i < len(node.input) else None
            if t is not None and t.data_type == TensorProto.INT8:
                largest = max(largest, int(np.abs(numpy_helper.to_array(t).astype(np.int16)).max(initial=0)))
    return largest


def _drop_unused_initializers(graph: Any) -> None:
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


# ------------------------------------------------------------------------------------ quantizing

INT8_MIN_DIM = 64
"""MatMuls with a weight side (K or N) below this stay float (a waveform-facing first conv, the
output head): quantizing them saves nothing and costs accuracy."""


def int8_excluded(path: Path) -> list[str]:
    """MatMul nodes to keep float: those whose constant weight has a side below INT8_MIN_DIM, and
    those whose output reaches a ``Log`` within a few element-wise steps (a log-mel filterbank:
    power spectra span too many decades for 8 bits per tensor)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    shapes = {t.name: tuple(t.dims) for t in proto.graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def feeds_log(tensor: str, depth: int = 4) -> bool:
        for node in consumers.get(tensor, []):
            if node.op_type == "Log":
                return True
            if depth > 0 and node.op_type in ("Clip", "Max", "Add", "Transpose", "Mul") \
                    and any(feeds_log(o, depth - 1) for o in node.output):
                return True
        return False

    out = []
    for node in proto.graph.node:
        if node.op_type != "MatMul" or len(node.input) < 2 or node.input[1] not in shapes:
            continue
        dims = shapes[node.input[1]]
        if (len(dims) == 2 and min(dims) < INT8_MIN_DIM) or feeds_log(node.output[0]):
            out.append(node.name)
    return out


def quantize_int8(src: Path, dst: Path, info: ModelInfo, *, per_channel: bool = True,
                  weight_limit: int = WEIGHT_LIMIT) -> None:
    """Dynamic int8 quantization of MatMul and Attention weights (activations quantized per tensor
    at run time) and of grouped 1-D convolutions (the positional conv), then each activation
    quantized once ahead of window gathers (``wavssl.onnx_int8``); small MatMuls (see
    INT8_MIN_DIM), the front end's first block and everything else stay float.

    ``weight_limit`` above WEIGHT_LIMIT (127: full-range int8 weights) is for measuring what the
    limit costs and saves (``benchmarks/int8_portability.py``); such a graph depends on the CPU."""
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # its pre-processing hint
    # reduce_range: int8 weights in [-64, 64], exact on every CPU kind (see wavssl.onnx_int8.WEIGHT_LIMIT)
    quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul", "Attention"], per_channel=per_channel,
                     weight_type=QuantType.QInt8, nodes_to_exclude=int8_excluded(src),
                     reduce_range=weight_limit <= WEIGHT_LIMIT,
                     extra_options={"MatMulConstBOnly": True})
    proto = onnx.load(str(dst))
    quantize_before_gather(proto)
    fuse_gathered_products(proto)
    int8_grouped_conv(proto, weight_limit=weight_limit)
    if (largest := int8_weight_range(proto)) > weight_limit:
        raise ExportError(f"{dst.name}: an int8 weight of magnitude {largest} > {WEIGHT_LIMIT} would saturate "
                          f"the int16 sums of AVX2 CPUs without VNNI; nothing written")
    put_metadata(proto, info)
    onnx.save(proto, str(dst))
