"""Parity of an exported graph: ONNX Runtime against the PyTorch model (or the int8 graph against the
fp32 one) on check inputs from the shortest allowed length to 60 s, a zero-padded batch and real
recordings; streaming graphs are fed in blocks and compared with the offline forward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from wavssl_onnx.audio import standardize
from wavssl_onnx.batching import pad_stack
from wavssl_onnx.model_dir import ModelInfo

from .export_graphs import ExportError
from .models import CTCModel

PARITY_ATOL = 1e-3
"""Largest allowed |log p_onnx - log p_torch| on any valid frame and token (fp32 graph)."""
PARITY_SECONDS = (1.0, 7.3, 60.0)
"""Single-utterance check lengths (besides the shortest allowed input)."""
PADDED_BATCH_SECONDS = (3.0, 2.2, 0.4)
"""Lengths of the zero-padded batch in the parity check."""
STREAM_BLOCK_SECONDS = 0.37
"""Audio pushed at a time in the streaming parity check (not a multiple of any chunk)."""


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


def parity_session(path: Path, threads: int = 0) -> Any:
    from wavssl_onnx.session import cpu_session

    return cpu_session(path, threads, spin=True)  # the runtime's graph, checked at full speed


def torch_outputs(model: nn.Module, batch: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def greedy_text(log_probs: np.ndarray, info: ModelInfo) -> str:
    from wavssl_onnx import greedy_decode

    assert info.vocabulary is not None
    return greedy_decode(log_probs, info.vocabulary, frame_shift=info.frame_shift).text


def compare(label: str, info: ModelInfo, want: np.ndarray, want_len: np.ndarray, got: np.ndarray,
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
        refs.append(greedy_text(w, info))
        hyps.append(greedy_text(g, info))
    text = 1.0 - cer(refs, hyps).rate if any(refs) else float(refs == hyps)
    return ParityRow(label, frames, diff, same / max(frames, 1), max(text, 0.0))


def check_inputs(info: ModelInfo, audio: Sequence[np.ndarray]) -> list[tuple[str, list[np.ndarray]]]:
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
    session = parity_session(path)
    ref_session = parity_session(reference) if reference is not None else None
    rows = []
    for label, items in check_inputs(info, audio):
        batch, lengths = pad_stack(items)
        feeds = {info.inputs[0]: batch, info.inputs[1]: lengths}
        outs = session.run(None, feeds)
        if ref_session is not None:
            ref = ref_session.run(None, feeds)
            want, want_len = ref[0], (ref[1] if info.kind == "ctc" else np.ones(len(lengths), np.int64))
        else:
            want, want_len = torch_outputs(model, batch, lengths)
        rows.append(compare(label, info, want, want_len, outs[0], outs[1] if info.kind == "ctc" else None))
    return rows


def streaming_parity(model: nn.Module, out: Path, info: ModelInfo, graphs: tuple[str, str],
                     audio: Sequence[np.ndarray] = (), reference: tuple[str, str] | None = None) -> list[ParityRow]:
    """Stream each check input through the ONNX ``graphs`` = (step graph, front-end graph) in ``out``
    (blocks of :data:`STREAM_BLOCK_SECONDS`) and compare with the PyTorch model's offline forward on
    the whole input (or, with ``reference``, with streaming through that pair); one row per check batch."""
    from wavssl_onnx.audio import array_blocks
    from wavssl_onnx.recognizer import OfflineRecognizer

    def recognizer(pair: tuple[str, str]) -> OfflineRecognizer:
        return OfflineRecognizer(info, parity_session(out / pair[0]), frontend=parity_session(out / pair[1]))

    rec = recognizer(graphs)
    ref = recognizer(reference) if reference is not None else None
    block = int(STREAM_BLOCK_SECONDS * info.sample_rate)
    rows = []
    for label, items in check_inputs(info, audio):
        wants, gots = [], []
        for wave in items:
            got = rec.log_probs_stream(array_blocks(wave, block))
            want = ref.log_probs_stream(array_blocks(wave, block)) if ref is not None else \
                torch_outputs(model, wave[None], np.array([len(wave)]))[0][0]
            wants.append(want)
            gots.append(got)
        pad = max(len(a) for a in wants + gots)
        want, want_len = pad_stack(wants, axis=0, size=pad)
        got, got_len = pad_stack(gots, axis=0, size=pad)
        rows.append(compare(label.replace("padded batch", "streams").replace(" padded", " + half"), info, want,
                             want_len, got, got_len))
    return rows


def format_parity(rows: Sequence[ParityRow], title: str) -> str:
    """A small text table of parity rows."""
    lines = [title, f"  {'input':34s} {'frames':>7s} {'max|dlogp|':>11s} {'argmax':>7s} {'text':>6s}"]
    for r in rows:
        text = "" if r.text_agreement is None else f"{100 * r.text_agreement:5.1f}%"
        lines.append(f"  {r.label:34s} {r.frames:7d} {r.max_abs_diff:11.2e} {100 * r.argmax_agreement:6.1f}% "
                     f"{text:>6s}")
    return "\n".join(lines)
