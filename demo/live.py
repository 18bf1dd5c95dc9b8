"""The Live tab's work: microphone blocks through an :class:`wavssl_onnx.OnlineRecognizer`.

The browser sends what it recorded every 0.1 s as (rate, int16 samples) at its own rate (44.1 or
48 kHz); ``stream.accept_waveform`` resamples as it streams. Gradio hands a stream handler only the
newest block: blocks that arrive while the handler runs are lost. So the handler only queues the
block (:meth:`LiveSession.push`, well under a millisecond) and a worker thread per recording runs
the model on whatever has queued, decodes the greedy partial text of the current utterance (it only
grows) and closes utterances at pauses (:class:`wavssl_onnx.EndpointRules`). Stopping the recording
(:meth:`LiveSession.finish`) lets the worker drain the queue, then decodes the rest and closes the
last utterance.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from wavssl_onnx import EndpointRules

LATENCY_ROWS = 12
"""Most recent text updates listed in the latency table."""
IDLE_SECONDS = 60.0
"""A worker that gets no audio for this long ends (the tab was closed while recording)."""


@dataclass
class Partial:
    """One change of the live text, as measured."""

    index: int
    audio_seconds: float
    """Audio received when the worker picked up the blocks that changed the text."""
    compute_ms: float
    """Time to feed those blocks to the stream and decode (model + search)."""
    trail_seconds: float
    """How far the recognised frames trail the audio fed (the model's look-ahead and windows)."""
    text: str


class LiveSession:
    """One browser session's live recognition (a ``gr.State`` value; methods are thread-safe).

    Finished utterances survive from one recording to the next; the stream, the recording and the
    measurements are per recording.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.online: Any = None
        """The :class:`wavssl_onnx.OnlineRecognizer` of the current recording."""
        self.rules = EndpointRules()
        self.stream: Any = None
        self.finished = False
        """The current recording was stopped (blocks that still arrive for it are late)."""
        self.utterances: list[str] = []
        self.partial = ""
        self.partials: list[Partial] = []
        self.version = 0
        """Bumped whenever the text changes."""
        self.shown = -1
        """The version last sent to the page."""
        self.inbox: list[tuple[int, np.ndarray]] = []
        """Blocks the worker has not fed to the stream yet."""
        self.blocks: list[np.ndarray] = []
        """What the browser sent, as received (for the recording's download)."""
        self.rate = 0
        """Sample rate of the recording (the browser's)."""
        self.received = 0
        """Samples received at ``rate``."""
        self.started = 0.0
        self.first_block: float | None = None
        self.last_block = 0.0
        self.first_partial_ms: float | None = None
        """Wall-clock time from the start of the recording to the first text."""
        self.recordings = 0
        self.worker: threading.Thread | None = None
        self.stopping = False
        self.error: str | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> LiveSession:
        """A fresh session (gradio deep-copies a ``gr.State``'s initial value for each browser
        session; a lock, a thread and a live stream are not copied)."""
        return LiveSession()

    # ------------------------------------------------------------------------------ recording

    def begin(self, online: Any, rules: EndpointRules) -> None:
        """Start a recording on ``online`` (an unfinished previous one is finished first)."""
        if self.worker is not None:
            self.finish()
        with self.lock:
            self.online, self.rules, self.stream = online, rules, online.create_stream()
            self.finished, self.stopping, self.error = False, False, None
            self.partial, self.partials, self.inbox, self.blocks = "", [], [], []
            self.rate, self.received, self.first_block, self.first_partial_ms = 0, 0, None, None
            self.started = time.perf_counter()
            self.recordings += 1
            self.version += 1
            self.worker = threading.Thread(target=self._work, args=(self.stream,), daemon=True,
                                           name=f"live-{self.recordings}")
            self.worker.start()

    @property
    def active(self) -> bool:
        """A recording is running (begun, not finished)."""
        return self.stream is not None and not self.finished

    def push(self, rate: int, samples: np.ndarray) -> bool:
        """Queue one block (n,) or (n, C) at ``rate`` for the worker. Returns whether the text changed
        since the page last got it (:meth:`view`)."""
        now = time.perf_counter()
        with self.lock:
            if not self.active:
                return False
            if self.error is not None:
                raise ValueError(self.error)
            if self.first_block is None:
                self.first_block, self.rate = now, int(rate)
            self.last_block = now
            block = np.asarray(samples)
            self.blocks.append(block)
            self.received += len(block)
            self.inbox.append((int(rate), block))
            self.wake.notify()
            return self.version != self.shown

    def _work(self, stream: Any) -> None:
        """The worker: feed queued blocks to ``stream``, decode, close utterances at endpoints."""
        while True:
            with self.lock:
                deadline = time.monotonic() + IDLE_SECONDS
                while not self.inbox and not self.stopping and time.monotonic() < deadline:
                    self.wake.wait(timeout=1.0)
                if not self.inbox:
                    return  # stopped (finish decodes the rest), or abandoned
                blocks, self.inbox = self.inbox, []
                fed = self.received
            t0 = time.perf_counter()
            try:
                for rate, block in blocks:
                    stream.accept_waveform(rate, block)
                hyp = self.online.decode(stream)
                closed = self.online.is_endpoint(stream, self.rules)
                if closed:
                    self.online.reset(stream)
            except (ValueError, RuntimeError) as e:  # e.g. a NaN block, or a rate change mid-stream
                with self.lock:
                    self.error = str(e)
                return
            frames = stream.offset + len(stream.best_tokens())
            trail = stream.samples / self.online.sample_rate - frames * self.online.frame_shift
            with self.lock:
                changed = hyp.text != self.partial or (closed and hyp.text)
                if closed and hyp.text:
                    self.utterances.append(hyp.text)
                self.partial = "" if closed else hyp.text
                if changed:
                    self.version += 1
                    self.partials.append(Partial(len(self.partials) + 1, fed / max(self.rate, 1),
                                                 1000 * (time.perf_counter() - t0), trail, hyp.text))
                    if self.first_partial_ms is None and hyp.text:
                        self.first_partial_ms = 1000 * (time.perf_counter() - self.started)

    def finish(self) -> str:
        """End the recording: the worker drains the queue, then the rest is decoded and the last
        utterance closed. Returns that utterance's text ("" if nothing was said)."""
        with self.lock:
            if not self.active:
                return ""
            self.stopping = True
            self.wake.notify()
            worker = self.worker
        if worker is not None:
            worker.join()
        with self.lock:
            self.worker, self.finished = None, True
            stream = self.stream
            stream.input_finished()
            text = ""
            if stream.samples and self.error is None:
                try:
                    text = self.online.decode(stream).text
                except ValueError:  # too little audio for one frame
                    text = ""
            if text:
                self.utterances.append(text)
            self.partial = ""
            self.version += 1
            return text

    def clear(self) -> None:
        """Forget the finished utterances and the measurements."""
        with self.lock:
            self.utterances.clear()
            self.partials.clear()
            self.partial = ""
            self.version += 1

    # ------------------------------------------------------------------------------ what the page shows

    def view(self) -> tuple[str, str, str, list[list[Any]]]:
        """(partial text, numbered utterances, summary, latency rows), marked as shown."""
        with self.lock:
            self.shown = self.version
            return self.partial, self.numbered(), self.summary(), self.latency_rows()

    def save_recording(self, path: Path) -> Path | None:
        """The recording as received (16-bit WAV at the browser's rate), or None if nothing came."""
        with self.lock:
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
        """The latest text updates: number, audio seconds, compute ms, trailing seconds, text."""
        return [[p.index, round(p.audio_seconds, 2), round(p.compute_ms, 1), round(p.trail_seconds, 2), p.text[-60:]]
                for p in self.partials[-LATENCY_ROWS:]][::-1]

    def missing_seconds(self) -> float:
        """Audio that did not arrive: wall-clock time from the first to the latest block (plus one
        block) minus the audio received (blocks that come while the server is busy are lost)."""
        if self.first_block is None or not self.rate or not self.blocks:
            return 0.0
        span = self.last_block - self.first_block + len(self.blocks[-1]) / self.rate
        return max(0.0, span - self.received / self.rate)

    def summary(self) -> str:
        """Two lines about this recording: latency, and what arrived."""
        if not self.rate:
            return ""
        lines = []
        if self.partials:
            compute = [p.compute_ms for p in self.partials]
            first = f"first text {self.first_partial_ms / 1000:.2f} s after Record; " \
                if self.first_partial_ms is not None else ""
            lines.append(f"{first}{len(self.partials)} text updates, decode {np.median(compute):.0f} ms median / "
                         f"{max(compute):.0f} ms max; text trails the audio by {self.partials[-1].trail_seconds:.2f} s "
                         f"(model latency {self.online.latency:.2f} s)")
        lost = self.missing_seconds()
        lines.append(f"{self.received / self.rate:.1f} s of audio received"
                     + (f"; about {lost:.1f} s did not arrive (the server was busy)" if lost >= 0.3 else ""))
        return ".  \n".join(lines) + "."
