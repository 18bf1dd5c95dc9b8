"""Audio discovery, decoding, cropping and length-bucketed batching.

The pipeline is::

    scan = scan_audio(root, sample_rate=16000, min_samples=8000, cache_path=...)
    dataset = CropDataset(scan.items, max_samples=250_000)
    sampler = BucketBatchSampler([it.num_samples for it in scan.items],
                                 max_batch_samples=1_400_000, max_samples=250_000)
    loader = make_loader(dataset, sampler, num_workers=4)

The sampler yields ``(batch_seed, indices)`` keys and the dataset turns one key into a
whole :class:`AudioBatch`, so every random choice (batch composition, order, crop
offsets) is a pure function of ``(seed, epoch, batch position)``. That makes runs
reproducible regardless of the number of loader workers and lets a resumed run skip
straight to the batch it stopped at (:meth:`BucketBatchSampler.set_start`).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from wavssl_onnx.audio import AudioError, read_audio, standardize  # one of each for training and the runtime
from wavssl_onnx.batching import group_by_budget, pad_stack
from wavssl_onnx.fileio import atomic_write_text
from wavssl_onnx.manifest import read_manifest

from ..modules.masking import MaskedFrames

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioBatch",
    "AudioError",
    "AudioItem",
    "BucketBatchSampler",
    "CropDataset",
    "ScanResult",
    "load_audio",
    "make_loader",
    "perturb",
    "resampled_length",
    "sample_waves",
    "scan_audio",
    "write_skipped",
]

AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".wav", ".wave", ".rf64", ".w64", ".flac", ".ogg", ".oga", ".opus", ".mp3",
        ".aiff", ".aif", ".aifc", ".au", ".snd", ".caf", ".sph", ".nist", ".voc",
        ".paf", ".sd2", ".avr", ".wve",
    }
)
"""Lower-cased file suffixes that libsndfile can decode."""

_CACHE_FORMAT = "wavssl-audio-scan-cache"
_CACHE_VERSION = 1


@dataclass(frozen=True)
class AudioItem:
    """One usable audio file.

    ``num_samples`` is the length after resampling to the scan's target rate (exactly
    the length :func:`load_audio` returns); ``sample_rate`` is the file's native rate.
    """

    path: str
    num_samples: int
    sample_rate: int
    channels: int


@dataclass
class ScanResult:
    """Output of :func:`scan_audio`: usable files and ``(path, reason)`` for the rest."""

    items: list[AudioItem]
    skipped: list[tuple[str, str]]


@dataclass(frozen=True)
class _Probe:
    """Header facts of one file as stored in the scan cache (``error`` set if unusable)."""

    size: int
    mtime_ns: int
    frames: int = 0
    sample_rate: int = 0
    channels: int = 0
    error: str | None = None


def resampled_length(num_frames: int, native_rate: int, target_rate: int) -> int:
    """Number of samples soxr produces when resampling ``num_frames`` samples.

    soxr rounds ``num_frames * target_rate / native_rate`` half-up; this computes the
    same value with exact integer arithmetic.
    """
    if native_rate == target_rate:
        return num_frames
    return (2 * num_frames * target_rate + native_rate) // (2 * native_rate)


def _list_audio_files(root: Path) -> list[str]:
    """Absolute paths of all files under ``root`` whose suffix is in AUDIO_EXTENSIONS."""
    found = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            if os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS:
                found.append(os.path.join(dirpath, name))
    return found


def _probe(path: str, stat: os.stat_result) -> _Probe:
    """Read the header of ``path`` with soundfile.info (no decoding)."""
    import soundfile as sf

    if stat.st_size == 0:
        return _Probe(stat.st_size, stat.st_mtime_ns, error="empty file (0 bytes)")
    try:
        info = sf.info(path)
    except sf.LibsndfileError as err:
        return _Probe(stat.st_size, stat.st_mtime_ns, error=f"not a readable audio file ({err.error_string})")
    except (sf.SoundFileError, OSError, RuntimeError, ValueError) as err:
        return _Probe(stat.st_size, stat.st_mtime_ns, error=f"not a readable audio file ({err})")
    return _Probe(stat.st_size, stat.st_mtime_ns, int(info.frames), int(info.samplerate), int(info.channels))


def _classify(path: str, probe: _Probe, sample_rate: int, min_samples: int) -> AudioItem | str:
    """Turn a probe into an AudioItem, or a human-readable reason for skipping it."""
    if probe.error is not None:
        return probe.error
    if probe.frames <= 0:
        return "no audio frames (header only)"
    if probe.sample_rate <= 0 or probe.channels <= 0:
        return f"invalid header: {probe.sample_rate} Hz, {probe.channels} channels"
    num_samples = resampled_length(probe.frames, probe.sample_rate, sample_rate)
    if num_samples < min_samples:
        return (
            f"too short: {num_samples} samples at {sample_rate} Hz "
            f"({num_samples / sample_rate:.3f} s) < min_samples={min_samples}"
        )
    return AudioItem(path, num_samples, probe.sample_rate, probe.channels)


def _load_cache(cache_path: Path) -> dict[str, _Probe]:
    """Probe results stored by a previous scan; empty (with a warning) if unreadable."""
    if not cache_path.exists():
        return {}
    try:
        data = json.loads(cache_path.read_text(encoding="utf-8"))
        if data.get("format") != _CACHE_FORMAT or data.get("version") != _CACHE_VERSION:
            raise ValueError(f"unknown format/version {data.get('format')!r}/{data.get('version')!r}")
        return {path: _Probe(**fields) for path, fields in data["entries"].items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        warnings.warn(f"{cache_path}: ignoring unreadable scan cache ({err}); re-probing all files", stacklevel=3)
        return {}


def _save_cache(cache_path: Path, probes: dict[str, _Probe]) -> None:
    """Atomically write the probe results of the current scan as JSON."""
    entries = {path: asdict(probe) for path, probe in probes.items()}
    text = json.dumps({"format": _CACHE_FORMAT, "version": _CACHE_VERSION, "entries": entries})
    atomic_write_text(cache_path, text)


def scan_audio(
    root: str | Path,
    *,
    sample_rate: int = 16000,
    min_samples: int = 0,
    cache_path: str | Path | None = None,
) -> ScanResult:
    """Find usable audio files under ``root`` (a folder, or a manifest ``.tsv``).

    A folder is searched recursively for files whose suffix is in AUDIO_EXTENSIONS
    (case-insensitive). A ``.tsv`` file is read as a manifest by
    :func:`wavssl_onnx.manifest.read_manifest` (a header naming a ``path`` column, then one
    file per row; rows with an empty path are ignored). Either way the result is sorted by
    absolute path.

    Each file is probed with ``soundfile.info`` (header only). Files that cannot be
    opened, are empty, have no frames, or are shorter than ``min_samples`` samples at
    ``sample_rate`` go to ``skipped`` with a readable reason.

    If ``cache_path`` is given, probe results are read from / written to that JSON file,
    keyed by path and validated by file size and mtime_ns, so unchanged files are not
    re-probed. The cache is rewritten atomically and holds exactly the files of the
    latest scan. The cache is independent of ``sample_rate`` and ``min_samples``.
    """
    if sample_rate <= 0:
        raise ValueError(f"scan_audio: sample_rate must be positive, got {sample_rate}")
    root = Path(root)
    if root.is_file() and root.suffix.lower() == ".tsv":
        paths = [row.path for row in read_manifest(root) if row.path]
    elif root.is_dir():
        paths = _list_audio_files(root.absolute())
    else:
        raise AudioError(root, "not a folder or a manifest .tsv file")
    paths = sorted(set(paths))

    cache = _load_cache(Path(cache_path)) if cache_path is not None else {}
    probes: dict[str, _Probe] = {}
    items: list[AudioItem] = []
    skipped: list[tuple[str, str]] = []
    for path in paths:
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            skipped.append((path, "file not found"))
            continue
        except OSError as err:
            skipped.append((path, f"cannot access file ({err.strerror})"))
            continue
        except ValueError:  # a NUL byte in a manifest row
            skipped.append((path, "not a valid file name (holds a NUL byte)"))
            continue
        cached = cache.get(path)
        if cached is not None and (cached.size, cached.mtime_ns) == (stat.st_size, stat.st_mtime_ns):
            probe = cached
        else:
            probe = _probe(path, stat)
        probes[path] = probe
        outcome = _classify(path, probe, sample_rate, min_samples)
        if isinstance(outcome, AudioItem):
            items.append(outcome)
        else:
            skipped.append((path, outcome))

    if cache_path is not None and probes != cache:
        _save_cache(Path(cache_path), probes)
    return ScanResult(items=items, skipped=skipped)


def write_skipped(path: str | Path, skipped: list[tuple[str, str]]) -> None:
    """Atomically write ``skipped`` as a TSV with header ``path\\treason``.

    Tabs and newlines inside fields are replaced by spaces to keep one row per file.
    """

    def clean(field: str) -> str:
        return " ".join(field.replace("\t", " ").splitlines())

    rows = ["path\treason"] + [f"{clean(p)}\t{clean(r)}" for p, r in skipped]
    atomic_write_text(Path(path), "\n".join(rows) + "\n")


def load_audio(path: str | os.PathLike[str], sample_rate: int = 16000) -> np.ndarray:
    """(T,) float32 mono waveform of a file at ``sample_rate``, T >= 1: the runtime's decoder
    (:func:`wavssl_onnx.audio.read_audio`), so training and serving decode alike.

    Raises:
        AudioError: the file is missing, cannot be decoded, is empty, or holds NaN/Inf samples or
            samples far outside [-1, 1] (:func:`wavssl_onnx.audio.waveform_problem`).
    """
    return read_audio(path, sample_rate)


@dataclass
class AudioBatch:
    """A batch of waveforms produced by :class:`CropDataset`.

    Attributes:
        waveforms: (B, T) float32, zero padded after each row's length.
        lengths: (B,) int64 number of valid samples per row.
        paths: B source paths, in row order.
        failed: (path, reason) for requested items that failed to decode.
        masks: the batch's pretraining span mask and distractors, drawn by the dataset's
            ``masker`` (None without one, or when every item failed).
    """

    waveforms: torch.Tensor
    lengths: torch.Tensor
    paths: list[str]
    failed: list[tuple[str, str]]
    masks: MaskedFrames | None = None

    def pin_memory(self) -> AudioBatch:
        """Copy with tensors in pinned memory (called by DataLoader when pin_memory=True)."""
        return replace(self, waveforms=self.waveforms.pin_memory(), lengths=self.lengths.pin_memory(),
                       masks=self.masks.pin_memory() if self.masks is not None else None)


def sample_waves(paths: list[str], sample_rate: int, *, seed: int, limit: int = 256,
                 max_samples: int = 160000) -> list[np.ndarray]:
    """Up to ``limit`` waveforms of a seeded random draw of ``paths`` (each cut to its first
    ``max_samples``), for statistics fitted before training; files that fail to decode are left out
    (training reports them). Returns (T_i,) float32 arrays."""
    order = np.random.default_rng(seed).permutation(len(paths))[:limit]
    waves = []
    for i in order:
        try:
            waves.append(load_audio(paths[i], sample_rate)[:max_samples])
        except AudioError:
            continue
    return waves


def perturb(wave: np.ndarray, rng: np.random.Generator, *, sample_rate: int, speed: float = 0.0,
            gain_db: float = 0.0) -> np.ndarray:
    """Training-time speed and volume perturbation of one utterance.

    The speed factor is drawn from {1 - speed, 1, 1 + speed} (Kaldi's 3-way speed perturbation:
    the audio is resampled with soxr as if recorded at ``sample_rate * factor``, so tempo and pitch
    change together) and the gain uniformly in [-gain_db, +gain_db] dB. A zero ``speed`` or
    ``gain_db`` draws nothing from ``rng`` (runs without perturbation keep their random stream).

    Args:
        wave: (T,) float32 waveform at ``sample_rate``.
    Returns:
        (T',) float32, T' = round(T / factor) (``wave`` itself when both are 0).
    """
    if speed > 0:
        factor = float(rng.choice((1.0 - speed, 1.0, 1.0 + speed)))
        if factor != 1.0:
            import soxr

            wave = soxr.resample(wave, sample_rate * factor, sample_rate, quality="HQ").astype(np.float32, copy=False)
    if gain_db > 0:
        wave = wave * np.float32(10.0 ** (rng.uniform(-gain_db, gain_db) / 20.0))
    return wave


def _random_crop(wave: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """(T,) -> (min(T, length),) contiguous window at a uniformly random offset."""
    if wave.shape[0] <= length:
        return wave
    start = int(rng.integers(0, wave.shape[0] - length + 1))
    return wave[start : start + length]


class CropDataset(Dataset[AudioBatch]):
    """Map-style dataset whose keys are whole batches: ``(batch_seed, indices)``.

    Each item is decoded with :func:`load_audio`, optionally speed/volume perturbed
    (:func:`perturb`), optionally normalized (zero mean, unit variance over the whole utterance,
    for layer-norm style models), then cropped at a random offset; every draw comes from
    ``numpy.random.default_rng(batch_seed)``:

    * ``pad=False``: every item is cropped to the shortest item of the batch (capped at
      ``max_samples``), so the batch has no padding;
    * ``pad=True``: each item is cropped to at most ``max_samples`` and the batch is
      zero-padded to the longest.

    Items that fail to decode are left out and reported in ``AudioBatch.failed``.

    With a ``masker`` (:class:`wavssl.models.MaskSampler` for pretraining), the batch also carries
    ``masker(lengths, T, batch_seed)``: masks drawn in the loader's workers, on the host, from the
    same batch seed.
    """

    def __init__(
        self,
        items: list[AudioItem],
        *,
        sample_rate: int = 16000,
        max_samples: int,
        pad: bool = False,
        normalize: bool = False,
        speed_perturb: float = 0.0,
        gain_perturb_db: float = 0.0,
        masker: Callable[[torch.Tensor, int, int], MaskedFrames] | None = None,
    ) -> None:
        if max_samples < 1:
            raise ValueError(f"CropDataset: max_samples must be >= 1, got {max_samples}")
        self.items = list(items)
        self.sample_rate = sample_rate
        self.max_samples = max_samples
        self.pad = pad
        self.normalize = normalize
        self.speed_perturb, self.gain_perturb_db = speed_perturb, gain_perturb_db
        self.masker = masker

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, list[int]]) -> AudioBatch:
        batch_seed, indices = key
        waves: list[np.ndarray] = []
        paths: list[str] = []
        failed: list[tuple[str, str]] = []
        rng = np.random.default_rng(batch_seed)
        for index in indices:
            item = self.items[index]
            try:
                wave = load_audio(item.path, self.sample_rate)
            except AudioError as err:
                failed.append((item.path, err.reason))
                continue
            wave = perturb(wave, rng, sample_rate=self.sample_rate, speed=self.speed_perturb,
                           gain_db=self.gain_perturb_db)
            waves.append(standardize(wave) if self.normalize else wave)
            paths.append(item.path)

        if self.pad:
            target = self.max_samples
        else:
            target = min([self.max_samples] + [w.shape[0] for w in waves])
        crops = [_random_crop(w, target, rng) for w in waves]
        padded, counts = pad_stack(crops)
        waveforms, lengths = torch.from_numpy(padded), torch.from_numpy(counts)
        masks = None
        if self.masker is not None and waves:
            masks = self.masker(lengths, waveforms.shape[1], batch_seed)
        return AudioBatch(waveforms=waveforms, lengths=lengths, paths=paths, failed=failed, masks=masks)


def _pad_to_multiple(batches: list[list[int]], multiple: int) -> list[list[int]]:
    """Repeat batches from the start (cyclically) until the count divides ``multiple``."""
    if not batches:
        return batches
    missing = -len(batches) % multiple
    return batches + [batches[i % len(batches)] for i in range(missing)]


def batch_seed(seed: int, epoch: int, position: int) -> int:
    """Non-negative 63-bit seed for the batch at ``position`` of an epoch's global list: a pure function
    of (train.seed, epoch, position); the loaders' crops and masks and the trainer's torch RNG use it."""
    state = np.random.SeedSequence([seed, epoch, position]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


class BucketBatchSampler(Sampler[tuple[int, list[int]]]):
    """Length-bucketed batch sampler yielding ``(batch_seed, indices)``.

    Per epoch, indices are sorted by effective length ``min(length, max_samples)`` (ties
    in a seeded random order), cut greedily into batches holding at most
    ``max_batch_samples`` samples (``len(batch) * longest effective length``) and at most
    ``max_batch_size`` items, and the batch order is shuffled with a generator seeded by
    ``(seed, epoch)``. With ``shuffle=False`` the order is the plain length sort.

    For data-parallel training the batch list is padded, by repeating batches from its
    start, to a multiple of ``num_replicas`` and rank ``r`` takes batches
    ``r::num_replicas``. Each batch's seed depends on ``(seed, epoch, position)`` only, so
    the whole stream is a deterministic function of ``(seed, epoch)``.

    Call :meth:`set_epoch` before each epoch and, when resuming mid-epoch,
    :meth:`set_start` after it. ``len()`` is always the full number of batches per epoch
    for this rank; iteration after ``set_start(n)`` yields ``len() - n`` of them.
    """

    def __init__(
        self,
        lengths: list[int],
        *,
        max_batch_samples: int,
        max_samples: int,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        max_batch_size: int | None = None,
    ) -> None:
        if max_batch_samples < 1 or max_samples < 1:
            raise ValueError(
                f"BucketBatchSampler: max_batch_samples ({max_batch_samples}) and "
                f"max_samples ({max_samples}) must be >= 1"
            )
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"BucketBatchSampler: need 0 <= rank ({rank}) < num_replicas ({num_replicas})")
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"BucketBatchSampler: max_batch_size must be >= 1, got {max_batch_size}")
        if seed < 0:
            raise ValueError(f"BucketBatchSampler: seed must be non-negative, got {seed}")
        self.effective = np.minimum(np.asarray(lengths, dtype=np.int64), max_samples)
        self.max_batch_samples = max_batch_samples
        self.max_samples = max_samples
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.max_batch_size = max_batch_size
        self.epoch = 0
        self.start = 0
        self.exclude: set[int] = set()
        """Indices left out of every batch from now on (files that failed to decode); a batch of
        nothing but excluded indices is yielded empty, so batch positions stay the same."""
        self._num_batches = len(self._global_batches(0)) // num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch to iterate; also resets :meth:`set_start` to 0."""
        if epoch < 0:
            raise ValueError(f"BucketBatchSampler.set_epoch: epoch must be non-negative, got {epoch}")
        self.epoch = epoch
        self.start = 0

    def set_start(self, batches_done: int) -> None:
        """Skip this rank's first ``batches_done`` batches of the current epoch."""
        if not 0 <= batches_done <= self._num_batches:
            raise ValueError(
                f"BucketBatchSampler.set_start: batches_done must be in [0, {self._num_batches}], got {batches_done}"
            )
        self.start = batches_done

    def _global_batches(self, epoch: int) -> list[list[int]]:
        """All replicas' batches of ``epoch``, in iteration order, padded for DDP."""
        rng = np.random.default_rng([self.seed, epoch])
        if self.shuffle:
            perm = rng.permutation(len(self.effective))
            order = perm[np.argsort(self.effective[perm], kind="stable")]
        else:
            order = np.argsort(self.effective, kind="stable")
        batches = group_by_budget(order, self.effective, self.max_batch_samples, self.max_batch_size)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return _pad_to_multiple(batches, self.num_replicas)

    def __iter__(self) -> Iterator[tuple[int, list[int]]]:
        batches = self._global_batches(self.epoch)
        first = self.rank + self.start * self.num_replicas
        for position in range(first, len(batches), self.num_replicas):
            indices = [i for i in batches[position] if i not in self.exclude] if self.exclude else batches[position]
            yield batch_seed(self.seed, self.epoch, position), indices

    def __len__(self) -> int:
        return self._num_batches


def make_loader(
    dataset: CropDataset,
    sampler: BucketBatchSampler,
    *,
    num_workers: int = 0,
    pin_memory: bool = False,
    prefetch_factor: int | None = None,
) -> DataLoader:
    """DataLoader over whole batches: ``dataset[key]`` for each key the sampler yields.

    Workers are persistent when ``num_workers > 0`` (the sampler runs in the main
    process, so ``set_epoch``/``set_start`` still take effect).
    """
    return DataLoader(
        dataset,
        sampler=sampler,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch_factor=prefetch_factor,
        persistent_workers=num_workers > 0,
    )
