"""Audio input for the runtime: anything libsndfile reads (wav, flac, ogg/opus, mp3, aiff, ...) or
numpy arrays, downmixed to mono and resampled with soxr to the model's rate; long files stream in
blocks so memory stays bounded."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .fileio import atomic_write_bytes

if TYPE_CHECKING:  # soundfile and soxr load where audio is decoded or resampled: the array helpers
    import soxr  # (standardize, check_log_probs, ...) also run where neither is installed (GPU images)

Source = str | os.PathLike[str] | np.ndarray
"""A file path or a waveform array: (T,) mono or (T, C) channels last, float or integer PCM."""


class AudioError(ValueError):
    """One input cannot be used (undecodable, empty, too short, non-finite); the message names it
    (``"<source>: <reason>"``). The training side (``wavssl.data.audio``) raises this class too."""

    def __init__(self, source: object, reason: str) -> None:
        self.source, self.reason = str(source), reason
        self.path = self.source
        super().__init__(f"{source}: {reason}")


@dataclass(frozen=True)
class AudioInfo:
    """What a file header says."""

    frames: int
    """Samples per channel (may be 0)."""
    sample_rate: int
    channels: int

    @property
    def duration(self) -> float:
        """Seconds."""
        return self.frames / self.sample_rate if self.sample_rate > 0 else 0.0


def source_name(x: Source, index: int = 0) -> str:
    """How an input is named in results and errors: its path, or ``<array N>``."""
    return f"<array {index}>" if isinstance(x, np.ndarray) else str(x)


def probe(path: str | os.PathLike[str]) -> AudioInfo:
    """Header of an audio file; raises :class:`AudioError` when libsndfile cannot open it."""
    import soundfile as sf

    if not Path(path).is_file():
        raise AudioError(path, "no such file")
    try:
        info = sf.info(str(path))
    except Exception as e:
        raise AudioError(path, f"cannot decode ({_reason(e)})") from e
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioError(path, f"invalid header (sample rate {info.samplerate}, {info.channels} channels)")
    return AudioInfo(int(info.frames), int(info.samplerate), int(info.channels))


def _reason(e: Exception) -> str:
    text = getattr(e, "error_string", None) or str(e) or type(e).__name__
    return text.strip().splitlines()[0] if text.strip() else type(e).__name__


def mono(data: np.ndarray) -> np.ndarray:
    """(T,) or (T, C) -> (T,) float32, channels averaged; integer PCM scaled to [-1, 1)."""
    array = np.asarray(data)
    if np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32) / float(2 ** (8 * array.dtype.itemsize - 1))
    array = array.astype(np.float32, copy=False)
    if array.ndim == 2:
        array = array.mean(axis=1, dtype=np.float32) if array.shape[1] > 1 else array[:, 0]
    elif array.ndim != 1:
        raise ValueError(f"expected a (T,) or (T, channels) waveform, got shape {array.shape}")
    return np.ascontiguousarray(array, dtype=np.float32)


def _resample(wave: np.ndarray, rate: int, target: int, source: object) -> np.ndarray:
    import soxr

    if rate == target:
        return wave
    try:
        out = soxr.resample(wave, rate, target, quality="HQ")
    except Exception as e:
        raise AudioError(source, f"cannot resample {rate} Hz -> {target} Hz ({_reason(e)})") from e
    if out.size == 0:
        raise AudioError(source, f"no samples left after resampling {rate} Hz -> {target} Hz")
    return np.ascontiguousarray(out, dtype=np.float32)


MAX_ABS_SAMPLE = 1e6
"""Largest sample magnitude accepted. Audio lies in [-1, 1] (integer-scaled float files reach 32768);
beyond this the file's scale is wrong and a model's arithmetic overflows into NaN outputs."""


def waveform_problem(wave: np.ndarray) -> str | None:
    """Why a decoded waveform cannot be used (empty, NaN/Inf, absurd sample range), or None."""
    if wave.size == 0:
        return "no audio samples (zero-length audio)"
    if not np.isfinite(wave).all():
        return "contains NaN or infinite samples"
    peak = float(np.abs(wave).max())
    if peak > MAX_ABS_SAMPLE:
        return (f"sample values reach {peak:.3g}, far outside the [-1, 1] range of audio (limit "
                f"{MAX_ABS_SAMPLE:g}): the file's scale is wrong")
    return None


STANDARDIZE_EPS = 1e-7
"""Variance floor of per-utterance standardisation: training (``data.normalize``), PyTorch inference
and the exported graph (``wavssl.onnx_graph.standardize``) all divide by sqrt(var + this)."""


def standardize(wave: np.ndarray) -> np.ndarray:
    """(T,) -> (T,) float32 with zero mean and unit variance (float64 statistics, variance floored by
    :data:`STANDARDIZE_EPS`): what a model trained with ``data.normalize`` expects."""
    mean = wave.mean(dtype=np.float64)
    var = wave.var(dtype=np.float64)
    standardized: np.ndarray = ((wave - mean) / np.sqrt(var + STANDARDIZE_EPS)).astype(np.float32)
    return standardized


def check_log_probs(log_probs: np.ndarray, source: object) -> np.ndarray:
    """``log_probs`` unchanged, or :class:`AudioError` naming ``source`` when the model's output for
    it holds NaN or Inf (a corrupt model file, or an input that overflows it): decoded, it would give
    an empty transcript that passes for silence."""
    if not np.isfinite(log_probs).all():
        raise AudioError(source, "the model gave non-finite (NaN or infinite) log-probabilities for this "
                                 "input: no transcript (a corrupt model file, or audio far outside the "
                                 "range it was trained on)")
    return log_probs


def _check(wave: np.ndarray, source: object) -> np.ndarray:
    problem = waveform_problem(wave)
    if problem is not None:
        raise AudioError(source, problem)
    return wave


def read_audio(path: str | os.PathLike[str], sample_rate: int) -> np.ndarray:
    """Decode a whole file -> (T,) float32 mono at ``sample_rate`` (channels averaged, soxr "HQ"),
    T >= 1; the one decoder of training (``wavssl.data.audio.load_audio``) and the runtime. Raises
    :class:`AudioError`: missing, undecodable, empty, NaN/Inf or out-of-range samples."""
    import soundfile as sf

    if not Path(path).is_file():
        raise AudioError(path, "no such file" if not Path(path).exists() else "not a file")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile surfaces OS, codec and type errors alike
        raise AudioError(path, f"cannot decode ({_reason(e)})") from e
    wave = _check(mono(data), path)
    return _check(_resample(wave, int(rate), sample_rate, path), path)


def from_array(x: np.ndarray, rate: int, sample_rate: int, source: object = "<array>") -> np.ndarray:
    """An in-memory waveform ((T,) or (T, C), float or integer PCM at ``rate``) -> (T',) float32 mono
    at ``sample_rate``; raises :class:`AudioError`."""
    if rate <= 0:
        raise AudioError(source, f"invalid sample rate {rate}")
    try:
        wave = mono(x)
    except ValueError as e:
        raise AudioError(source, str(e)) from e
    return _check(_resample(_check(wave, source), rate, sample_rate, source), source)


def stream_audio(path: str | os.PathLike[str], sample_rate: int, block_seconds: float = 10.0) -> Iterator[np.ndarray]:
    """Decode a file block by block -> (n,) float32 mono blocks at ``sample_rate`` (streaming soxr),
    so a long file never sits in memory whole. Raises :class:`AudioError` (possibly mid-stream)."""
    import soundfile as sf

    info = probe(path)
    if info.frames == 0:
        raise AudioError(path, "no audio samples (zero-length audio)")
    resampler = None if info.sample_rate == sample_rate else stream_resampler(path, info.sample_rate, sample_rate)
    block = max(1, int(block_seconds * info.sample_rate))
    produced = 0
    try:
        with sf.SoundFile(str(path)) as f:
            while True:
                data = f.read(block, dtype="float32", always_2d=True)
                last = len(data) < block
                wave = mono(data) if len(data) else np.zeros(0, np.float32)
                if wave.size:
                    _check(wave, path)
                if resampler is not None:
                    wave = np.ascontiguousarray(resampler.resample_chunk(wave, last=last), dtype=np.float32)
                produced += wave.size
                if wave.size:
                    yield wave
                if last:
                    break
    except AudioError:
        raise
    except Exception as e:
        raise AudioError(path, f"cannot decode ({_reason(e)})") from e
    if produced == 0:
        raise AudioError(path, "no audio samples (zero-length audio)")


def stream_resampler(path: object, rate: int, target: int) -> soxr.ResampleStream:
    import soxr

    try:
        return soxr.ResampleStream(rate, target, 1, dtype="float32", quality="HQ")
    except Exception as e:
        raise AudioError(path, f"cannot resample {rate} Hz -> {target} Hz ({_reason(e)})") from e


def write_audio(path: str | os.PathLike[str], wave: np.ndarray, sample_rate: int, *, format: str = "WAV",
                subtype: str = "PCM_16") -> Path:
    """Write (T,) float audio at ``sample_rate`` (``format``/``subtype`` as libsndfile names them)
    atomically (:func:`wavssl_onnx.fileio.atomic_write`): a reader never sees half a file."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, wave, sample_rate, format=format, subtype=subtype)
    return atomic_write_bytes(path, buffer.getvalue())


def array_blocks(wave: np.ndarray, block: int) -> Iterator[np.ndarray]:
    """(T,) -> consecutive views of at most ``block`` samples."""
    for start in range(0, len(wave), block):
        yield wave[start: start + block]
