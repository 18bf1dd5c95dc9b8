"""The Transcribe tab's work: one file through an :class:`wavssl_onnx.OfflineRecognizer`, timed,
with its log-probabilities kept for the posteriorgram, and written out as JSON and SRT."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from wavssl_onnx import AudioError, Decoding, Hypothesis, NGramLM, Result, WordTime, cer, normalize_text, wer
from wavssl_onnx.audio import probe, read_audio
from wavssl_onnx.lm import load_lm

SUBTITLE_WORDS = 7
"""Most words per subtitle cue."""
SUBTITLE_SECONDS = 3.5
"""Longest subtitle cue (a longer pause also starts a new cue)."""
SUBTITLE_GAP = 0.8
"""A pause this long between words starts a new cue."""


@dataclass
class Transcript:
    """One file's recognition result."""

    source: str
    """The file's name (as uploaded)."""
    hypothesis: Hypothesis
    duration: float
    """Seconds of audio."""
    seconds: float
    """Wall-clock processing time: decode the file, run the model, decode the text."""
    log_probs: np.ndarray
    """(F, V) log-probabilities per frame."""
    frame_shift: float
    model: str
    decoding: str

    @property
    def rtf(self) -> float:
        """Real-time factor: processing seconds per audio second."""
        return self.seconds / self.duration if self.duration > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the runtime's result (``path``, ``text``, ``duration``, ``words``) plus timing."""
        out = Result(self.source, self.hypothesis, duration=self.duration).to_dict()
        out.update(model=self.model, decoding=self.decoding, processing_seconds=round(self.seconds, 4),
                   rtf=round(self.rtf, 4))
        return out


def check_audio(path: str | os.PathLike[str], max_seconds: float) -> float:
    """The file's duration in seconds from its header; AudioError if unreadable or longer than the limit."""
    info = probe(path)
    if info.duration > max_seconds:
        raise AudioError(Path(path).name, f"{info.duration:.1f} s of audio; this demo accepts at most "
                                          f"{max_seconds:g} s per file")
    return info.duration


def transcribe_file(recognizer: Any, path: str | os.PathLike[str], decoding: Decoding, *, model: str = "",
                    name: str | None = None) -> Transcript:
    """Read ``path`` (anything libsndfile reads), run ``recognizer`` (an OfflineRecognizer) and decode.

    Gives the same hypothesis as ``recognizer.transcribe([path], decoding=decoding)``
    (the file is read whole here, so the log-probabilities can be plotted).
    """
    start = time.perf_counter()
    wave = read_audio(path, recognizer.sample_rate)  # (T,) float32 at the model's rate
    if len(wave) < recognizer.info.min_samples:
        raise AudioError(name or path, f"too short: the model needs at least "
                                       f"{1000 * recognizer.info.min_samples / recognizer.sample_rate:.0f} ms")
    (log_probs,) = recognizer.log_probs([wave])  # (F, V)
    hyp = recognizer.decode(log_probs, decoding)
    seconds = time.perf_counter() - start
    return Transcript(name or Path(path).name, hyp, len(wave) / recognizer.sample_rate, seconds, log_probs,
                      recognizer.frame_shift, model, decoding.describe())


def word_rows(words: list[WordTime]) -> list[list[Any]]:
    """Rows of the word table: number, word, start and end in seconds."""
    return [[i + 1, w.word, round(w.start, 2), round(w.end, 2)] for i, w in enumerate(words)]


def cues(words: list[WordTime]) -> list[tuple[float, float, str]]:
    """Words grouped into subtitle cues (start, end, text): at most :data:`SUBTITLE_WORDS` words and
    :data:`SUBTITLE_SECONDS` seconds each, a new cue after a pause."""
    out: list[tuple[float, float, str]] = []
    group: list[WordTime] = []
    for w in words:
        if group and (len(group) >= SUBTITLE_WORDS or w.end - group[0].start > SUBTITLE_SECONDS
                      or w.start - group[-1].end > SUBTITLE_GAP):
            out.append((group[0].start, group[-1].end, " ".join(x.word for x in group)))
            group = []
        group.append(w)
    if group:
        out.append((group[0].start, group[-1].end, " ".join(x.word for x in group)))
    return out


def _srt_time(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def to_srt(words: list[WordTime]) -> str:
    """SubRip subtitles of the words (numbered cues, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``)."""
    return "".join(f"{i}\n{_srt_time(s)} --> {_srt_time(e)}\n{text}\n\n"
                   for i, (s, e, text) in enumerate(cues(words), start=1))


def subtitles(words: list[WordTime]) -> list[dict[str, Any]]:
    """The cues as gradio's audio player takes them: ``[{"text", "timestamp": [start, end]}]``."""
    return [{"text": text, "timestamp": [s, e]} for s, e, text in cues(words)]


def write_outputs(t: Transcript, directory: Path) -> list[str]:
    """``STEM.json`` and ``STEM.srt`` of the result in ``directory``; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = Path(t.source).stem or "transcript"
    json_path, srt_path = directory / f"{stem}.json", directory / f"{stem}.srt"
    json_path.write_text(json.dumps(t.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
    srt_path.write_text(to_srt(t.hypothesis.words), encoding="utf-8")
    return [str(json_path), str(srt_path)]


def scores(reference: str, hypothesis: str, language: str) -> tuple[float, float] | None:
    """(WER, CER) of the hypothesis against a reference, both normalised for ``language``; None
    without a reference."""
    ref = normalize_text(reference, language or None)
    if not ref:
        return None
    hyp = normalize_text(hypothesis, language or None)
    return wer([ref], [hyp]).rate, cer([ref], [hyp]).rate


class LMCache:
    """n-gram LMs estimated from uploaded files, kept by content (estimating takes a while)."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._lms: dict[tuple[str, str, int, str], NGramLM] = {}
        self._lock = threading.Lock()

    def get(self, path: str | os.PathLike[str], *, language: str, order: int, level: str) -> NGramLM:
        """The LM of a text corpus (one sentence per line) or a saved ``.json`` LM."""
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        key = (digest + Path(path).suffix, language, order, level)
        with self._lock:
            if key not in self._lms:
                try:
                    lm = load_lm(path, language=language or None, order=order, level=level)
                except (ValueError, KeyError, UnicodeDecodeError, json.JSONDecodeError) as e:
                    raise ValueError(f"{Path(path).name}: not a text corpus or saved LM ({e})") from e
                if len(self._lms) >= self.size:
                    self._lms.pop(next(iter(self._lms)))
                self._lms[key] = lm
            return self._lms[key]
