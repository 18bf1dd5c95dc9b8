"""Limits that keep one demo server usable by several people at once."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """What one request may cost, and how much runs at once."""

    max_file_mb: float = 50.0
    """Largest upload (audio, series, LM text), in MB; the browser refuses bigger files before sending them
    and the server refuses them too (gradio's ``max_file_size``)."""
    max_seconds: float = 300.0
    """Longest audio a transcription or the pretraining view accepts, in seconds (read from the header)."""
    max_live_seconds: int = 300
    """A live stream stops after this many seconds (gradio's ``time_limit`` on the stream)."""
    max_ssl_seconds: float = 30.0
    """Longest clip the pretraining view runs (PyTorch on a CPU; the plots are frame by frame)."""
    max_series: int = 200
    """Most series of one sensor file that are classified."""
    concurrency: int = 2
    """Requests that run at once per event (transcribe, classify, ...); the rest wait in the queue."""
    live_concurrency: int = 8
    """Live microphone streams served at once (each chunk is a short job)."""
    queue_size: int = 64
    """Requests that may wait; more are refused with a "queue is full" message."""
    cache_every: int = 600
    """Seconds between sweeps of gradio's file cache (uploads and results)."""
    cache_age: int = 3600
    """Cached files older than this many seconds are deleted by the sweep."""

    @property
    def max_file_size(self) -> str:
        """``max_file_size`` for ``launch``."""
        return f"{self.max_file_mb:g}mb"

    def __post_init__(self) -> None:
        if min(self.max_file_mb, self.max_seconds, self.max_live_seconds, self.max_ssl_seconds) <= 0:
            raise ValueError(f"limits must be positive: {self}")
        if min(self.concurrency, self.live_concurrency, self.queue_size, self.max_series) < 1:
            raise ValueError(f"concurrency, queue size and series count must be >= 1: {self}")
