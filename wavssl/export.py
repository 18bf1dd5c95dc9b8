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

The steps live in their own modules: :mod:`wavssl.export_graphs` (what a directory describes, the
model loaded for export, tracing, metadata), :mod:`wavssl.export_parity` (the checks) and
:mod:`wavssl.onnx_int8` (quantization and its rewrites); :func:`export` is the list of steps.

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
from wavssl_onnx.cpu import cpu_flags, int8_kernel
from wavssl_onnx.model_dir import CONFIG_FILE, FORMAT_VERSION, INT8_FILE, MODEL_FILE

from .export_graphs import (
    FRONTEND_FILE,
    FRONTEND_INT8_FILE,
    STREAMING_GRAPHS,
    ExportError,
    export_dynamo,
    export_streaming,
    export_torchscript,
    load_for_export,
    model_info,
    read_check_audio,
    require_onnx,
    set_metadata,
    streaming_info,
    wavssl_version,
)
from .export_parity import PARITY_ATOL, ParityRow, format_parity, parity_check, streaming_parity
from .onnx_int8 import INT8_SCHEME, WEIGHT_LIMIT, quantize_int8


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
    require_onnx()
    say = log or (lambda _: None)
    start = time.perf_counter()
    model, run_language, rate = load_for_export(run)
    model = model.eval()
    language = language if language is not None else run_language
    info = streaming_info(model, language, rate) if streaming else model_info(model, language, rate)  # type: ignore[arg-type]
    audio = [read_check_audio(x, info) for x in check_audio]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".export-"))
    try:
        onnx_path = tmp / MODEL_FILE
        used = exporter
        if streaming:
            export_streaming(model, info, tmp, fused, opset)  # type: ignore[arg-type]
        elif exporter == "dynamo":
            try:
                export_dynamo(model, info, onnx_path, fused, opset)
            except Exception as e:
                say(f"[wavssl export] dynamo export failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                    f"falling back to the TorchScript exporter (standard ops)")
                used = "torchscript"
        if used == "torchscript":
            fused = False
            export_torchscript(model, info, onnx_path, opset)
        for name in info.files.values():
            set_metadata(tmp / name, info)

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
            "torch": torch.__version__, "wavssl": wavssl_version(),
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
            set_metadata(tmp / name, info)
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


def describe(model_dir: str | Path) -> dict[str, Any]:
    """``wavssl.json`` of an exported model directory, as a dict."""
    return json.loads((Path(model_dir) / CONFIG_FILE).read_text(encoding="utf-8"))


__all__ = ["FORMAT_VERSION", "PARITY_ATOL", "ExportError", "ExportReport", "ParityRow", "describe", "export",
           "format_parity", "model_info", "parity_check", "quantize_int8", "streaming_info", "streaming_parity"]
