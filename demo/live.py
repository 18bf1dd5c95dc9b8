"""The Live tab's work: microphone blocks through an :class:`wavssl_onnx.OnlineRecognizer`.

The browser sends what it recorded every ``stream_every`` seconds as (rate, int16 samples), at its
own rate (44.1 or 48 kHz) and in blocks of uneven size; ``stream.accept_waveform`` resamples them
as they stream. Each block is decoded right away (the greedy partial text of the current
utterance, which only grows), and endpointing (:class:`wavssl_onnx.EndpointRules`) closes an
utterance after a pause. Stopping the recording finishes the stream: the rest is decoded and the
last utterance closed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from wavssl_onnx import EndpointRules

LATENCY_ROWS = 12
"""Most recent partials listed in the latency table."""


@dataclass
class Partial:
    """One decode of the live stream, as measured."""

    index: int
    audio_seconds: float
    """Audio received so far in this recording."""
    compute_ms: float
    """Time to accept the block and decode (model + search)."""
    trail_seconds: float
    """How far the recognised frames trail the audio received (the model's look-ahead and windows)."""
    text: str


@dataclass
class LiveSession:
    """One browser session's live recognition (kept in a ``gr.State``).

    ``utterances`` survive from one recording to the next; the stream, the recording and the
    measurements are per recording. The stream handler and the stop handler may run at the same
    time, so every method holds ``lock``.
    """

    online: Any = None
    """The :class:`wavssl_onnx.OnlineRecognizer` of this recording."""
    rules: EndpointRules = field(default_factory=EndpointRules)
    stream: Any = None
    utterances: list[str] = field(default_factory=list)
    partial: str = ""
    partials: list[Partial] = field(default_factory=list)
    rate: int = 0
    """Sample rate of the recording (the browser's)."""
    blocks: list[np.ndarray] = field(default_factory=list)
    """What the browser sent, as received (for the recording's download)."""
    received: int = 0
    """Samples received at ``rate``."""
    first_partial_ms: float | None = None
    """Wall-clock time from the first block's arrival to the first non-empty partial."""
    started: float = 0.0
    recordings: int = 0
    """Recordings started in this session."""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @staticmethod
    def new() -> LiveSession:
        """A fresh session (``gr.State``'s factory: the class itself would be taken for a value)."""
        return LiveSession()

    def __deepcopy__(self, memo: dict[int, Any]) -> LiveSession:
        """A fresh session (gradio deep-copies a ``gr.State``'s initial value for every browser
        session; a lock and a live stream are not copied)."""
        return LiveSession(rules=self.rules)

    @property
    def active(self) -> bool:
        return self.stream is not None and not self.stream.finished

    @property
    def stopped(self) -> bool:
        """The last recording was finished (blocks that still arrive for it are late)."""
        return self.stream is not None and self.stream.finished

    def start(self, online: Any, rules: EndpointRules) -> None:
        """A new recording on ``online`` (caller holds the lock)."""
        self.online, self.rules, self.stream = online, rules, online.create_stream()
        self.partial, self.partials, self.blocks, self.received, self.rate = "", [], [], 0, 0
        self.first_partial_ms, self.started = None, time.perf_counter()
        self.recordings += 1

    def accept(self, rate: int, samples: np.ndarray) -> Partial:
        """Queue one block (n,) or (n, C) at ``rate``, decode, close the utterance at an endpoint."""
        t0 = time.perf_counter()
        if self.rate == 0:
            self.rate = int(rate)
        self.blocks.append(np.asarray(samples))
        self.received += len(samples)
        self.stream.accept_waveform(rate, samples)
        hyp = self.online.decode(self.stream)
        self.partial = hyp.text
        if self.online.is_endpoint(self.stream, self.rules):
            self._close(hyp.text)
        ms = 1000 * (time.perf_counter() - t0)
        frames = self.stream.offset + len(self.stream.best_tokens())
        part = Partial(len(self.partials) + 1, self.received / self.rate, ms,
                       self.stream.samples / self.online.sample_rate - frames * self.online.frame_shift, hyp.text)
        self.partials.append(part)
        if self.first_partial_ms is None and hyp.text:
            self.first_partial_ms = 1000 * (time.perf_counter() - self.started)
        return part

    def _close(self, text: str) -> None:
        if text:
            self.utterances.append(text)
        self.partial = ""
        self.online.reset(self.stream)

    def finish(self) -> str:
        """End of the recording: decode the rest and close the last utterance; returns its text."""
        self.stream.input_finished()
        text = self.online.decode(self.stream).text if self.stream.samples else ""
        self._close(text)
        return text

    def save_recording(self, path: Path) -> Path | None:
        """The recording as received (16-bit WAV at the browser's rate), or None if nothing came."""
        if not self.blocks or self.rate <= 0:
            return None
        data = np.concatenate(self.blocks)
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), data, self.rate, subtype="PCM_16" if data.dtype == np.int16 else "FLOAT")
        return path

    def numbered(self) -> str:
        """The finished utterances as numbered lines."""
        return "\n".join(f"{i}. {u}" for i, u in enumerate(self.utterances, start=1))

    def latency_rows(self) -> list[list[Any]]:
        """The latest partials: number, audio seconds, compute ms, trailing seconds, text."""
        return [[p.index, round(p.audio_seconds, 2), round(p.compute_ms, 1), round(p.trail_seconds, 2), p.text[-60:]]
                for p in self.partials[-LATENCY_ROWS:]][::-1]

    def summary(self) -> str:
        """One line about this recording's latency."""
        if not self.partials:
            return ""
        compute = [p.compute_ms for p in self.partials]
        first = f"first text after {self.first_partial_ms / 1000:.2f} s; " if self.first_partial_ms is not None else ""
        return (f"{first}{len(self.partials)} partials, decode {np.median(compute):.0f} ms median / "
                f"{max(compute):.0f} ms max per block; text trails the audio by "
                f"{self.partials[-1].trail_seconds:.2f} s (model latency {self.online.latency:.2f} s)")
