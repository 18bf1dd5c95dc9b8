"""The ONNX graphs of an export: what a model directory describes (``wavssl.json``), the run's model
loaded for export, and ``torch.onnx.export`` of the graph modules of :mod:`wavssl.onnx_graph` (and of
:mod:`wavssl.streaming`'s front-end and chunk-step graphs), with the description in each file's
``metadata_props``. :func:`wavssl.export.export` runs these steps; :mod:`wavssl.export_parity` checks them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from wavssl_onnx.model_dir import INT8_FILE, MODEL_FILE, STREAMING_VERSION, ModelInfo

from .models import CTCModel, SequenceClassifier, frame_shift_samples, min_input_samples
from .onnx_graph import ClassifierGraph, CTCGraph, translation_table

FRONTEND_FILE = "frontend.onnx"
"""A streaming model's front-end graph."""
FRONTEND_INT8_FILE = "frontend.int8.onnx"
"""Its int8 variant (``--streaming --int8``), which the runtime runs beside ``model.int8.onnx``."""
STREAMING_GRAPHS = {MODEL_FILE: (MODEL_FILE, FRONTEND_FILE), INT8_FILE: (INT8_FILE, FRONTEND_INT8_FILE)}
"""A streaming export's step graph -> (it, the front end it runs with)."""


class ExportError(RuntimeError):
    """The export failed (e.g. ONNX and PyTorch disagree beyond the tolerance); nothing was written."""


# ------------------------------------------------------------------------------------ loading


def load_for_export(run: str | Path | nn.Module) -> tuple[nn.Module, str, int | None]:
    """The model to export, its transcript language ('' when unknown) and input rate (None: unknown)."""
    if isinstance(run, nn.Module):
        return run, "", None
    from . import load
    from .train.checkpoint import load_config

    model = load(run)
    if not isinstance(model, (CTCModel, SequenceClassifier)):
        raise ExportError(f"{run}: a pretraining run; export a fine-tuned recognizer or classifier "
                          f"(wavssl finetune) instead")
    cfg = load_config(run)
    return model, cfg.ctc.language, int(cfg.model.frontend.sample_rate)


def model_info(model: nn.Module, language: str = "", sample_rate: int | None = None) -> ModelInfo:
    """The ``wavssl.json`` description of a recognizer or classifier (``files`` holds fp32 only).

    ``sample_rate``: the input rate (default: ``model.sample_rate``; 100 Hz for a classifier without one)."""
    if not isinstance(model, (CTCModel, SequenceClassifier)):
        raise ExportError(f"cannot export a {type(model).__name__}; export a CTCModel or SequenceClassifier")
    frontend = model.encoder.frontend
    hop = frame_shift_samples(frontend)
    if isinstance(model, CTCModel):
        if model.vocab is None:
            raise ExportError("the recognizer has no vocabulary (load it from a run with wavssl.load)")
        rate = int(sample_rate or model.sample_rate)
        return ModelInfo(kind="ctc", sample_rate=rate, frame_shift=hop / rate, frame_shift_samples=hop,
                         min_samples=min_input_samples(frontend), inputs=["waveform", "lengths"],
                         outputs=["log_probs", "frame_lengths"], files={"fp32": MODEL_FILE},
                         vocabulary=model.vocab, normalize_audio=bool(model.normalize_audio), language=language)
    rate = int(sample_rate or getattr(model, "sample_rate", 0) or 100)
    return ModelInfo(kind="classify", sample_rate=rate, frame_shift=hop / rate, frame_shift_samples=hop,
                     min_samples=min_input_samples(frontend), inputs=["series", "lengths"], outputs=["log_probs"],
                     files={"fp32": MODEL_FILE}, class_names=list(model.class_names),
                     in_channels=int(getattr(frontend, "in_channels", 1)))


def streaming_info(model: CTCModel, language: str = "", sample_rate: int | None = None) -> ModelInfo:
    """The ``wavssl.json`` description of a streaming export (step graph I/O, chunk geometry, state
    tensors); raises :class:`ExportError` when the model cannot stream (and says why)."""
    from .streaming import StreamingError, stream_geometry

    if not isinstance(model, CTCModel):
        raise ExportError("--streaming applies to speech recognizers (CTC) only")
    try:
        g = stream_geometry(model)
    except StreamingError as e:
        raise ExportError(str(e)) from e
    return dataclasses.replace(
        model_info(model, language, sample_rate), inputs=["frames", *(s.name for s in g.states)],
        outputs=["log_probs", *(s.output for s in g.states)], files={"fp32": MODEL_FILE, "frontend": FRONTEND_FILE},
        streaming=g, format_version=STREAMING_VERSION)


# ------------------------------------------------------------------------------------ tracing


def example_inputs(info: ModelInfo) -> tuple[torch.Tensor, torch.Tensor]:
    """Trace inputs: a batch of two with padding."""
    t = max(4 * info.min_samples, 2 * info.frame_shift_samples, 64)
    lengths = torch.tensor([t, t - max(1, t // 4)])
    if info.kind == "ctc":
        return torch.randn(2, t) * 0.1, lengths
    return torch.randn(2, info.in_channels, t), lengths


def dynamic_shapes(info: ModelInfo) -> tuple[dict[int, Any], dict[int, Any]]:
    batch = torch.export.Dim("batch", min=1)
    time_ = torch.export.Dim("time", min=max(2, info.min_samples))
    return ({0: batch, 1 if info.kind == "ctc" else 2: time_}, {0: batch})


def graph_module(model: nn.Module, fused: bool) -> nn.Module:
    if isinstance(model, CTCModel):
        return CTCGraph(model, fused).eval()
    return ClassifierGraph(model, fused).eval()  # type: ignore[arg-type]


def dynamo_export(graph: nn.Module, example: tuple[torch.Tensor, ...], input_names: list[str], output_names: list[str],
            dynamic_shapes: tuple[dict[int, Any], ...], path: Path, fused: bool, opset: int) -> None:
    """``torch.onnx.export(..., dynamo=True)`` of ``graph`` to ``path`` (exporter notes silenced)."""
    import logging
    import warnings

    exporter_log = logging.getLogger("torch.onnx")  # its notes (torchvision absent, axis renames) are noise here
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                graph, example, dynamo=True, input_names=input_names, output_names=output_names,
                dynamic_shapes=dynamic_shapes, opset_version=opset, optimize=True,
                custom_translation_table=translation_table() if fused else None, verbose=False,
            )
    finally:
        exporter_log.setLevel(level)
    assert program is not None
    program.save(str(path))


def export_dynamo(model: nn.Module, info: ModelInfo, path: Path, fused: bool, opset: int) -> None:
    dynamo_export(graph_module(model, fused), example_inputs(info), info.inputs, info.outputs, dynamic_shapes(info),
                  path, fused, opset)


def export_streaming(model: CTCModel, info: ModelInfo, out: Path, fused: bool, opset: int) -> None:
    """The front-end graph (dynamic batch and time) and the chunk step graph (dynamic batch and
    chunk length 1..C, plus the R look-ahead frames) of a streaming recognizer, into ``out``."""
    from .streaming import ChunkStepGraph, FrontendGraph

    g = info.streaming
    assert g is not None
    batch = torch.export.Dim("batch", min=1)
    wav, lengths = example_inputs(info)
    window = g.left_samples + g.chunk_frames * g.frame_shift_samples + g.right_samples
    dynamo_export(FrontendGraph(model, fused, window).eval(), (wav, lengths), g.frontend_inputs, g.frontend_outputs,
            dynamic_shapes(info), out / FRONTEND_FILE, fused, opset)
    c, r = g.chunk_frames, g.lookahead_frames
    states = tuple(torch.zeros(2, *s.shape, dtype=getattr(torch, s.dtype)) for s in g.states)
    processed = torch.tensor([c * g.left_chunks, 0])  # one stream with a full cache, one just started
    example = (torch.randn(2, c + r, g.frame_dim), *states[:-1], processed)
    frames = torch.export.Dim("frames", min=r + 1, max=c + r)
    shapes = ({0: batch, 1: frames}, *({0: batch} for _ in states))
    dynamo_export(ChunkStepGraph(model).eval(), example, info.inputs, info.outputs, shapes, out / MODEL_FILE,
                  fused, opset)


def export_torchscript(model: nn.Module, info: ModelInfo, path: Path, opset: int) -> None:
    graph = graph_module(model, fused=False)
    time_axis = 1 if info.kind == "ctc" else 2
    axes = {info.inputs[0]: {0: "batch", time_axis: "time"}, info.inputs[1]: {0: "batch"},
            info.outputs[0]: {0: "batch", 1: "frames"} if info.kind == "ctc" else {0: "batch"}}
    if info.kind == "ctc":
        axes[info.outputs[1]] = {0: "batch"}
    torch.onnx.export(graph, example_inputs(info), str(path), dynamo=False, input_names=info.inputs,
                      output_names=info.outputs, dynamic_axes=axes, opset_version=min(opset, 17))


def put_metadata(proto: Any, info: ModelInfo) -> None:
    """Replace an ONNX model's ``metadata_props`` by ``info``'s keys (in memory)."""
    del proto.metadata_props[:]
    for key, value in info.metadata_props().items():
        proto.metadata_props.add(key=key, value=value)


def set_metadata(path: Path, info: ModelInfo) -> None:
    import onnx

    proto = onnx.load(str(path))
    put_metadata(proto, info)
    onnx.save(proto, str(path))


def require_onnx() -> None:
    """Raise ExportError naming the missing package (onnx, onnxscript, onnxruntime)."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"wavssl export needs {', '.join(missing)}: pip install 'wavssl[export]' ./export")


def read_check_audio(x: str | Path | np.ndarray, info: ModelInfo) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return np.asarray(x, dtype=np.float32)
    if info.kind != "ctc":
        raise ExportError("check_audio applies to recognizers only")
    from .data.audio import load_audio

    return load_audio(x, info.sample_rate)


def wavssl_version() -> str:
    from . import __version__

    return __version__
