"""Streaming recognition: audio pushed as it arrives, transcripts read while it does (numpy only).

The API is the same for every model and in PyTorch (``wavssl.streaming.StreamingRecognizer``)::

    stream = recognizer.create_stream()
    stream.accept_waveform(sample_rate, samples)   # any number of times
    recognizer.decode(stream)                      # -> Hypothesis: the transcript so far
    stream.input_finished()
    recognizer.decode(stream)                      # -> the final Hypothesis, with word times

Two engines turn audio into (F, V) log-probabilities piece by piece:

- :class:`Windows` over an offline model: each ``chunk`` of samples is run with ``left`` and
  ``right`` samples of context whose frames are dropped; window starts are whole frames, so the kept
  frames concatenate into the frame grid of the whole input. Text lags by chunk + right context.
- :class:`ChunkEngine` over a model exported with ``wavssl export --streaming`` (chunked
  attention): a stateless front-end graph makes exact frames through :class:`Windows`, and a step
  graph runs one attention chunk of C frames (plus the positional conv's R look-ahead frames) with
  explicit state in and out (:class:`StreamGeometry`). Each frame is computed once; text lags by
  (C + R) frames plus the front end's right context (:attr:`StreamGeometry.latency_samples`).

Both give exactly the log-probabilities of the model's offline forward on the whole input (float
rounding aside), so the final greedy transcript equals the offline one.

A live source with pauses (a microphone left open) is cut into utterances by endpointing::

    if recognizer.is_endpoint(stream):             # EndpointRules: trailing silence, utterance length
        emit(recognizer.decode(stream))            # this utterance's text (word times from the stream start)
        recognizer.reset(stream)                   # the next decode starts a new utterance
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .audio import AudioError, mono, stream_resampler
from .decoding import Decoding, Greedy, Hypothesis, greedy_from_best, shift_times
from .vocab import Vocabulary

FrameFn = Callable[[np.ndarray], np.ndarray]
"""(T,) float32 samples -> (F, D) frames of that window."""
StepFn = Callable[[np.ndarray, dict[str, np.ndarray]], tuple[np.ndarray, dict[str, np.ndarray]]]
"""((1, n + R, E) frames, states) -> ((1, n, V) log-probs, new states)."""


class Engine(Protocol):
    """Audio in, log-probability frames out, in order."""

    def push(self, block: np.ndarray) -> list[np.ndarray]:
        """Add (n,) samples at the model's rate; returns the (F_k, V) pieces they completed."""

    def finish(self) -> list[np.ndarray]:
        """End of input: the remaining pieces."""


class Windows:
    """Exact frames of audio that arrives in pieces, window by window.

    Window k keeps the samples [k * chunk, (k + 1) * chunk) (shifted by ``first - chunk`` after the
    first window, which keeps ``first`` samples) and sees up to ``left`` samples before and ``right``
    after them; its frames outside the kept part are dropped. Frame f of a window
    starting at sample s is global frame s / hop + f (s is a whole number of frames), so the kept
    pieces concatenate into the frame grid of the whole input. Memory: at most left + chunk + right
    samples are held.

    Args:
        run: (T,) window -> (F, D) frames of it.
        hop: samples per frame; ``chunk``, ``first`` and ``left`` are multiples of it.
        min_samples: shortest window ``run`` accepts.
        first: samples kept by the first window (default ``chunk``).
    """

    def __init__(self, run: FrameFn, *, hop: int, chunk: int, left: int, right: int, min_samples: int,
                 first: int | None = None) -> None:
        first = chunk if first is None else first
        if min(chunk, first) <= 0 or chunk % hop or first % hop or left % hop or left < 0 or right < 0:
            raise ValueError(f"windows need chunk > 0 and left as whole frames of {hop} samples, right >= 0 "
                             f"(got chunk {chunk}, first {first}, left {left}, right {right})")
        self.run, self.hop, self.chunk, self.left, self.right = run, hop, chunk, left, right
        self.first = first
        self.min_samples = min_samples
        self.buffer = np.zeros(0, np.float32)
        self.buffer_start = 0
        """Global index of ``buffer[0]``."""
        self.keep_from = 0
        """First sample whose frames are not out yet."""
        self.emitted = False

    def push(self, block: np.ndarray) -> list[np.ndarray]:
        """Add samples; returns the (chunk / hop, D) frames of every window completed by them."""
        self.buffer = np.concatenate([self.buffer, np.asarray(block, dtype=np.float32).reshape(-1)])
        out = []
        while self.buffer_start + len(self.buffer) >= self.keep_from + (size := self._size()) + self.right:
            start = max(0, self.keep_from - self.left)
            window = self.buffer[start - self.buffer_start: self.keep_from + size + self.right - self.buffer_start]
            first = (self.keep_from - start) // self.hop
            out.append(self.run(window)[first: first + size // self.hop])
            self.keep_from += size
            drop = max(0, self.keep_from - self.left) - self.buffer_start
            self.buffer, self.buffer_start = self.buffer[drop:], self.buffer_start + drop
        self.emitted |= bool(out)
        return out

    def _size(self) -> int:
        return self.first if self.keep_from == 0 else self.chunk

    def finish(self) -> list[np.ndarray]:
        """The frames after the last full window (no right context), if the audio left makes any."""
        end = self.buffer_start + len(self.buffer)
        if end <= self.keep_from and self.emitted:
            return []
        start = max(0, self.keep_from - self.left)
        window = self.buffer[start - self.buffer_start:]
        first = (self.keep_from - start) // self.hop
        self.keep_from = end
        if len(window) < self.min_samples:
            return []
        return [self.run(window)[first:]]


@dataclass(frozen=True)
class EndpointRules:
    """When a live stream's utterance is over, read from the greedy path: frames whose most likely
    token is the CTC blank are silence. An endpoint is reached when any rule holds (the defaults are
    the usual ones of live recognizers, e.g. Kaldi's and sherpa-onnx's):

    - ``silence_without_text`` seconds of trailing silence and nothing recognised in the utterance;
    - ``silence_after_text`` seconds of trailing silence after some text;
    - the utterance lasting ``max_utterance`` seconds (0: no limit).
    """

    silence_without_text: float = 2.4
    silence_after_text: float = 1.2
    max_utterance: float = 20.0

    def __post_init__(self) -> None:
        if min(self.silence_without_text, self.silence_after_text, self.max_utterance) < 0:
            raise ValueError(f"endpoint rules must be >= 0 seconds, got {self}")

    def reached(self, duration: float, trailing_silence: float, has_text: bool) -> bool:
        """Whether an utterance of ``duration`` seconds ending in ``trailing_silence`` seconds of
        silence (``has_text``: something was recognised) is over."""
        if self.max_utterance and duration >= self.max_utterance:
            return True
        return trailing_silence >= (self.silence_after_text if has_text else self.silence_without_text)


@dataclass(frozen=True)
class StateSpec:
    """One state tensor of a streaming step graph: fed as ``name``, returned as ``output``."""

    name: str
    output: str
    shape: list[int]
    """Shape without the leading batch axis."""
    dtype: str
    """``float32`` or ``int64``."""

    def initial(self, batch: int = 1) -> np.ndarray:
        """The state before the first chunk: zeros of (batch, *shape)."""
        return np.zeros([batch, *self.shape], dtype=self.dtype)


@dataclass(frozen=True)
class StreamGeometry:
    """How a streaming model is fed (the ``streaming`` object of ``wavssl.json``)."""

    chunk_frames: int
    """C: frames per attention chunk, the step graph's unit of work."""
    left_chunks: int
    """L: chunks of left context each chunk attends to (cached)."""
    lookahead_frames: int
    """R: frames after a chunk that the positional conv reads (fed after the chunk's frames)."""
    frame_shift_samples: int
    left_samples: int
    """Input samples before a frame's own span that its front-end frame depends on (whole frames)."""
    right_samples: int
    """Input samples after a frame's own span that its front-end frame depends on."""
    frame_dim: int
    """E: width of the projected frames between the two graphs."""
    states: list[StateSpec] = field(default_factory=list)
    frontend_inputs: list[str] = field(default_factory=lambda: ["waveform", "lengths"])
    frontend_outputs: list[str] = field(default_factory=lambda: ["frames", "frame_lengths"])

    @property
    def latency_samples(self) -> int:
        """Most samples between one arriving and its frame's log-probabilities (chunk + look-ahead +
        front-end right context)."""
        return (self.chunk_frames + self.lookahead_frames) * self.frame_shift_samples + self.right_samples

    def initial_states(self) -> dict[str, np.ndarray]:
        return {s.name: s.initial() for s in self.states}

    def to_dict(self) -> dict[str, Any]:
        return {"chunk_frames": self.chunk_frames, "left_chunks": self.left_chunks,
                "lookahead_frames": self.lookahead_frames, "frame_shift_samples": self.frame_shift_samples,
                "left_samples": self.left_samples, "right_samples": self.right_samples, "frame_dim": self.frame_dim,
                "states": [{"name": s.name, "output": s.output, "shape": list(s.shape), "dtype": s.dtype}
                           for s in self.states],
                "frontend_inputs": list(self.frontend_inputs), "frontend_outputs": list(self.frontend_outputs)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamGeometry:
        """Raises KeyError / TypeError / ValueError on malformed content."""
        states = [StateSpec(str(s["name"]), str(s["output"]), [int(d) for d in s["shape"]], str(s["dtype"]))
                  for s in data["states"]]
        geometry = cls(int(data["chunk_frames"]), int(data["left_chunks"]), int(data["lookahead_frames"]),
                       int(data["frame_shift_samples"]), int(data["left_samples"]), int(data["right_samples"]),
                       int(data["frame_dim"]), states, [str(x) for x in data["frontend_inputs"]],
                       [str(x) for x in data["frontend_outputs"]])
        if geometry.chunk_frames < 1 or geometry.lookahead_frames < 0 or geometry.frame_shift_samples < 1 \
                or geometry.left_samples % geometry.frame_shift_samples or any(s.dtype not in ("float32", "int64")
                                                                               for s in states):
            raise ValueError("invalid streaming geometry")
        return geometry


class ChunkEngine:
    """Chunk-by-chunk inference of a streaming model (see the module docstring).

    Args:
        frontend: (T,) window -> (F, E) projected frames.
        step: one chunk with state (:data:`StepFn`).
        geometry: the model's chunk geometry and state tensors.
        min_samples: shortest input that gives a frame.
    """

    def __init__(self, frontend: FrameFn, step: StepFn, geometry: StreamGeometry, min_samples: int) -> None:
        g = geometry
        self.step, self.geometry = step, g
        hop = g.frame_shift_samples
        self.windows = Windows(frontend, hop=hop, chunk=g.chunk_frames * hop, left=g.left_samples, right=g.right_samples,
                               min_samples=min_samples, first=(g.chunk_frames + g.lookahead_frames) * hop)
        self.frames = np.zeros((0, g.frame_dim), np.float32)
        """Projected frames not yet run (the next chunk and its look-ahead)."""
        self.states = g.initial_states()

    def _run(self, n: int) -> np.ndarray:
        """Step over the next n frames (with R look-ahead frames, zeros past the end) -> (n, V)."""
        log_probs, self.states = self.step(self.take(n)[None], self.states)
        first: np.ndarray = log_probs[0]
        return first

    def take(self, n: int) -> np.ndarray:
        """The next n frames and their R look-ahead frames (zeros past the end), (n + R, E); drops n."""
        r = self.geometry.lookahead_frames
        x = self.frames[: n + r]
        if len(x) < n + r:
            x = np.concatenate([x, np.zeros((n + r - len(x), x.shape[1]), np.float32)])
        self.frames = self.frames[n:]
        return np.ascontiguousarray(x)

    def _add(self, pieces: list[np.ndarray]) -> None:
        if pieces:
            self.frames = np.concatenate([self.frames, *pieces])

    def feed(self, block: np.ndarray) -> None:
        """Add samples: front-end frames only (:meth:`ready` says when a chunk can run)."""
        self._add(self.windows.push(block))

    def ready(self) -> bool:
        """A whole chunk and its look-ahead are waiting."""
        return len(self.frames) >= self.geometry.chunk_frames + self.geometry.lookahead_frames

    def push(self, block: np.ndarray) -> list[np.ndarray]:
        self.feed(block)
        out = []
        while self.ready():
            out.append(self._run(self.geometry.chunk_frames))
        return out

    def finish(self) -> list[np.ndarray]:
        self._add(self.windows.finish())
        out = []
        while len(self.frames):
            out.append(self._run(min(self.geometry.chunk_frames, len(self.frames))))
        return out


def step_together(engines: Sequence[ChunkEngine]) -> list[np.ndarray]:
    """One chunk of each ready engine (same model) as one batched step: the weights are read once
    for all of them, which is what bounds a small chunk's speed. Returns each engine's (C, V) log-probs."""
    c = engines[0].geometry.chunk_frames
    x = np.stack([e.take(c) for e in engines])
    states = {k: np.concatenate([e.states[k] for e in engines]) for k in engines[0].states}
    log_probs, new = engines[0].step(x, states)
    for i, e in enumerate(engines):
        e.states = {k: v[i: i + 1] for k, v in new.items()}
    return [log_probs[i] for i in range(len(engines))]


class Stream:
    """One audio stream (built by a recognizer's ``create_stream``): it buffers what
    :meth:`accept_waveform` gets; the recognizer's ``decode`` runs the model on it."""

    def __init__(self, engine: Engine, model_rate: int) -> None:
        self.engine, self.model_rate = engine, model_rate
        self.rate: int | None = None
        self.resampler: Any = None
        self.pending: list[np.ndarray] = []
        self.pieces: list[np.ndarray] = []
        self.best: list[np.ndarray] = []
        """Each frame's most likely token, piece by piece (the greedy partial result)."""
        self.score = 0.0
        """Sum of those tokens' log-probabilities."""
        self.samples = 0
        """Samples received so far (at the model's rate)."""
        self.offset = 0
        """Frames of the utterances before the current one (``reset`` after an endpoint)."""
        self.carry = -1
        """The token the last utterance ended on, when it ended inside that token (-1: none)."""
        self.skip = 0
        """Leading frames of the current utterance that still continue ``carry``: an utterance closed
        mid-token (by its length limit) already emitted that token, so the next must not again."""
        self.finished = False
        """:meth:`input_finished` was called."""
        self.flushed = False
        """The engine has run to the end of the input."""

    def accept_waveform(self, sample_rate: int, samples: np.ndarray) -> None:
        """Queue (n,) or (n, channels) samples (float, or integer PCM) at ``sample_rate`` (resampled to
        the model's rate as they stream; every call of a stream must use the same rate)."""
        if self.finished:
            raise RuntimeError("input_finished() was called on this stream")
        if self.rate is None:
            if sample_rate <= 0:
                raise ValueError(f"invalid sample rate {sample_rate}")
            self.rate = int(sample_rate)
            if self.rate != self.model_rate:
                self.resampler = stream_resampler("<stream>", self.rate, self.model_rate)
        elif sample_rate != self.rate:
            raise ValueError(f"this stream's audio is at {self.rate} Hz; got a block at {sample_rate} Hz")
        wave = mono(np.asarray(samples))
        if wave.size and not np.isfinite(wave).all():
            raise AudioError("<stream>", "contains NaN or infinite samples")
        if self.resampler is not None:
            wave = np.ascontiguousarray(self.resampler.resample_chunk(wave), dtype=np.float32)
        self.samples += wave.size
        self.pending.append(wave)

    def input_finished(self) -> None:
        """No more audio: the next ``decode`` runs the model to the end and returns the final result."""
        if not self.finished and self.resampler is not None:
            tail = self.resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            tail = np.ascontiguousarray(tail, dtype=np.float32)
            self.samples += tail.size
            self.pending.append(tail)
        self.finished = True

    def take_pending(self) -> np.ndarray:
        """The queued audio (at least one block), as one block; the queue is emptied."""
        block = np.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]
        self.pending = []
        return block

    def run(self) -> int:
        """Run the engine on the queued audio (to the end once finished); returns new frames."""
        new: list[np.ndarray] = []
        if self.pending:
            new += self.engine.push(self.take_pending())
        if self.finished and not self.flushed:
            new += self.engine.finish()
            self.flushed = True
        return self.add(new)

    def add(self, new: list[np.ndarray]) -> int:
        """Record recognised (F_k, V) pieces; returns their frame count."""
        for piece in new:
            best = piece.argmax(axis=1)
            if self.carry >= 0:
                other = np.flatnonzero(best != self.carry)
                self.skip += int(other[0]) if other.size else len(best)
                if other.size:
                    self.carry = -1
            self.best.append(best)
            self.score += float(piece[np.arange(len(piece)), best].astype(np.float64).sum())
        self.pieces += new
        return sum(len(p) for p in new)

    def new_utterance(self, blank_id: int) -> None:
        """Drop the frames recognised so far (a finished utterance); audio and model state go on. If
        the utterance ended on a token (not ``blank_id``), frames that go on with it are not the next
        utterance's (one CTC token spans them all, as decoding the whole stream at once would say)."""
        best = self.best_tokens()
        if len(best) > self.skip:
            self.carry = int(best[-1]) if best[-1] != blank_id else -1
        self.offset += len(best)
        self.best, self.pieces, self.score, self.skip = [], [], 0.0, 0

    def best_tokens(self) -> np.ndarray:
        """(F,) most likely token of every frame recognised so far."""
        if len(self.best) != 1:
            self.best = [np.concatenate(self.best) if self.best else np.zeros(0, np.int64)]
        return self.best[0]

    def log_probs(self, vocab_size: int) -> np.ndarray:
        """(F, V) log-probabilities of the frames recognised so far."""
        if not self.pieces:
            return np.zeros((0, vocab_size), np.float32)
        if len(self.pieces) > 1:
            self.pieces = [np.concatenate(self.pieces)]
        return self.pieces[0]


class StreamingDecoder:
    """``create_stream`` and ``decode`` over an engine factory (the streaming half of a recognizer).

    Args:
        new_engine: makes a fresh engine per stream.
        vocab: the CTC vocabulary. sample_rate: the model's rate. frame_shift: seconds per frame.
        latency: most seconds between a sample arriving and its frames being recognised.
        decoding: what makes a finished stream's final result (partial results are greedy).
    """

    def __init__(self, new_engine: Callable[[], Engine], vocab: Vocabulary, *, sample_rate: int,
                 frame_shift: float, latency: float, decoding: Decoding = Greedy()) -> None:
        self.new_engine, self.vocab, self.decoding = new_engine, vocab, decoding
        self.sample_rate, self.frame_shift, self.latency = sample_rate, frame_shift, latency

    def create_stream(self) -> Stream:
        """A new stream (see :class:`Stream`)."""
        return Stream(self.new_engine(), self.sample_rate)

    def decode(self, stream: Stream, decoding: Decoding | None = None) -> Hypothesis:
        """Run the model on the stream's new audio and return its transcript (of the current
        utterance, after a :meth:`reset`): greedy while audio is still coming (its token ids only
        ever grow), and once :meth:`Stream.input_finished` was called the final one, by ``decoding``
        (default: :attr:`decoding`).

        Raises:
            AudioError: a finished stream held too little audio for one frame.
        """
        stream.run()
        if stream.finished and not stream.pieces and not stream.offset:
            raise AudioError("<stream>", f"too short: {stream.samples} samples at {self.sample_rate} Hz give no "
                                         f"output frame")
        decoding = decoding or self.decoding
        skip = stream.skip
        if not stream.finished or decoding.incremental or not stream.pieces:
            hyp = greedy_from_best(stream.best_tokens()[skip:], stream.score, self.vocab, frame_shift=self.frame_shift)
        else:
            hyp = decoding.decode(stream.log_probs(len(self.vocab))[skip:], self.vocab, frame_shift=self.frame_shift)
        return shift_times(hyp, (stream.offset + skip) * self.frame_shift)

    def is_endpoint(self, stream: Stream, rules: EndpointRules = EndpointRules()) -> bool:
        """Whether the stream's current utterance is over by ``rules``, judged on the frames
        recognised up to the last ``decode``."""
        best = stream.best_tokens()
        spoken = np.flatnonzero(best != self.vocab.blank_id)
        silence = len(best) - (int(spoken[-1]) + 1 if spoken.size else 0)
        return rules.reached(len(best) * self.frame_shift, silence * self.frame_shift, spoken.size > 0)

    def reset(self, stream: Stream) -> None:
        """Start a new utterance on ``stream`` (after an endpoint): ``decode`` then returns only what
        follows, with word times still measured from the start of the stream."""
        stream.new_utterance(self.vocab.blank_id)

    def decode_streams(self, streams: Sequence[Stream], decoding: Decoding | None = None) -> list[Hypothesis]:
        """:meth:`decode` of many streams at once (a server's live connections): with a streaming
        model the chunks ready in several streams run as one batched step, so the weights are read
        once per round instead of once per stream. Front-end windows still run stream by stream: the
        conv front end is compute-bound (8 windows batched take 8 times one), so batching them saves
        nothing. Results equal decoding each stream alone (float rounding aside)."""
        chunked = [(s, e) for s in streams if isinstance(e := s.engine, ChunkEngine)]
        for s, e in chunked:
            if s.pending:
                e.feed(s.take_pending())
        while ready := [(s, e) for s, e in chunked if e.ready()]:
            for (s, _), piece in zip(ready, step_together([e for _, e in ready])):
                s.add([piece])
        return [self.decode(s, decoding) for s in streams]


__all__ = ["ChunkEngine", "EndpointRules", "Engine", "StateSpec", "Stream", "StreamGeometry", "StreamingDecoder", "Windows",
           "step_together"]
