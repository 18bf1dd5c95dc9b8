"""Opening an exported model with ONNX Runtime (CPU)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import onnxruntime as ort

from .cpu import PAIR_SUM_LIMIT, int8_saturation_risk
from .model_dir import ModelDirError, ModelInfo, check_metadata, load_model_info, model_file


def session_options(threads: int | None = None, spin: bool = False) -> ort.SessionOptions:
    """CPU session options: ``threads`` intra-op threads (None or 0: ONNX Runtime's default, one per
    physical core), one inter-op thread, every graph optimisation (fusions happen at load time).

    ONNX Runtime's memory pattern (one block planned from the previous run's shapes) is off: inputs
    change length from call to call. With it on, 3 min of audio through a BASE recognizer (38 s
    windows, 2 threads) peaked at 1.21 GB int8 / 1.47 GB fp32, against 0.78 / 0.97 GB without, at
    the same speed (10 s clip: 166 vs 166 ms int8, 398 vs 394 ms fp32); a 60-minute file through
    BASE int8 (``wavssl-onnx transcribe``) peaks at 0.86 GB.

    ``spin``: let idle worker threads busy-wait for the next parallel section (ONNX Runtime's
    default). Off by default here: on a machine shared with other work, spinning threads take
    cores from the threads doing work (measured 1.4x slower on a loaded 2-core box); on an idle
    dedicated machine it may save a little latency."""
    if threads is not None and threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or 0)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_mem_pattern = False
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return opts


DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)
"""ONNX Runtime graph rewrites left out: its fused SkipLayerNormalization CPU kernel is slower than the
Add + LayerNormalization it replaces (BASE, 10 s, 2 threads: 7 % of the int8 run, 3 % of fp32;
the same for transformers' exported graphs)."""


def cpu_session(path: str | os.PathLike[str], threads: int | None = None, spin: bool = False) -> Any:
    """An ONNX Runtime CPU session for ``path`` with :func:`session_options` and
    :data:`DISABLED_OPTIMIZERS`."""
    return ort.InferenceSession(str(path), session_options(threads, spin), providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(DISABLED_OPTIMIZERS))


def load_session(path: str | os.PathLike[str], threads: int | None = None, spin: bool = False) -> Any:
    """:func:`cpu_session`, raising :class:`ModelDirError` naming ``path`` when ONNX Runtime cannot load it."""
    try:
        return cpu_session(path, threads, spin)
    except Exception as e:
        raise ModelDirError(f"{path}: ONNX Runtime cannot load it: {str(e).strip().splitlines()[0]}") from e


def open_model(model_dir: str | os.PathLike[str], kind: str, *, threads: int | None = None,
               int8: bool = False, spin: bool = False) -> tuple[ModelInfo, Any, Path]:
    """Validate ``model_dir`` for a ``kind`` model and open its fp32 (or int8) graph.

    Returns:
        ``(info, session, path)``.
    Raises:
        ModelDirError: missing or malformed files, a newer format, the wrong kind, or a graph whose
            metadata or inputs disagree with ``wavssl.json`` (the message names the file).
    """
    info = load_model_info(model_dir)
    if info.kind != kind:
        raise ModelDirError(f"{Path(model_dir) / 'wavssl.json'}: a {info.kind!r} model, not a {kind!r} model")
    path = model_file(model_dir, info, int8)
    if int8 and int8_saturation_risk((info.export.get("int8") or {}).get("weight_limit")):
        warnings.warn(f"{path}: exported before int8 weights were limited to +-{PAIR_SUM_LIMIT}; this CPU (AVX2 "
                      f"without VNNI) can saturate its products and give wrong outputs: re-export it with "
                      f"wavssl export --int8, or run the fp32 model", stacklevel=2)
    session = load_session(path, threads, spin)
    check_metadata(path, info, dict(session.get_modelmeta().custom_metadata_map))
    names = [i.name for i in session.get_inputs()]
    if names != info.inputs:
        raise ModelDirError(f"{path}: graph inputs {names} differ from wavssl.json {info.inputs}")
    return info, session, path
