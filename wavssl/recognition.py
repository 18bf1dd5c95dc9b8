"""Recognition with a PyTorch CTC model: log-probabilities, transcripts with word times, WER and CER.

Inference lives here, outside ``wavssl.train``: a loaded recognizer (``wavssl.load``) transcribes
without the training wing. Decoding and metrics are the runtime package's (``wavssl_onnx``): the
same :class:`~wavssl_onnx.decoding.Greedy` / :class:`~wavssl_onnx.decoding.BeamSearch` objects the
ONNX recognizers hold, one copy.

- :func:`recognize`: (T_i,) waveforms -> (F_i, V) log-probabilities, batched by length.
- :func:`transcribe`: files or arrays -> hypotheses (what ``CTCModel.transcribe`` and
  ``wavssl transcribe`` run).
- :func:`evaluate`: a transcribed set -> :class:`Evaluation` (``wavssl evaluate``, validation).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from wavssl_onnx import ErrorRate, Hypothesis, cer, wer
from wavssl_onnx.audio import AudioError, check_log_probs, from_array, source_name, standardize
from wavssl_onnx.decoding import Decoding, Greedy

from .data.audio import load_audio
from .data.text import TranscribedSet, budget_batches, collate_audio

if TYPE_CHECKING:  # CTCModel.transcribe imports this module (when called)
    from .models import CTCModel

Source = str | os.PathLike[str] | np.ndarray


@torch.no_grad()
def recognize(model: CTCModel, waves: Sequence[np.ndarray], *, max_batch_samples: int = 1_600_000) -> list[np.ndarray]:
    """(F_i, V) float32 log-probabilities of every (T_i,) waveform at the model's rate, in input order;
    batched by length under ``max_batch_samples`` padded samples. The model is put in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    lengths = np.array([len(w) for w in waves], dtype=np.int64)
    out: list[np.ndarray] = [np.zeros((0, 0), np.float32)] * len(waves)
    for batch in budget_batches(lengths, max_batch_samples, seed=0, epoch=0, shuffle=False):
        wav, lens = collate_audio([waves[i] for i in batch])
        res = model(wav.to(device), lens.to(device))
        lp = res.log_probs().cpu().numpy()
        for row, i in enumerate(batch):
            out[i] = lp[row, : int(res.lengths[row])]
    return out


def model_waveform(model: CTCModel, x: Source, sample_rate: int, index: int = 0) -> np.ndarray:
    """An input -> (T,) float32 at the model's rate: files decoded, arrays ((T,) or (T, C) at
    ``sample_rate``) downmixed and resampled by the runtime's reader; standardised if the model was
    trained on standardised audio. Raises :class:`AudioError` naming the input."""
    if isinstance(x, np.ndarray):
        wave = from_array(x, sample_rate, model.sample_rate, source_name(x, index))
    else:
        wave = load_audio(x, model.sample_rate)
    return standardize(wave) if getattr(model, "normalize_audio", False) else wave


def transcribe(model: CTCModel, inputs: Sequence[Source], *, sample_rate: int = 16000, decoding: Decoding = Greedy(),
               max_batch_samples: int = 1_600_000) -> list[Hypothesis]:
    """Transcripts (text, token ids, score, word times in seconds) of audio files or float arrays
    (at ``sample_rate``) by ``decoding``. Raises AudioError naming the first input that cannot be
    decoded."""
    if model.vocab is None:
        raise ValueError("the model has no vocabulary (load it from a recognizer run with wavssl.load)")
    waves = [model_waveform(model, x, sample_rate, i) for i, x in enumerate(inputs)]
    log_probs = recognize(model, waves, max_batch_samples=max_batch_samples)
    return [decoding.decode(check_log_probs(lp, source_name(x, i)), model.vocab, frame_shift=model.frame_shift)
            for i, (x, lp) in enumerate(zip(inputs, log_probs))]


@dataclass
class Evaluation:
    """Scores of a recognizer on a transcribed set."""

    wer: ErrorRate
    cer: ErrorRate
    references: list[str]
    hypotheses: list[str]
    paths: list[str]
    skipped: list[tuple[str, str]]
    """Entries of the set that could not be scored (bad manifest lines, undecodable audio)."""

    def summary(self) -> dict[str, float | int]:
        return {"wer": self.wer.rate, "cer": self.cer.rate, "utterances": len(self.references),
                "word_errors": self.wer.edits, "words": self.wer.ref_units,
                "skipped": len(self.skipped)}


def evaluate(model: CTCModel, data: TranscribedSet, *, decoding: Decoding = Greedy(),
             max_batch_samples: int = 1_600_000) -> Evaluation:
    """WER and CER of ``model`` on ``data`` (references normalised as the set was read) by ``decoding``."""
    if model.vocab is None:
        raise ValueError("the model has no vocabulary")
    waves, refs, paths, skipped = [], [], [], list(data.skipped)
    for item in data.items:
        try:
            waves.append(model_waveform(model, item.path, model.sample_rate))
        except AudioError as e:
            skipped.append((item.where, str(e)))
            continue
        refs.append(item.text)
        paths.append(item.path)
    log_probs = recognize(model, waves, max_batch_samples=max_batch_samples)
    hyps = [decoding.decode(check_log_probs(lp, path), model.vocab, frame_shift=model.frame_shift).text
            for lp, path in zip(log_probs, paths)]
    return Evaluation(wer(refs, hyps), cer(refs, hyps), refs, hyps, paths, skipped)
