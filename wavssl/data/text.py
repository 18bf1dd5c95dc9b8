"""Transcribed speech for CTC fine-tuning: manifests, normalised transcripts, length-bucketed batches.

A *transcribed set* comes from either

- a TSV manifest with a header naming at least ``path`` and ``text`` columns (``duration`` and
  others are ignored); relative paths are relative to the manifest's folder; or
- a folder of ``x.wav`` + ``x.txt`` pairs (any audio extension libsndfile reads), searched recursively.

Every transcript is normalised with :func:`wavssl_onnx.normalize_text` for the configured language
(one implementation for training, decoding and scoring). Bad entries never stop a run: a missing or
unreadable file, an empty transcript, audio too short or too long is skipped, counted and reported
with the manifest line number (``skipped``). The character vocabulary itself
(:class:`wavssl_onnx.Vocabulary`, saved as ``vocab.json``) lives in the runtime package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from wavssl_onnx import Vocabulary, normalize_text
from wavssl_onnx.audio import standardize
from wavssl_onnx.batching import group_by_budget, pad_stack, shuffled_buckets
from wavssl_onnx.manifest import read_manifest

from .audio import AUDIO_EXTENSIONS, AudioError, load_audio, resampled_length

__all__ = ["Transcribed", "TranscribedSet", "TranscriptBatch", "Vocabulary", "budget_batches", "collate_audio",
           "read_transcribed"]


@dataclass(frozen=True)
class Transcribed:
    """One utterance of a transcribed set."""

    path: str
    """Absolute path of the audio file."""
    text: str
    """Normalised transcript."""
    samples: int
    """Length in samples at the set's sample rate."""
    where: str
    """``manifest.tsv:LINE`` or the transcript file, for messages."""


@dataclass
class TranscribedSet:
    """Usable utterances of a manifest or folder, and what was skipped (``(where, reason)`` pairs)."""

    items: list[Transcribed]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.items)

    @property
    def lengths(self) -> np.ndarray:
        """(N,) samples per utterance."""
        return np.array([u.samples for u in self.items], dtype=np.int64)

    @property
    def texts(self) -> list[str]:
        return [u.text for u in self.items]


def _folder_rows(root: Path) -> list[tuple[str, str, str]]:
    """(where, audio path, raw text) for every audio file with a ``.txt`` transcript beside it."""
    out = []
    for audio in sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()):
        txt = audio.with_suffix(".txt")
        if not txt.is_file():
            out.append((str(audio), str(audio), ""))  # reported below as having no transcript
            continue
        try:
            out.append((str(txt), str(audio), txt.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as e:
            out.append((str(txt), "", f"\0{e}"))
    return out


def read_transcribed(source: str | Path, *, sample_rate: int = 16000, language: str = "",
                     min_samples: int = 1, max_samples: int | None = None) -> TranscribedSet:
    """The usable utterances of a manifest ``.tsv`` or a folder of audio + ``.txt`` pairs.

    Args:
        source: manifest or folder.
        sample_rate: rate the audio will be decoded to (lengths are counted at it).
        language: normalisation language ("" keeps every script).
        min_samples, max_samples: utterances outside this range are skipped.
    Raises:
        AudioError: the source itself is missing or unreadable, or holds no usable utterance.
    """
    import soundfile as sf

    source = Path(source)
    if source.is_dir():
        rows = _folder_rows(source)
        base = source
    elif source.is_file():
        rows = [(row.where, row.path, row.text) for row in read_manifest(source, text=True)]
        base = source.parent
    else:
        raise AudioError(source, "no such manifest or folder")
    items: list[Transcribed] = []
    skipped: list[tuple[str, str]] = []
    for where, raw_path, raw_text in rows:
        if raw_text.startswith("\0"):
            skipped.append((where, f"cannot read transcript ({raw_text[1:]})"))
            continue
        if not raw_path:
            skipped.append((where, "empty path"))
            continue
        path = Path(raw_path) if Path(raw_path).is_absolute() else base / raw_path
        text = normalize_text(raw_text, language or None)
        if not text:
            skipped.append((where, f"{path.name}: empty transcript" + (" after normalisation" if raw_text.strip() else "")))
            continue
        if not path.is_file():
            skipped.append((where, f"{path}: file not found"))
            continue
        try:
            info = sf.info(str(path))
        except Exception as e:  # noqa: BLE001 - libsndfile raises several types
            skipped.append((where, f"{path}: unreadable audio ({e})"))
            continue
        samples = resampled_length(info.frames, info.samplerate, sample_rate)
        if samples < min_samples:
            skipped.append((where, f"{path}: too short ({samples} samples < {min_samples})"))
            continue
        if max_samples is not None and samples > max_samples:
            skipped.append((where, f"{path}: too long ({samples / sample_rate:.1f} s > {max_samples / sample_rate:.1f} s)"))
            continue
        items.append(Transcribed(str(path.resolve()), text, samples, where))
    if not items:
        detail = f"; first problem: {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        raise AudioError(source, f"no usable transcribed utterance ({len(skipped)} skipped{detail})")
    return TranscribedSet(items, skipped, str(source))


def budget_batches(lengths: np.ndarray, max_batch_samples: int, *, seed: int, epoch: int,
                   shuffle: bool = True) -> list[list[int]]:
    """Batches of indices holding at most ``max_batch_samples`` padded samples, a pure function of
    (seed, epoch): items sorted by length within chunks of 64 (ties random), cut greedily, batches
    shuffled. ``shuffle=False`` gives the plain length order (evaluation)."""
    if not shuffle:
        return group_by_budget(np.argsort(lengths, kind="stable"), lengths, max_batch_samples, None)
    return shuffled_buckets(lengths, seed=seed, epoch=epoch, chunk=64, max_batch_samples=max_batch_samples)


def collate_audio(waves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """(T_i,) waveforms -> zero-padded (B, T) float32 batch and (B,) int64 lengths."""
    out, lengths = pad_stack(waves)
    return torch.from_numpy(out), torch.from_numpy(lengths)


@dataclass
class TranscriptBatch:
    """Padded audio with CTC targets."""

    waveforms: torch.Tensor
    """(B, T) float32."""
    lengths: torch.Tensor
    """(B,) valid samples."""
    targets: torch.Tensor
    """(sum of target lengths,) concatenated token ids."""
    target_lengths: torch.Tensor
    """(B,) tokens per utterance."""
    indices: list[int]
    """Positions of the utterances in their set."""
    failed: list[tuple[str, str]]
    """(where, reason) of utterances that could not be decoded (left out of the batch)."""


class AudioCache:
    """Decoded waveforms of a set, kept in memory up to ``max_bytes`` (fine-tuning sets are small)."""

    def __init__(self, sample_rate: int, max_bytes: int = 2 << 30, normalize: bool = False) -> None:
        self.sample_rate, self.max_bytes, self.normalize = sample_rate, max_bytes, normalize
        self._store: dict[str, np.ndarray] = {}
        self._bytes = 0

    def get(self, path: str) -> np.ndarray:
        """(T,) float32 waveform; raises AudioError."""
        wave = self._store.get(path)
        if wave is None:
            wave = load_audio(path, self.sample_rate)
            if self.normalize:
                wave = standardize(wave)
            if self._bytes + wave.nbytes <= self.max_bytes:
                self._store[path] = wave
                self._bytes += wave.nbytes
        return wave
