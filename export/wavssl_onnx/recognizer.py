"""Offline speech recognition with an exported CTC model on ONNX Runtime (no PyTorch).

``OfflineRecognizer.from_dir(MODEL_DIR)`` loads a model directory written by ``wavssl export``;
``transcribe(paths_or_arrays)`` returns a :class:`~wavssl_onnx.decoding.Hypothesis` (text, token ids,
score, word times in seconds) per input.

- Inputs: anything libsndfile reads, or arrays; downmixed to mono and resampled with soxr.
- Short inputs (up to ``chunk_seconds + 2 * context_seconds``) are batched by length: sorted,
  zero-padded under a ``max_batch_seconds`` budget (the graph masks the padding; a model with an
  utterance-wide GroupNorm front end sees the padding in that norm's statistics, as in PyTorch, so
  sorting keeps it small).
- Long inputs stream through overlapping windows (:class:`wavssl_onnx.streaming.Windows`): each
  ``chunk_seconds`` piece is run with up to ``context_seconds`` of audio on each side, whose frames
  are discarded, and the kept frames are concatenated on the global frame grid (window starts are
  whole frames), so word times need no offsetting and memory stays bounded whatever the file
  length. Each window is one utterance to the model (standardised on its own when the model does that).
- A streaming model (``wavssl export --streaming``) runs every input chunk by chunk
  (:class:`wavssl_onnx.streaming.ChunkEngine`), which gives its offline result.
- :class:`OnlineRecognizer` recognises audio as it arrives (either kind of model).
- Decoding: greedy, or prefix beam search with an optional n-gram LM, over the whole input.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .audio import AudioError, Source, array_blocks, check_log_probs, from_array, probe, read_audio, source_name, stream_audio
from .batching import group_by_budget, pad_stack
from .decoding import Decoding, Greedy, Hypothesis
from .model_dir import ModelInfo, frontend_file
from .session import load_session, open_model
from .streaming import ChunkEngine, Engine, StreamGeometry, StreamingDecoder, Windows
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
                "words": [w.to_dict() for w in self.hypothesis.words]}


class OrtFrontend:
    """A streaming model's front-end graph: (T,) float32 window -> (F, E) projected frames."""

    def __init__(self, session: Any, geometry: StreamGeometry) -> None:
        self.session, self.names = session, geometry.frontend_inputs

    def __call__(self, window: np.ndarray) -> np.ndarray:
        frames: np.ndarray
        frames, lengths = self.session.run(None, {self.names[0]: np.ascontiguousarray(window[None], np.float32),
                                                  self.names[1]: np.array([len(window)], np.int64)})
        return frames[0, : int(lengths[0])]


class OrtStep:
    """A streaming model's step graph as a :data:`wavssl_onnx.streaming.StepFn`."""

    def __init__(self, session: Any, info: ModelInfo) -> None:
        assert info.streaming is not None
        self.session, self.frames_name = session, info.inputs[0]
        self.states = info.streaming.states
        self.outputs = [info.outputs[0], *(s.output for s in self.states)]

    def __call__(self, frames: np.ndarray, states: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        out = self.session.run(self.outputs, {self.frames_name: frames, **states})
        return out[0], {s.name: o for s, o in zip(self.states, out[1:])}


class OfflineRecognizer:
    """A CTC recognizer on ONNX Runtime. Build it with :meth:`from_dir`."""

    def __init__(self, info: ModelInfo, session: Any, *, chunk_seconds: float = 30.0, context_seconds: float = 4.0,
                 max_batch_seconds: float = 60.0, max_batch_size: int = 8, frontend: Any = None,
                 decoding: Decoding = Greedy()) -> None:
        if info.vocabulary is None:
            raise ValueError("a recognizer needs a vocabulary")
        if chunk_seconds <= 0 or context_seconds < 0 or max_batch_seconds <= 0 or max_batch_size < 1:
            raise ValueError("chunk_seconds, max_batch_seconds and max_batch_size must be positive, "
                             "context_seconds >= 0")
        if (info.streaming is None) != (frontend is None):
            raise ValueError("a streaming model needs its front-end session (and only a streaming model has one)")
        self.info, self.session = info, session
        self.vocab: Vocabulary = info.vocabulary
        self.streaming = info.streaming
        """Chunk geometry of a streaming model (``wavssl export --streaming``); None for an offline one."""
        self.frontend = None if frontend is None or info.streaming is None else OrtFrontend(frontend, info.streaming)
        hop, rate = info.frame_shift_samples, info.sample_rate
        self.chunk = max(1, round(chunk_seconds * rate / hop)) * hop
        """Samples kept per long-audio window (whole frames; offline models)."""
        self.context = max(math.ceil(max(info.min_samples - hop, 0) / hop), round(context_seconds * rate / hop)) * hop
        """Samples of left/right context per window (at least what a frame's receptive field needs)."""
        self.max_batch_samples = int(max_batch_seconds * rate)
        self.max_batch_size = max_batch_size
        self.decoding = decoding
        """How log-probabilities become text (:class:`~wavssl_onnx.decoding.Greedy` or
        :class:`~wavssl_onnx.decoding.BeamSearch`); a call may pass another one."""

    @classmethod
    def from_dir(cls, model_dir: str | os.PathLike[str], *, threads: int | None = None, int8: bool = False,
                 spin: bool = False, chunk_seconds: float = 30.0, context_seconds: float = 4.0,
                 max_batch_seconds: float = 60.0, max_batch_size: int = 8,
                 decoding: Decoding = Greedy()) -> OfflineRecognizer:
        """Load an exported recognizer.

        Args:
            model_dir: directory written by ``wavssl export``.
            threads: intra-op threads (None: ONNX Runtime's default, one per physical core).
            int8: run ``model.int8.onnx`` instead of ``model.onnx`` (and a streaming model's
                ``frontend.int8.onnx`` where it has one).
            spin: busy-waiting worker threads (see :func:`wavssl_onnx.session.session_options`).
            chunk_seconds, context_seconds: long-audio windows (see the module docstring).
            max_batch_seconds, max_batch_size: padded-batch budget for short inputs.
            decoding: ``Greedy()`` (default) or ``BeamSearch(beam, lm, lm_weight, word_bonus)``.

        A streaming model (``wavssl export --streaming``) runs chunk by chunk for every input, with
        the same result as its offline forward; the window and batch settings do not apply to it.

        Raises:
            ModelDirError: the directory is invalid, incomplete or from a newer format; names the file.
        """
        info, session, _ = open_model(model_dir, "ctc", threads=threads, int8=int8, spin=spin)
        frontend = None if info.streaming is None else load_session(frontend_file(model_dir, info, int8), threads, spin)
        return cls(info, session, chunk_seconds=chunk_seconds, context_seconds=context_seconds,
                   max_batch_seconds=max_batch_seconds, max_batch_size=max_batch_size, frontend=frontend,
                   decoding=decoding)

    @property
    def sample_rate(self) -> int:
        return self.info.sample_rate

    @property
    def frame_shift(self) -> float:
        """Seconds between output frames."""
        return self.info.frame_shift

    @property
    def long_threshold(self) -> int:
        """Inputs longer than this many samples stream (overlapping windows; every input of a
        streaming model)."""
        return 0 if self.streaming is not None else self.chunk + 2 * self.context

    @property
    def latency(self) -> float:
        """Streaming: most seconds between a sample arriving and its frames being recognised."""
        if self.streaming is not None:
            return self.streaming.latency_samples / self.sample_rate
        return (self.chunk + self.context) / self.sample_rate

    def new_engine(self) -> Engine:
        """A fresh engine for one stream: chunk by chunk for a streaming model, else overlapping
        windows of ``chunk_seconds`` with ``context_seconds`` each side."""
        if self.streaming is not None:
            assert self.frontend is not None
            return ChunkEngine(self.frontend, OrtStep(self.session, self.info), self.streaming, self.info.min_samples)
        return Windows(lambda w: self.forward([w])[0], hop=self.info.frame_shift_samples, chunk=self.chunk,
                       left=self.context, right=self.context, min_samples=self.info.min_samples)

    # ------------------------------------------------------------------------------ inference

    def forward(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One padded batch: (T_i,) float32 waveforms at the model's rate -> (F_i, V) log-probs each
        (offline models)."""
        if self.streaming is not None:
            raise ValueError("a streaming model runs chunk by chunk: use log_probs or log_probs_stream")
        batch, lengths = pad_stack(waves)
        log_probs, frames = self.session.run(None, {self.info.inputs[0]: batch, self.info.inputs[1]: lengths})
        return [log_probs[i, : int(n)] for i, n in enumerate(frames)]

    def log_probs(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        """(F_i, V) float32 log-probabilities of (T_i,) waveforms at the model's rate, in input
        order (short ones batched by length, long ones in overlapping windows)."""
        out: list[np.ndarray] = [np.zeros((0, len(self.vocab)), np.float32)] * len(waves)
        short = [i for i, w in enumerate(waves) if len(w) <= self.long_threshold]
        lengths = [len(waves[i]) for i in short]  # batched by length, each within the sample budget
        for group in group_by_budget(np.argsort(lengths, kind="stable"), lengths, self.max_batch_samples,
                                     self.max_batch_size):
            for j, lp in zip(group, self.forward([waves[short[j]] for j in group])):
                out[short[j]] = lp
        for i, w in enumerate(waves):
            if len(w) > self.long_threshold:
                out[i] = self.log_probs_stream(array_blocks(w, self.chunk))
        return out

    def log_probs_stream(self, blocks: Iterable[np.ndarray]) -> np.ndarray:
        """(F, V) log-probabilities of audio arriving in blocks (:meth:`new_engine`)."""
        engine = self.new_engine()
        pieces = [piece for block in blocks for piece in engine.push(block)]
        pieces += engine.finish()
        if not pieces:
            return np.zeros((0, len(self.vocab)), np.float32)
        return np.concatenate(pieces)

    # ------------------------------------------------------------------------------ decoding

    def decode(self, log_probs: np.ndarray, decoding: Decoding | None = None) -> Hypothesis:
        """Best hypothesis of (F, V) log-probs by ``decoding`` (default: the recognizer's)."""
        return (decoding or self.decoding).decode(log_probs, self.vocab, frame_shift=self.frame_shift)

    def _decode_checked(self, log_probs: np.ndarray, source: str, decoding: Decoding | None) -> Hypothesis:
        """:meth:`decode` of output that :func:`~wavssl_onnx.audio.check_log_probs` accepts."""
        return self.decode(check_log_probs(log_probs, source), decoding)

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

    def run(self, inputs: Sequence[Source], *, sample_rate: int = 16000, decoding: Decoding | None = None,
            max_pending_seconds: float = 600.0) -> list[Result]:
        """Transcribe every input; a bad input gives a :class:`Result` with ``error`` and the others
        still come out. Short inputs are read ``max_pending_seconds`` of audio at a time, batched by
        length; long files stream.

        Args:
            inputs: file paths, or arrays ((T,) or (T, C)) at ``sample_rate``.
            decoding: overrides the recognizer's :attr:`decoding` for this call.
        """
        results = [Result(source_name(x, i)) for i, x in enumerate(inputs)]
        pending: list[tuple[int, np.ndarray]] = []
        pending_samples = 0

        def flush() -> None:
            nonlocal pending, pending_samples
            for (i, _), lp in zip(pending, self.log_probs([w for _, w in pending])):
                try:
                    results[i].hypothesis = self._decode_checked(lp, results[i].source, decoding)
                except AudioError as e:
                    results[i].error = str(e)
            pending, pending_samples = [], 0

        for i, x in enumerate(inputs):
            try:
                wave, results[i].duration = self._load(x, i, sample_rate)
                if wave is None:  # a long file: stream it
                    assert not isinstance(x, np.ndarray)  # only files are streamed
                    lp = self.log_probs_stream(stream_audio(x, self.sample_rate, block_seconds=self.chunk / self.sample_rate))
                    results[i].hypothesis = self._decode_checked(lp, results[i].source, decoding)
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

    def transcribe(self, inputs: Sequence[Source], *, sample_rate: int = 16000,
                   decoding: Decoding | None = None) -> list[Hypothesis]:
        """Transcripts (text, token ids, score, word times in seconds) of files or arrays at
        ``sample_rate``, in input order. Raises :class:`AudioError` naming the first bad input
        (use :meth:`run` to get the others anyway)."""
        hyps = []
        for r in self.run(inputs, sample_rate=sample_rate, decoding=decoding):
            if r.error is not None:
                raise AudioError(r.source, r.error.removeprefix(f"{r.source}: "))
            assert r.hypothesis is not None  # no error: a hypothesis
            hyps.append(r.hypothesis)
        return hyps


class OnlineRecognizer(StreamingDecoder):
    """Streaming recognition with the API of :mod:`wavssl_onnx.streaming` (``create_stream``,
    ``stream.accept_waveform(sample_rate, samples)``, ``decode(stream)``, ``stream.input_finished()``).

    A streaming model (``wavssl export --streaming``) runs chunk by chunk: every frame once, text
    lagging by one attention chunk plus the model's look-ahead (:attr:`latency`, e.g. 0.65 s). An
    offline model runs in overlapping windows (``chunk_seconds`` recognised once ``context_seconds``
    more audio has arrived: text lags by chunk + context, and each window's context is recomputed).
    Either way the frames, and so the final result, are those of transcribing the whole input with
    the same recognizer, and greedy partial results only grow.
    """

    def __init__(self, recognizer: OfflineRecognizer) -> None:
        super().__init__(recognizer.new_engine, recognizer.vocab, sample_rate=recognizer.sample_rate,
                         frame_shift=recognizer.frame_shift, latency=recognizer.latency, decoding=recognizer.decoding)
        self.recognizer = recognizer
        self.info = recognizer.info

    @classmethod
    def from_dir(cls, model_dir: str | os.PathLike[str], *, threads: int | None = None, int8: bool = False,
                 spin: bool = False, chunk_seconds: float = 2.0, context_seconds: float = 1.0,
                 decoding: Decoding = Greedy()) -> OnlineRecognizer:
        """Load an exported recognizer (arguments as :meth:`OfflineRecognizer.from_dir`; the window
        settings apply to offline models only; ``decoding`` makes each stream's final result)."""
        return cls(OfflineRecognizer.from_dir(model_dir, threads=threads, int8=int8, spin=spin,
                                              chunk_seconds=chunk_seconds, context_seconds=context_seconds,
                                              decoding=decoding))
