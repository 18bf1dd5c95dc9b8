"""Sensor time series: loading, labels, windowing, checks, batching and few-label draws.

A data set is a :class:`SeriesSet`: a list of ``(C, T_i)`` float32 arrays (NaN marks a missing
sample; the sensor front end masks and imputes it), optional class labels, and where each series
came from (for error messages). Files are read by :func:`wavssl_onnx.series.read_series`, the reader
the runtime uses too (``.npy`` / ``.npz`` / ``.csv`` / ``.ts``; a CSV time column is interpolated onto
the model's sample rate; see that module for the formats). A folder: every ``.npy``/``.npz``/``.csv``/
``.ts`` file under it, in sorted order; a ``labels.tsv`` or ``labels.csv`` at its top level is taken as
the labels table.

Labels come from the ``.ts`` class column, an ``.npz`` ``y`` array, or a CSV/TSV table: with a
``file`` (or ``path``, ``name``, ``filename``) column, rows are matched to recordings by file name
(with or without extension); otherwise rows are the labels of the series in order. The label
column is ``label`` (or ``class``, ``y``, ``target``), or the only/last column without a header.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from wavssl_onnx.batching import pad_stack, shuffled_buckets
from wavssl_onnx.series import SERIES_EXTENSIONS, read_series
from wavssl_onnx.series import SeriesError as SensorDataError

LABEL_FILES = ("labels.tsv", "labels.csv")
"""Labels tables picked up automatically at the top of a data folder."""

_LABEL_COLUMNS = ("label", "class", "y", "target")
_FILE_COLUMNS = ("file", "path", "name", "filename")


@dataclass
class SeriesSet:
    """An in-memory set of multichannel series."""

    series: list[np.ndarray]
    """(C, T_i) float32 arrays; NaN = missing sample."""
    labels: list[str] | None
    """Class label of every series, or None when unlabelled."""
    sources: list[str]
    """Where each series came from (``file``, ``file[i]`` or ``file[i]@start``), for messages."""
    groups: list[int]
    """Recording index of every series: windows cut from one recording share it."""

    def __len__(self) -> int:
        return len(self.series)

    @property
    def channels(self) -> int:
        """Channel count C (0 for an empty set)."""
        return int(self.series[0].shape[0]) if self.series else 0

    @property
    def lengths(self) -> np.ndarray:
        """(N,) time steps of every series."""
        return np.array([s.shape[1] for s in self.series], dtype=np.int64)

    @property
    def num_missing(self) -> int:
        """Number of missing (non-finite) samples over all series."""
        return int(sum((~np.isfinite(s)).sum() for s in self.series))

    def subset(self, indices: np.ndarray | list[int]) -> "SeriesSet":
        """The series at ``indices``, in that order."""
        idx = [int(i) for i in indices]
        return SeriesSet([self.series[i] for i in idx], None if self.labels is None else [self.labels[i] for i in idx],
                         [self.sources[i] for i in idx], [self.groups[i] for i in idx])


# ------------------------------------------------------------------------------------------ labels


@dataclass
class LabelTable:
    """A labels CSV/TSV."""

    labels: list[str]
    """One label per row."""
    files: list[str] | None
    """File name of every row, when the table has a file column."""


def read_labels(path: str | Path) -> LabelTable:
    """Read a labels table (tab-separated for ``.tsv``, else comma-separated); see the module docstring."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = [[c.strip() for c in r] for r in csv.reader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
                    if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise SensorDataError(f"{path}: cannot read labels: {e}") from e
    if not rows:
        raise SensorDataError(f"{path}: no labels")
    names = [c.lower() for c in rows[0]]
    label_col = next((names.index(c) for c in _LABEL_COLUMNS if c in names), None)
    file_col = next((names.index(c) for c in _FILE_COLUMNS if c in names), None)
    if label_col is not None:
        rows = rows[1:]
    elif len(rows[0]) == 1:
        label_col = 0
    elif len(rows[0]) == 2:
        file_col, label_col = 0, 1
    else:
        raise SensorDataError(f"{path}: cannot tell the label column; add a header with a 'label' column")
    for n, r in enumerate(rows):
        if len(r) <= max(label_col, file_col or 0):
            raise SensorDataError(f"{path}: row {n + 1} has {len(r)} columns")
    return LabelTable([r[label_col] for r in rows], None if file_col is None else [r[file_col] for r in rows])


def _apply_labels(table: LabelTable, files: list[Path], counts: list[int], root: Path, where: Path) -> list[str]:
    """Labels of every series given the table, the file of each recording group and its series count."""
    total = sum(counts)
    if table.files is None:
        if len(table.labels) != total:
            raise SensorDataError(f"{where}: {len(table.labels)} labels for {total} series (rows are matched in order)")
        return list(table.labels)
    by_name = dict(zip(table.files, table.labels))
    out = []
    for file, count in zip(files, counts):
        keys = [str(file.relative_to(root)) if file != root else file.name, file.name, file.stem]
        label = next((by_name[k] for k in keys if k in by_name), None)
        if label is None:
            raise SensorDataError(f"{where}: no label for {file} (looked up {keys[1]!r} and {keys[2]!r})")
        out.extend([label] * count)
    return out


# ------------------------------------------------------------------------------------------ loading


def load_series(path: str | Path, *, labels: str | Path | None = None, sample_rate: float = 100.0) -> SeriesSet:
    """Read a file or a folder of series (see the module docstring), with optional labels.

    Args:
        path: ``.npy``/``.npz``/``.csv``/``.ts`` file, or a folder of them.
        labels: CSV/TSV labels table; overrides labels stored in the files. For a folder, a
            ``labels.tsv``/``labels.csv`` inside it is used when this is None.
        sample_rate: Hz, the grid CSV files with a time column are interpolated onto.
    Raises:
        SensorDataError: naming the file and the problem (unreadable, inconsistent channels, ...).
    """
    root = Path(path)
    if root.is_dir():
        auto = [root / n for n in LABEL_FILES if (root / n).is_file()]
        if labels is None and auto:
            labels = auto[0]
        skip = {p.resolve() for p in auto} | ({Path(labels).resolve()} if labels is not None else set())
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SERIES_EXTENSIONS
                       and p.resolve() not in skip)
        if not files:
            raise SensorDataError(f"{root}: no {'/'.join(sorted(SERIES_EXTENSIONS))} files in this folder")
    elif root.is_file():
        files = [root]
    else:
        raise SensorDataError(f"{root}: no such file or folder")
    series: list[np.ndarray] = []
    sources: list[str] = []
    file_labels: list[str | None] = []
    counts: list[int] = []
    for file in files:
        items, found = read_series(file, sample_rate)
        series.extend(items)
        sources.extend([str(file)] if len(items) == 1 else [f"{file}[{i}]" for i in range(len(items))])
        if found is not None:
            file_labels.extend(found)
        else:
            file_labels.extend([None] * len(items))
        counts.append(len(items))
    for s, src in zip(series, sources):
        if s.shape[0] != series[0].shape[0]:
            raise SensorDataError(f"{src}: {s.shape[0]} channels, but {sources[0]} has {series[0].shape[0]}")
    if labels is not None:
        label_list: list[str] | None = _apply_labels(read_labels(labels), files, counts,
                                                     root if root.is_dir() else root.parent, Path(labels))
    elif all(lab is not None for lab in file_labels):
        label_list = [str(lab) for lab in file_labels]
    else:
        label_list = None
    return SeriesSet(series, label_list, sources, list(range(len(series))))


def window(data: SeriesSet, length: int, hop: int = 0) -> SeriesSet:
    """Cut series longer than ``length`` into windows of ``length`` samples every ``hop`` (default
    ``length``); a last window is aligned to the end so the tail is covered. Shorter series stay
    whole. Windows keep their recording's label and group. ``length = 0`` returns ``data``."""
    if length <= 0:
        return data
    hop = hop or length
    out = SeriesSet([], None if data.labels is None else [], [], [])
    for i, s in enumerate(data.series):
        t = s.shape[1]
        starts = list(range(0, t - length + 1, hop)) if t > length else [0]
        if t > length and starts[-1] + length < t:
            starts.append(t - length)
        for st in starts:
            out.series.append(s[:, st: st + length] if t > length else s)
            out.sources.append(f"{data.sources[i]}@{st}" if t > length else data.sources[i])
            out.groups.append(data.groups[i])
            if out.labels is not None and data.labels is not None:
                out.labels.append(data.labels[i])
    return out


def check_series(data: SeriesSet, *, channels: int, min_length: int, expected_by: str) -> None:
    """Raise SensorDataError unless every series has ``channels`` channels and ``min_length`` steps.

    ``expected_by`` names what sets the requirement (e.g. ``"the checkpoint runs/x"``) so the
    message says where the expected channel count comes from.
    """
    if not data.series:
        raise SensorDataError("no series to use")
    if data.channels != channels:
        raise SensorDataError(f"{data.sources[0]}: the data has {data.channels} channel(s), but {expected_by} "
                              f"expects {channels} (model.frontend.in_channels)")
    short = [i for i, n in enumerate(data.lengths) if n < min_length]
    if short:
        listed = ", ".join(f"{data.sources[i]} ({data.series[i].shape[1]} steps)" for i in short[:5])
        more = f" and {len(short) - 5} more" if len(short) > 5 else ""
        raise SensorDataError(
            f"{len(short)} series shorter than the front end's receptive field of {min_length} samples "
            f"(model.frontend.conv_layers): {listed}{more}. Drop or pad them, or use smaller "
            f"kernels/strides")


def _finite_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def label_names(labels: list[str]) -> list[str]:
    """Sorted distinct labels; numerically when they all are numbers (so ``2`` comes before ``10``)."""
    distinct = set(labels)
    if all(_finite_number(x) for x in distinct):
        return sorted(distinct, key=lambda x: (float(x), x))
    return sorted(distinct)


# ------------------------------------------------------------------------------------------ batching


@dataclass
class SensorBatch:
    """A padded batch of series."""

    series: Tensor
    """(B, C, T) float32, NaN where missing, 0 beyond each length."""
    lengths: Tensor
    """(B,) valid time steps."""
    targets: Tensor | None
    """(B,) class indices, or None when unlabelled."""


def time_stretch(series: np.ndarray, factor: float) -> np.ndarray:
    """``series`` (C, T) resampled to round(T * factor) steps (at least 1) by linear interpolation
    on a grid spanning the same first and last step: the same motion performed faster (factor < 1)
    or slower. NaNs spread to the steps interpolated from them (the encoder imputes them)."""
    channels, steps = series.shape
    target = max(1, round(steps * factor))
    if target == steps:
        return series
    grid = np.linspace(0.0, steps - 1.0, target) if target > 1 else np.zeros(1)
    left = np.minimum(np.floor(grid).astype(np.int64), steps - 1)
    right = np.minimum(left + 1, steps - 1)
    w = (grid - left).astype(np.float32)
    return (series[:, left] * (1.0 - w) + series[:, right] * w).astype(series.dtype, copy=False)


def random_time_stretch(series: list[np.ndarray], amount: float, key: Sequence[int]) -> list[np.ndarray]:
    """Each series :func:`time_stretch`-ed by its own factor, drawn log-uniformly from
    [1 / (1 + amount), 1 + amount] by a generator seeded with ``key`` (so a pure function of it);
    ``amount`` 0 returns ``series`` as is."""
    if amount <= 0:
        return series
    rng = np.random.default_rng(list(key))
    factors = np.exp(rng.uniform(-math.log1p(amount), math.log1p(amount), len(series)))
    return [time_stretch(x, float(f)) for x, f in zip(series, factors)]


def collate(series: list[np.ndarray], targets: list[int] | None = None) -> SensorBatch:
    """Pad ``(C, T_i)`` arrays at the end into one batch."""
    out, lengths = pad_stack(series)
    return SensorBatch(torch.from_numpy(out), torch.from_numpy(lengths),
                       None if targets is None else torch.tensor(targets, dtype=torch.long))


def batch_order(lengths: np.ndarray, batch_size: int, *, seed: int, epoch: int) -> list[np.ndarray]:
    """Batches of indices for one epoch, a pure function of (seed, epoch).

    Items are shuffled, sorted by length within chunks of 8 batches (less padding), cut into
    batches, and the batches shuffled. ``batch_size`` larger than the set gives one batch.
    """
    batches = shuffled_buckets(lengths, seed=seed, epoch=epoch, chunk=batch_size * 8, max_batch_size=batch_size)
    return [np.array(b, dtype=np.int64) for b in batches]


def draw_per_class(data: SeriesSet, k: int, seed: int) -> np.ndarray:
    """Indices of all series of ``k`` recordings per class drawn at random (all recordings of a class
    when it has ``k`` or fewer, or when ``k = 0``). Deterministic given ``seed``."""
    if data.labels is None:
        raise SensorDataError("drawing examples per class needs labels")
    rng = np.random.default_rng(seed)
    group_label: dict[int, str] = {}
    for g, lab in zip(data.groups, data.labels):
        group_label.setdefault(g, lab)
    chosen: set[int] = set()
    for name in label_names(list(group_label.values())):
        members = np.array(sorted(g for g, lab in group_label.items() if lab == name))
        take = members if k <= 0 or k >= len(members) else rng.choice(members, k, replace=False)
        chosen.update(int(g) for g in take)
    return np.array([i for i, g in enumerate(data.groups) if g in chosen], dtype=np.int64)
