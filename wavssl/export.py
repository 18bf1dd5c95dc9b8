"""PyTorch -> ONNX: export a fine-tuned recognizer or sensor classifier to a model directory that the
PyTorch-free runtime (``wavssl_onnx``) runs, with an optional int8 variant and a parity check.

``wavssl export RUN --out MODEL_DIR [--int8]`` is :func:`export`:

1. the run's model is copied in eval mode with weight norm folded and layer drop off, and wrapped in
   a graph module (:mod:`wavssl.onnx_graph`) that takes raw input at the model's rate plus lengths
   and returns log-probabilities plus output lengths (per-utterance standardisation inside);
2. ``torch.onnx.export(..., dynamo=True)`` with dynamic batch and time axes (the TorchScript
   exporter only as a fallback when that fails; the model directory records which one ran);
3. **parity**: ONNX Runtime against PyTorch on inputs from the shortest allowed length to 60 s
   and on a zero-padded batch; the export fails (:class:`ExportError`, nothing written) when the
   log-probabilities of any valid frame differ by more than ``atol`` (default
   :data:`PARITY_ATOL`) or the output lengths differ;
4. ``--int8``: onnxruntime dynamic quantization of the MatMul and fused Attention weights (the conv
   front end runs as MatMuls, so it is covered too), then :mod:`wavssl.onnx_int8`'s rewrites (each
   activation quantized once ahead of window gathers; the positional conv as an int8 product); its
   deviation from fp32 (log-prob difference, frame argmax agreement, greedy transcript agreement)
   is printed and stored;
5. ``wavssl.json`` (see :mod:`wavssl_onnx.model_dir`) and the same keys in each ONNX file's
   ``metadata_props``; files are written in a temporary directory and moved into place at the end.

``--streaming`` (a recognizer fine-tuned with chunked attention) traces :mod:`wavssl.streaming`'s
front-end graph (``frontend.onnx``) and chunk step graph (``model.onnx``, state in and out) instead,
and the parity check streams each input through them (:func:`streaming_parity`) against the PyTorch
model's offline forward on the whole input; ``--int8`` quantizes both graphs (``model.int8.onnx``,
``frontend.int8.onnx``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from wavssl_onnx.audio import standardize
from wavssl_onnx.batching import pad_stack
from wavssl_onnx.cpu import cpu_flags, int8_kernel
from wavssl_onnx.model_dir import CONFIG_FILE, FORMAT_VERSION, INT8_FILE, MODEL_FILE, STREAMING_VERSION, ModelInfo

from .models import CTCModel, SequenceClassifier, frame_shift_samples, min_input_samples
from .onnx_graph import ClassifierGraph, CTCGraph, translation_table
from .onnx_int8 import (INT8_SCHEME, WEIGHT_LIMIT, fuse_gathered_products, int8_grouped_conv, int8_weight_range,
                        quantize_before_gather)

PARITY_ATOL = 1e-3
"""Largest allowed |log p_onnx - log p_torch| on any valid frame and token (fp32 graph)."""
PARITY_SECONDS = (1.0, 7.3, 60.0)
"""Single-utterance check lengths (besides the shortest allowed input)."""
PADDED_BATCH_SECONDS = (3.0, 2.2, 0.4)
"""Lengths of the zero-padded batch in the parity check."""
FRONTEND_FILE = "frontend.onnx"
"""A streaming model's front-end graph."""
FRONTEND_INT8_FILE = "frontend.int8.onnx"
"""Its int8 variant (``--streaming --int8``), which the runtime runs beside ``model.int8.onnx``."""
STREAMING_GRAPHS = {MODEL_FILE: (MODEL_FILE, FRONTEND_FILE), INT8_FILE: (INT8_FILE, FRONTEND_INT8_FILE)}
"""A streaming export's step graph -> (it, the front end it runs with)."""
STREAM_BLOCK_SECONDS = 0.37
"""Audio pushed at a time in the streaming parity check (not a multiple of any chunk)."""
INT8_MIN_DIM = 64
"""MatMuls with a weight side (K or N) below this stay float (a waveform-facing first conv, the
output head): quantizing them saves nothing and costs accuracy."""


class ExportError(RuntimeError):
    """The export failed (e.g. ONNX and PyTorch disagree beyond the tolerance); nothing was written."""


@dataclass
class ParityRow:
    """One parity comparison."""

    label: str
    frames: int
    """Valid output frames compared (summed over a batch)."""
    max_abs_diff: float
    """Largest |difference| of log-probabilities over valid frames and tokens."""
    argmax_agreement: float = 1.0
    """Fraction of valid frames (or items) whose best token (class) is the same."""
    text_agreement: float | None = None
    """ctc: 1 - character error rate of the greedy transcript against the reference's."""


@dataclass
class ExportReport:
    """What :func:`export` did."""

    out_dir: Path
    exporter: str
    """``dynamo`` or ``torchscript`` (fallback)."""
    fused: bool
    opset: int
    parity: list[ParityRow]
    int8_parity: list[ParityRow] = field(default_factory=list)
    files: dict[str, int] = field(default_factory=dict)
    """File name -> size in bytes."""
    seconds: float = 0.0

    @property
    def max_abs_diff(self) -> float:
        return max((r.max_abs_diff for r in self.parity), default=0.0)


# ------------------------------------------------------------------------------------ loading


def _load(run: str | Path | nn.Module) -> tuple[nn.Module, str, int | None]:
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


# ------------------------------------------------------------------------------------ exporting


def _example(info: ModelInfo) -> tuple[torch.Tensor, torch.Tensor]:
    """Trace inputs: a batch of two with padding."""
    t = max(4 * info.min_samples, 2 * info.frame_shift_samples, 64)
    lengths = torch.tensor([t, t - max(1, t // 4)])
    if info.kind == "ctc":
        return torch.randn(2, t) * 0.1, lengths
    return torch.randn(2, info.in_channels, t), lengths


def _dynamic_shapes(info: ModelInfo) -> tuple[dict[int, Any], dict[int, Any]]:
    batch = torch.export.Dim("batch", min=1)
    time_ = torch.export.Dim("time", min=max(2, info.min_samples))
    return ({0: batch, 1 if info.kind == "ctc" else 2: time_}, {0: batch})


def _graph(model: nn.Module, fused: bool) -> nn.Module:
    if isinstance(model, CTCModel):
        return CTCGraph(model, fused).eval()
    return ClassifierGraph(model, fused).eval()  # type: ignore[arg-type]


def _dynamo(graph: nn.Module, example: tuple[torch.Tensor, ...], input_names: list[str], output_names: list[str],
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


def _export_dynamo(model: nn.Module, info: ModelInfo, path: Path, fused: bool, opset: int) -> None:
    _dynamo(_graph(model, fused), _example(info), info.inputs, info.outputs, _dynamic_shapes(info), path, fused, opset)


def _export_streaming(model: CTCModel, info: ModelInfo, out: Path, fused: bool, opset: int) -> None:
    """The front-end graph (dynamic batch and time) and the chunk step graph (dynamic batch and
    chunk length 1..C, plus the R look-ahead frames) of a streaming recognizer, into ``out``."""
    from .streaming import ChunkStepGraph, FrontendGraph

    g = info.streaming
    assert g is not None
    batch = torch.export.Dim("batch", min=1)
    wav, lengths = _example(info)
    window = g.left_samples + g.chunk_frames * g.frame_shift_samples + g.right_samples
    _dynamo(FrontendGraph(model, fused, window).eval(), (wav, lengths), g.frontend_inputs, g.frontend_outputs,
            _dynamic_shapes(info), out / FRONTEND_FILE, fused, opset)
    c, r = g.chunk_frames, g.lookahead_frames
    states = tuple(torch.zeros(2, *s.shape, dtype=getattr(torch, s.dtype)) for s in g.states)
    processed = torch.tensor([c * g.left_chunks, 0])  # one stream with a full cache, one just started
    example = (torch.randn(2, c + r, g.frame_dim), *states[:-1], processed)
    frames = torch.export.Dim("frames", min=r + 1, max=c + r)
    shapes = ({0: batch, 1: frames}, *({0: batch} for _ in states))
    _dynamo(ChunkStepGraph(model).eval(), example, info.inputs, info.outputs, shapes, out / MODEL_FILE, fused, opset)


def _export_torchscript(model: nn.Module, info: ModelInfo, path: Path, opset: int) -> None:
    graph = _graph(model, fused=False)
    time_axis = 1 if info.kind == "ctc" else 2
    axes = {info.inputs[0]: {0: "batch", time_axis: "time"}, info.inputs[1]: {0: "batch"},
            info.outputs[0]: {0: "batch", 1: "frames"} if info.kind == "ctc" else {0: "batch"}}
    if info.kind == "ctc":
        axes[info.outputs[1]] = {0: "batch"}
    torch.onnx.export(graph, _example(info), str(path), dynamo=False, input_names=info.inputs,
                      output_names=info.outputs, dynamic_axes=axes, opset_version=min(opset, 17))


def _put_metadata(proto: Any, info: ModelInfo) -> None:
    """Replace an ONNX model's ``metadata_props`` by ``info``'s keys (in memory)."""
    del proto.metadata_props[:]
    for key, value in info.metadata_props().items():
        proto.metadata_props.add(key=key, value=value)


def _set_metadata(path: Path, info: ModelInfo) -> None:
    import onnx

    proto = onnx.load(str(path))
    _put_metadata(proto, info)
    onnx.save(proto, str(path))


# ------------------------------------------------------------------------------------ parity


def _session(path: Path, threads: int = 0) -> Any:
    from wavssl_onnx.session import cpu_session

    return cpu_session(path, threads, spin=True)  # the runtime's graph, checked at full speed


def _torch_outputs(model: nn.Module, batch: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The PyTorch model's log-probs (and output lengths) on the batch, as the PyTorch pipeline
    feeds it (each utterance standardised first when the model was trained so)."""
    with torch.no_grad():
        if isinstance(model, CTCModel):
            if model.normalize_audio:
                batch = pad_stack([standardize(x[:n]) for x, n in zip(batch, lengths)])[0]
            out = model(torch.from_numpy(batch), torch.from_numpy(lengths))
            return out.log_probs().numpy(), out.lengths.numpy()
        logits = model(torch.from_numpy(batch), torch.from_numpy(lengths)).logits
        return torch.log_softmax(logits.float(), -1).numpy(), np.ones(len(lengths), dtype=np.int64)


def _greedy_text(log_probs: np.ndarray, info: ModelInfo) -> str:
    from wavssl_onnx import greedy_decode

    assert info.vocabulary is not None
    return greedy_decode(log_probs, info.vocabulary, frame_shift=info.frame_shift).text


def _compare(label: str, info: ModelInfo, want: np.ndarray, want_len: np.ndarray, got: np.ndarray,
             got_len: np.ndarray | None) -> ParityRow:
    """Parity of one batch: log-probs over valid frames, argmax and (ctc) greedy-text agreement."""
    from wavssl_onnx import cer

    if info.kind == "classify":
        diff = float(np.abs(got - want).max())
        agree = float((got.argmax(-1) == want.argmax(-1)).mean())
        return ParityRow(label, len(want), diff if np.isfinite(got).all() else math.inf, agree)
    if got_len is None or not np.array_equal(got_len, want_len):
        raise ExportError(f"parity ({label}): ONNX output lengths {got_len} != PyTorch {want_len}")
    diff, frames, same, refs, hyps = 0.0, 0, 0, [], []
    for b, n in enumerate(want_len.tolist()):
        g, w = got[b, :n], want[b, :n]
        diff = max(diff, float(np.abs(g - w).max()) if n else 0.0, 0.0 if np.isfinite(g).all() else math.inf)
        frames += n
        same += int((g.argmax(-1) == w.argmax(-1)).sum())
        refs.append(_greedy_text(w, info))
        hyps.append(_greedy_text(g, info))
    text = 1.0 - cer(refs, hyps).rate if any(refs) else float(refs == hyps)
    return ParityRow(label, frames, diff, same / max(frames, 1), max(text, 0.0))


def _check_inputs(info: ModelInfo, audio: Sequence[np.ndarray]) -> list[tuple[str, list[np.ndarray]]]:
    """Labelled batches: the shortest allowed input, single utterances of PARITY_SECONDS, a padded
    batch, and each real recording alone and padded beside a shorter copy of itself."""
    rng = np.random.default_rng(0)
    rate = info.sample_rate

    def signal(n: int) -> np.ndarray:
        if info.kind == "classify":
            x = np.cumsum(rng.standard_normal((info.in_channels, n)), axis=1).astype(np.float32) * 0.3
            if n > 8:
                x[0, n // 3: n // 3 + max(1, n // 20)] = np.nan  # a gap: the graph imputes it
            return x
        t = np.arange(n) / rate
        tone = 0.3 * np.sin(2 * np.pi * (200 + 300 * np.sin(2 * np.pi * 0.5 * t)) * t)
        return (tone + 0.05 * rng.standard_normal(n)).astype(np.float32)

    batches = [(f"shortest ({info.min_samples} samples)", [signal(info.min_samples)])]
    batches += [(f"{s:g} s", [signal(int(s * rate))]) for s in PARITY_SECONDS]
    batches.append(("padded batch " + "/".join(f"{s:g}" for s in PADDED_BATCH_SECONDS) + " s",
                    [signal(max(int(s * rate), info.min_samples)) for s in PADDED_BATCH_SECONDS]))
    for i, wave in enumerate(audio):
        batches.append((f"audio {i} ({len(wave) / rate:.1f} s)", [wave]))
        half = wave[: max(len(wave) // 2, info.min_samples)]
        batches.append((f"audio {i} padded", [wave, half]))
    return batches


def parity_check(model: nn.Module, path: Path, info: ModelInfo, audio: Sequence[np.ndarray] = (),
                 reference: Path | None = None) -> list[ParityRow]:
    """Compare the ONNX graph at ``path`` with ``model`` (or, with ``reference``, with that ONNX
    graph) on the check batches; returns one row per batch."""
    session = _session(path)
    ref_session = _session(reference) if reference is not None else None
    rows = []
    for label, items in _check_inputs(info, audio):
        batch, lengths = pad_stack(items)
        feeds = {info.inputs[0]: batch, info.inputs[1]: lengths}
        outs = session.run(None, feeds)
        if ref_session is not None:
            ref = ref_session.run(None, feeds)
            want, want_len = ref[0], (ref[1] if info.kind == "ctc" else np.ones(len(lengths), np.int64))
        else:
            want, want_len = _torch_outputs(model, batch, lengths)
        rows.append(_compare(label, info, want, want_len, outs[0], outs[1] if info.kind == "ctc" else None))
    return rows


def streaming_parity(model: nn.Module, out: Path, info: ModelInfo, graphs: tuple[str, str],
                     audio: Sequence[np.ndarray] = (), reference: tuple[str, str] | None = None) -> list[ParityRow]:
    """Stream each check input through the ONNX ``graphs`` = (step graph, front-end graph) in ``out``
    (blocks of :data:`STREAM_BLOCK_SECONDS`) and compare with the PyTorch model's offline forward on
    the whole input (or, with ``reference``, with streaming through that pair); one row per check batch."""
    from wavssl_onnx.audio import array_blocks
    from wavssl_onnx.recognizer import OfflineRecognizer

    def recognizer(pair: tuple[str, str]) -> OfflineRecognizer:
        return OfflineRecognizer(info, _session(out / pair[0]), frontend=_session(out / pair[1]))

    rec = recognizer(graphs)
    ref = recognizer(reference) if reference is not None else None
    block = int(STREAM_BLOCK_SECONDS * info.sample_rate)
    rows = []
    for label, items in _check_inputs(info, audio):
        wants, gots = [], []
        for wave in items:
            got = rec.log_probs_stream(array_blocks(wave, block))
            want = ref.log_probs_stream(array_blocks(wave, block)) if ref is not None else \
                _torch_outputs(model, wave[None], np.array([len(wave)]))[0][0]
            wants.append(want)
            gots.append(got)
        pad = max(len(a) for a in wants + gots)
        want, want_len = pad_stack(wants, axis=0, size=pad)
        got, got_len = pad_stack(gots, axis=0, size=pad)
        rows.append(_compare(label.replace("padded batch", "streams").replace(" padded", " + half"), info, want,
                             want_len, got, got_len))
    return rows


def format_parity(rows: Sequence[ParityRow], title: str) -> str:
    """A small text table of parity rows."""
    lines = [title, f"  {'input':34s} {'frames':>7s} {'max|dlogp|':>11s} {'argmax':>7s} {'text':>6s}"]
    for r in rows:
        text = "" if r.text_agreement is None else f"{100 * r.text_agreement:5.1f}%"
        lines.append(f"  {r.label:34s} {r.frames:7d} {r.max_abs_diff:11.2e} {100 * r.argmax_agreement:6.1f}% {text:>6s}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ int8


def _int8_excluded(path: Path) -> list[str]:
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
                     weight_type=QuantType.QInt8, nodes_to_exclude=_int8_excluded(src),
                     reduce_range=weight_limit <= WEIGHT_LIMIT,
                     extra_options={"MatMulConstBOnly": True})
    proto = onnx.load(str(dst))
    quantize_before_gather(proto)
    fuse_gathered_products(proto)
    int8_grouped_conv(proto, weight_limit=weight_limit)
    if (largest := int8_weight_range(proto)) > weight_limit:
        raise ExportError(f"{dst.name}: an int8 weight of magnitude {largest} > {WEIGHT_LIMIT} would saturate "
                          f"the int16 sums of AVX2 CPUs without VNNI; nothing written")
    _put_metadata(proto, info)
    onnx.save(proto, str(dst))


# ------------------------------------------------------------------------------------ export


def export(run: str | Path | nn.Module, out: str | Path, *, int8: bool = False, fused: bool = True,
           opset: int = 18, exporter: str = "dynamo", check_audio: Sequence[str | Path | np.ndarray] = (),
           atol: float = PARITY_ATOL, per_channel: bool = True, language: str | None = None,
           streaming: bool = False, log: Callable[[str], None] | None = print) -> ExportReport:
    """Export a fine-tuned recognizer or classifier (a run directory or the model itself) to ``out``.

    Args:
        run: recognizer or classifier run directory, or a :class:`CTCModel` / :class:`SequenceClassifier`.
        out: model directory to write (created; its model files and ``wavssl.json`` are replaced).
        int8: also write ``model.int8.onnx``.
        fused: use ONNX Runtime contrib ops and the MatMul front end (fast; ONNX Runtime only);
            False keeps standard ONNX ops.
        opset: ONNX opset of the dynamo export.
        exporter: ``dynamo`` (falls back to ``torchscript`` if it fails) or ``torchscript``.
        check_audio: real recordings (paths or 1-D arrays at the model's rate) added to the parity check.
        atol: parity tolerance on log-probabilities (fp32).
        per_channel: int8 weight scales per output channel (default; as fast as per tensor and closer to fp32).
        language: transcript language stored for the runtime (default: the run's ``ctc.language``).
        streaming: write a streaming model (a recognizer trained with chunked attention): a
            front-end graph and a chunk step graph with explicit state (see :mod:`wavssl.streaming`);
            the parity check then streams each input and compares with the offline forward.
        log: where progress and the parity tables go (None: silent).

    Raises:
        ExportError: the parity check failed, or the run cannot be exported. Nothing is written then.
    """
    if exporter not in ("dynamo", "torchscript"):
        raise ValueError(f"exporter must be 'dynamo' or 'torchscript', got {exporter!r}")
    if streaming and exporter != "dynamo":
        raise ValueError("a streaming export uses the dynamo exporter")
    _require_onnx()
    say = log or (lambda _: None)
    start = time.perf_counter()
    model, run_language, rate = _load(run)
    model = model.eval()
    language = language if language is not None else run_language
    info = streaming_info(model, language, rate) if streaming else model_info(model, language, rate)  # type: ignore[arg-type]
    audio = [_read_check_audio(x, info) for x in check_audio]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".export-"))
    try:
        onnx_path = tmp / MODEL_FILE
        used = exporter
        if streaming:
            _export_streaming(model, info, tmp, fused, opset)  # type: ignore[arg-type]
        elif exporter == "dynamo":
            try:
                _export_dynamo(model, info, onnx_path, fused, opset)
            except Exception as e:
                say(f"[wavssl export] dynamo export failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                    f"falling back to the TorchScript exporter (standard ops)")
                used = "torchscript"
        if used == "torchscript":
            fused = False
            _export_torchscript(model, info, onnx_path, opset)
        for name in info.files.values():
            _set_metadata(tmp / name, info)

        def check(graph: str, reference: Path | None = None) -> list[ParityRow]:
            if streaming:
                return streaming_parity(model, tmp, info, STREAMING_GRAPHS[graph], audio,
                                        reference=None if reference is None else STREAMING_GRAPHS[reference.name])
            return parity_check(model, tmp / graph, info, audio, reference=reference)

        parity = check(MODEL_FILE)
        what = "streamed ONNX fp32 vs offline PyTorch" if streaming else "ONNX fp32 vs PyTorch"
        say(format_parity(parity, f"[wavssl export] parity {what} (tolerance {atol:g} on log-probs):"))
        bad = [r for r in parity if not r.max_abs_diff <= atol]
        if bad:
            raise ExportError(f"parity check failed: max |log p_onnx - log p_torch| = "
                              f"{max(r.max_abs_diff for r in bad):.3g} > {atol:g} on "
                              f"{', '.join(r.label for r in bad)}; nothing written to {out}")
        export_meta: dict[str, Any] = {
            "exporter": used, "opset": opset if used == "dynamo" else min(opset, 17), "fused_ops": fused,
            "parity_atol": atol, "parity_max_abs_diff": max(r.max_abs_diff for r in parity),
            "torch": torch.__version__, "wavssl": _wavssl_version(),
        }
        int8_rows: list[ParityRow] = []
        files = dict(info.files)
        if int8:
            quantize_int8(onnx_path, tmp / INT8_FILE, info, per_channel=per_channel)
            if streaming:  # in float the conv front end took 45% of a BASE int8 chunk's time
                quantize_int8(tmp / FRONTEND_FILE, tmp / FRONTEND_INT8_FILE, info, per_channel=per_channel)
                files["frontend_int8"] = FRONTEND_INT8_FILE
            int8_rows = check(INT8_FILE, reference=onnx_path)
            say(format_parity(int8_rows, "[wavssl export] int8 vs fp32 ONNX (dynamic quantization, informational):"))
            if not all(math.isfinite(r.max_abs_diff) for r in int8_rows):
                raise ExportError("the int8 model gives non-finite outputs; nothing written")
            files["int8"] = INT8_FILE
            export_meta["int8"] = {
                "scheme": INT8_SCHEME, "weight_limit": WEIGHT_LIMIT,
                "checked_on": {"cpu_flags": cpu_flags(), "int8_kernel": int8_kernel()},
                "per_channel": per_channel, "max_abs_diff": max(r.max_abs_diff for r in int8_rows),
                "argmax_agreement": min(r.argmax_agreement for r in int8_rows),
                "text_agreement": min((r.text_agreement for r in int8_rows if r.text_agreement is not None),
                                      default=None),
            }
        info = dataclasses.replace(info, files=files, export=export_meta)
        for name in files.values():  # the final description in every graph too
            _set_metadata(tmp / name, info)
        info.save(tmp)
        for name in (INT8_FILE, FRONTEND_FILE, FRONTEND_INT8_FILE):  # a stale graph would not match this export
            if name not in files.values():
                (out / name).unlink(missing_ok=True)
        for name in [*files.values(), CONFIG_FILE]:
            (tmp / name).replace(out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sizes = {name: (out / name).stat().st_size for name in [*files.values(), CONFIG_FILE]}
    report = ExportReport(out, used, fused, opset, parity, int8_rows, sizes, time.perf_counter() - start)
    say(f"[wavssl export] {info.kind} model -> {out} ({', '.join(f'{k} {v / 1e6:.1f} MB' for k, v in sizes.items())}; "
        f"{used} exporter, {report.seconds:.0f} s)")
    return report


def _require_onnx() -> None:
    """Raise ExportError naming the missing package (onnx, onnxscript, onnxruntime)."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"wavssl export needs {', '.join(missing)}: pip install 'wavssl[export]' ./export")


def _read_check_audio(x: str | Path | np.ndarray, info: ModelInfo) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return np.asarray(x, dtype=np.float32)
    if info.kind != "ctc":
        raise ExportError("check_audio applies to recognizers only")
    from .data.audio import load_audio

    return load_audio(x, info.sample_rate)


def _wavssl_version() -> str:
    from . import __version__

    return __version__


def describe(model_dir: str | Path) -> dict[str, Any]:
    """``wavssl.json`` of an exported model directory, as a dict."""
    return json.loads((Path(model_dir) / CONFIG_FILE).read_text(encoding="utf-8"))


__all__ = ["FORMAT_VERSION", "PARITY_ATOL", "ExportError", "ExportReport", "ParityRow", "export", "format_parity",
           "model_info", "parity_check", "quantize_int8", "streaming_info", "streaming_parity"]
