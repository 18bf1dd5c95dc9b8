"""Offline speech recognition with an exported CTC model on ONNX Runtime (no PyTorch).

``OfflineRecognizer.from_dir(MODEL_DIR)`` loads a model directory written by ``wavssl export``;
``transcribe(paths_or_arrays)`` returns a :class:`~wavssl_onnx.decoding.Hypothesis` (text, token ids,
score, word times in seconds) per input.

- Inputs: anything libsndfile reads, or arrays; downmixed to mono and resampled with soxr.
- Short inputs (up to ``chunk_seconds + 2 * context_seconds``) are batched by length: sorted,
  zero-padded under a ``max_batch_seconds`` budget (the graph masks the padding; a model with an
  utterance-wide GroupNorm front end sees the padding in that norm's statistics, as in PyTorch, so
  sorting keeps it small).
- Long inputs stream through overlapping windows: each ``chunk_seconds`` piece is run with up to
  ``context_seconds`` of audio on each side, whose frames are discarded, and the kept frames are
  concatenated on the global frame grid (window starts are whole frames), so word times need no
  offsetting and memory stays bounded whatever the file length. Each window is one utterance to
  the model (standardised on its own when the model does that).
- Decoding: greedy, or prefix beam search with an optional n-gram LM, over the whole input.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .audio import (AudioError, Source, array_blocks, from_array, mono, probe, read_audio, source_name, stream_audio,
                    stream_resampler)
from .decoding import Hypothesis, beam_search, greedy_decode
from .lm import NGramLM
from .model_dir import ModelInfo
from .session import open_model
from .vocab import Vocabulary


@dataclass
class Result:
    """Outcome for one input: a hypothesis, or the error that stopped it."""

    source: str
    """The path, or ``<array N>``."""
    hypothesis: Hypothesis | None = None
    error: str | None = None
    duration: float = 0.0
    """Seconds of audio (at the model's rate)."""

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``path``, ``text``, ``words`` ({word, start, end}), ``duration`` - or ``error``."""
        if self.hypothesis is None:
            return {"path": self.source, "error": self.error}
        return {"path": self.source, "text": self.hypothesis.text, "duration": round(self.duration, 3),
                "words": [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3)}
                          for w in self.hypothesis.words]}


class Windows:
    """Overlapping inference windows over audio that arrives in pieces (at the model's rate).

    Window k keeps the samples [k * chunk, (k + 1) * chunk) and sees ``context`` more on each side;
    its frames outside the kept part are dropped. Frame f of a window starting at sample s is global
    frame s / hop + f, since s is a whole number of frames, so the kept pieces concatenate into the
    frame grid of the whole input. Memory: at most chunk + 2 * context samples are held.
    """

    def __init__(self, recognizer: "OfflineRecognizer") -> None:
        self.recognizer = recognizer
        self.buffer = np.zeros(0, np.float32)
        self.buffer_start = 0
        """Global index of ``buffer[0]``."""
        self.keep_from = 0
        """First sample whose frames are not out yet."""
        self.emitted = False

    def push(self, block: np.ndarray) -> list[np.ndarray]:
        """Add samples; returns the (F_k, V) log-probs of every window completed by them (maybe none)."""
        r = self.recognizer
        hop, chunk, ctx = r.info.frame_shift_samples, r.chunk, r.context
        self.buffer = np.concatenate([self.buffer, np.asarray(block, dtype=np.float32).reshape(-1)])
        out = []
        while self.buffer_start + len(self.buffer) >= self.keep_from + chunk + ctx:
            start = max(0, self.keep_from - ctx)
            window = self.buffer[start - self.buffer_start: self.keep_from + chunk + ctx - self.buffer_start]
            first = (self.keep_from - start) // hop
            out.append(r.forward([window])[0][first: first + chunk // hop])
            self.keep_from += chunk
            drop = max(0, self.keep_from - ctx) - self.buffer_start
            self.buffer, self.buffer_start = self.buffer[drop:], self.buffer_start + drop
        self.emitted |= bool(out)
        return out

    def finish(self) -> list[np.ndarray]:
        """The frames after the last full window (no right context), if the audio left makes any."""
        r = self.recognizer
        end = self.buffer_start + len(self.buffer)
        if end <= self.keep_from and self.emitted:
            return []
        start = max(0, self.keep_from - r.context)
        window = self.buffer[start - self.buffer_start:]
        first = (self.keep_from - start) // r.info.frame_shift_samples
        self.keep_from = end
        if len(window) < r.info.min_samples:
            return []
        return [r.forward([window])[0][first:]]


class OfflineRecognizer:
    """A CTC recognizer on ONNX Runtime. Build it with :meth:`from_dir`."""

    def __init__(self, info: ModelInfo, session: Any, *, chunk_seconds: float = 30.0, context_seconds: float = 4.0,
                 max_batch_seconds: float = 60.0, max_batch_size: int = 8) -> None:
        if info.vocabulary is None:
            raise ValueError("a recognizer needs a vocabulary")
        if chunk_seconds <= 0 or context_seconds < 0 or max_batch_seconds <= 0 or max_batch_size < 1:
            raise ValueError("chunk_seconds, max_batch_seconds and max_batch_size must be positive, "
                             "context_seconds >= 0")
        self.info, self.session = info, session
        self.vocab: Vocabulary = info.vocabulary
        hop, rate = info.frame_shift_samples, info.sample_rate
        self.chunk = max(1, round(chunk_seconds * rate / hop)) * hop
        """Samples kept per long-audio window (whole frames)."""
        self.context = max(math.ceil(max(info.min_samples - hop, 0) / hop), round(context_seconds * rate / hop)) * hop
        """Samples of left/right context per window (at least what a frame's receptive field needs)."""
        self.max_batch_samples = int(max_batch_seconds * rate)
        self.max_batch_size = max_batch_size

    @classmethod
    def from_dir(cls, model_dir: str | os.PathLike[str], *, threads: int | None = None, int8: bool = False,
                 spin: bool = False, chunk_seconds: float = 30.0, context_seconds: float = 4.0,
                 max_batch_seconds: float = 60.0, max_batch_size: int = 8) -> OfflineRecognizer:
        """Load an exported recognizer.

        Args:
            model_dir: directory written by ``wavssl export``.
            threads: intra-op threads (None: ONNX Runtime's default, one per physical core).
            int8: run ``model.int8.onnx`` instead of ``model.onnx``.
            spin: busy-waiting worker threads (see :func:`wavssl_onnx.session.session_options`).
            chunk_seconds, context_seconds: long-audio windows (see the module docstring).
            max_batch_seconds, max_batch_size: padded-batch budget for short inputs.

        Raises:
            ModelDirError: the directory is invalid, incomplete or from a newer format; names the file.
        """
        info, session, _ = open_model(model_dir, "ctc", threads=threads, int8=int8, spin=spin)
        return cls(info, session, chunk_seconds=chunk_seconds, context_seconds=context_seconds,
                   max_batch_seconds=max_batch_seconds, max_batch_size=max_batch_size)

    @property
    def sample_rate(self) -> int:
        return self.info.sample_rate

    @property
    def frame_shift(self) -> float:
        """Seconds between output frames."""
        return self.info.frame_shift

    @property
    def long_threshold(self) -> int:
        """Inputs longer than this many samples are run in overlapping windows."""
        return self.chunk + 2 * self.context

    # ------------------------------------------------------------------------------ inference

    def forward(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One padded batch: (T_i,) float32 waveforms at the model's rate -> (F_i, V) log-probs each."""
        lengths = np.array([len(w) for w in waves], dtype=np.int64)
        batch = np.zeros((len(waves), int(lengths.max())), dtype=np.float32)
        for i, w in enumerate(waves):
            batch[i, : len(w)] = w
        log_probs, frames = self.session.run(None, {self.info.inputs[0]: batch, self.info.inputs[1]: lengths})
        return [log_probs[i, : int(n)] for i, n in enumerate(frames)]

    def _batches(self, lengths: Sequence[int]) -> Iterator[list[int]]:
        """Indices grouped by length: sorted, each group's padded size within the budget."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        group: list[int] = []
        for i in order:
            if group and ((len(group) + 1) * lengths[i] > self.max_batch_samples or len(group) >= self.max_batch_size):
                yield group
                group = []
            group.append(i)
        if group:
            yield group

    def log_probs(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        """(F_i, V) float32 log-probabilities of (T_i,) waveforms at the model's rate, in input
        order (short ones batched by length, long ones in overlapping windows)."""
        out: list[np.ndarray] = [np.zeros((0, len(self.vocab)), np.float32)] * len(waves)
        short = [i for i, w in enumerate(waves) if len(w) <= self.long_threshold]
        for group in self._batches([len(waves[i]) for i in short]):
            for j, lp in zip(group, self.forward([waves[short[j]] for j in group])):
                out[short[j]] = lp
        for i, w in enumerate(waves):
            if len(w) > self.long_threshold:
                out[i] = self.log_probs_stream(array_blocks(w, self.chunk))
        return out

    def log_probs_stream(self, blocks: Iterable[np.ndarray]) -> np.ndarray:
        """(F, V) log-probabilities of audio arriving in blocks, window by window (:class:`Windows`)."""
        windows = Windows(self)
        pieces = [piece for block in blocks for piece in windows.push(block)]
        pieces += windows.finish()
        if not pieces:
            return np.zeros((0, len(self.vocab)), np.float32)
        return np.concatenate(pieces)

    def stream(self, *, sample_rate: int | None = None) -> "OnlineStream":
        """A push-style stream: feed audio as it arrives, read the transcript so far, finish at the end
        (see :class:`OnlineStream`)."""
        return OnlineStream(self, sample_rate=sample_rate or self.sample_rate)

    # ------------------------------------------------------------------------------ decoding

    def decode(self, log_probs: np.ndarray, *, beam: int = 1, lm: NGramLM | None = None, lm_weight: float = 0.5,
               word_bonus: float = 0.0) -> Hypothesis:
        """Best hypothesis of (F, V) log-probs: greedy (``beam`` 1, no LM) or prefix beam search."""
        if beam <= 1 and lm is None:
            return greedy_decode(log_probs, self.vocab, frame_shift=self.frame_shift)
        return beam_search(log_probs, self.vocab, beam=max(beam, 2), lm=lm, lm_weight=lm_weight,
                           word_bonus=word_bonus, frame_shift=self.frame_shift)[0]

    def _load(self, x: Source, index: int, sample_rate: int) -> tuple[np.ndarray | None, float]:
        """A short input's waveform, or (None, duration) for one to stream."""
        name = source_name(x, index)
        if isinstance(x, np.ndarray):
            wave = from_array(x, sample_rate, self.sample_rate, name)
        else:
            info = probe(x)
            expected = info.frames * self.sample_rate / info.sample_rate
            if expected > self.long_threshold:
                return None, expected / self.sample_rate
            wave = read_audio(x, self.sample_rate)
        if len(wave) < self.info.min_samples:
            raise AudioError(name, f"too short: {len(wave)} samples at {self.sample_rate} Hz; the model needs at "
                                   f"least {self.info.min_samples} ({1000 * self.info.min_samples / self.sample_rate:.0f} ms)")
        return wave, len(wave) / self.sample_rate

    def run(self, inputs: Sequence[Source], *, sample_rate: int = 16000, beam: int = 1, lm: NGramLM | None = None,
            lm_weight: float = 0.5, word_bonus: float = 0.0, max_pending_seconds: float = 600.0) -> list[Result]:
        """Transcribe every input; a bad input gives a :class:`Result` with ``error`` and the others
        still come out. Short inputs are read ``max_pending_seconds`` of audio at a time, batched by
        length; long files stream.

        Args:
            inputs: file paths, or arrays ((T,) or (T, C)) at ``sample_rate``.
        """
        results = [Result(source_name(x, i)) for i, x in enumerate(inputs)]
        pending: list[tuple[int, np.ndarray]] = []
        pending_samples = 0

        def flush() -> None:
            nonlocal pending, pending_samples
            for (i, _), lp in zip(pending, self.log_probs([w for _, w in pending])):
                results[i].hypothesis = self.decode(lp, beam=beam, lm=lm, lm_weight=lm_weight, word_bonus=word_bonus)
            pending, pending_samples = [], 0

        for i, x in enumerate(inputs):
            try:
                wave, results[i].duration = self._load(x, i, sample_rate)
                if wave is None:  # a long file: stream it
                    lp = self.log_probs_stream(stream_audio(x, self.sample_rate, block_seconds=self.chunk / self.sample_rate))  # type: ignore[arg-type]
                    results[i].hypothesis = self.decode(lp, beam=beam, lm=lm, lm_weight=lm_weight, word_bonus=word_bonus)
                    continue
                pending.append((i, wave))
                pending_samples += len(wave)
            except AudioError as e:
                results[i].error = str(e)
                continue
            if pending_samples >= max_pending_seconds * self.sample_rate:
                flush()
        flush()
        return results

    def transcribe(self, inputs: Sequence[Source], *, sample_rate: int = 16000, beam: int = 1,
                   lm: NGramLM | None = None, lm_weight: float = 0.5, word_bonus: float = 0.0) -> list[Hypothesis]:
        """Transcripts (text, token ids, score, word times in seconds) of files or arrays at
        ``sample_rate``, in input order. Raises :class:`AudioError` naming the first bad input
        (use :meth:`run` to get the others anyway)."""
        results = self.run(inputs, sample_rate=sample_rate, beam=beam, lm=lm, lm_weight=lm_weight,
                           word_bonus=word_bonus)
        for r in results:
            if r.error is not None:
                raise AudioError(r.source, r.error.removeprefix(f"{r.source}: "))
        return [r.hypothesis for r in results]  # type: ignore[misc]


class OnlineStream:
    """Streaming recognition: push audio as it arrives, read the transcript so far, finish at the end.

    Built by :meth:`OfflineRecognizer.stream`. Audio goes through the recognizer's overlapping
    windows (:class:`Windows`): a ``chunk_seconds`` piece is recognised once ``context_seconds`` of
    audio after it has arrived, so text lags the audio by at most chunk + context (see
    :attr:`latency`; e.g. ``from_dir(..., chunk_seconds=2, context_seconds=1)`` for 3 s). The
    frames, and so :meth:`finish`'s result, are exactly those of transcribing the whole input with
    the same recognizer; :attr:`partial` (greedy) only ever grows: its token ids are a prefix of
    the final greedy ones. Memory is bounded by one window plus the (F, V) log-probs so far.

    Args:
        recognizer: the model and its window settings.
        sample_rate: rate of the pushed audio; other than the model's, it is resampled as it
            streams (soxr).
    """

    def __init__(self, recognizer: OfflineRecognizer, *, sample_rate: int) -> None:
        if sample_rate <= 0:
            raise ValueError(f"invalid sample rate {sample_rate}")
        self.recognizer = recognizer
        self.windows = Windows(recognizer)
        self.resampler = (None if sample_rate == recognizer.sample_rate
                          else stream_resampler("<stream>", sample_rate, recognizer.sample_rate))
        self.pieces: list[np.ndarray] = []
        self.samples = 0
        """Samples received so far (at the model's rate)."""
        self.finished = False

    @property
    def latency(self) -> float:
        """Most seconds between a sample arriving and its frames being recognised."""
        r = self.recognizer
        return (r.chunk + r.context) / r.sample_rate

    def accept_waveform(self, samples: np.ndarray) -> int:
        """Push (n,) or (n, channels) samples (float, or integer PCM) at the stream's rate; returns how
        many new output frames they completed."""
        if self.finished:
            raise RuntimeError("the stream is finished")
        wave = mono(np.asarray(samples))
        if wave.size and not np.isfinite(wave).all():
            raise AudioError("<stream>", "contains NaN or infinite samples")
        if self.resampler is not None:
            wave = np.ascontiguousarray(self.resampler.resample_chunk(wave), dtype=np.float32)
        self.samples += wave.size
        new = self.windows.push(wave)
        self.pieces += new
        return sum(len(p) for p in new)

    def log_probs(self) -> np.ndarray:
        """(F, V) log-probabilities of the frames recognised so far."""
        if not self.pieces:
            return np.zeros((0, len(self.recognizer.vocab)), np.float32)
        if len(self.pieces) > 1:
            self.pieces = [np.concatenate(self.pieces)]
        return self.pieces[0]

    @property
    def partial(self) -> Hypothesis:
        """Greedy transcript of the frames recognised so far (word times in seconds from the start)."""
        return self.recognizer.decode(self.log_probs())

    def finish(self, *, beam: int = 1, lm: NGramLM | None = None, lm_weight: float = 0.5,
               word_bonus: float = 0.0) -> Hypothesis:
        """End of input: recognise the audio still held and decode everything (greedy, or prefix beam
        search with an optional LM). Raises :class:`AudioError` if the stream held too little audio
        for one frame."""
        if not self.finished:
            if self.resampler is not None:
                tail = np.ascontiguousarray(self.resampler.resample_chunk(np.zeros(0, np.float32), last=True),
                                            dtype=np.float32)
                self.samples += tail.size
                self.pieces += self.windows.push(tail)
            self.pieces += self.windows.finish()
            self.finished = True
        if not self.pieces:
            raise AudioError("<stream>", f"too short: {self.samples} samples at {self.recognizer.sample_rate} Hz; "
                                         f"the model needs at least {self.recognizer.info.min_samples}")
        return self.recognizer.decode(self.log_probs(), beam=beam, lm=lm, lm_weight=lm_weight, word_bonus=word_bonus)
