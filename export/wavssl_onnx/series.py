"""Series files -> (C, T) float32 arrays: the one reader of training (``wavssl.data.sensor``) and the
runtime (:class:`wavssl_onnx.Classifier`, ``wavssl-onnx classify``, the demo), so a file gives the same
array on both sides. NaN marks a missing sample. Formats:

- ``.npy``: ``(N, C, T)`` is N series; ``(C, T)`` is one recording; ``(T,)`` one univariate one.
  Object (pickled) arrays are refused: store a list of ``(C, T_i)`` arrays with
  ``np.savez(path, *arrays)`` instead.
- ``.npz``: with an ``X`` (or ``x``) array, that array as above (labels from a ``y`` or ``labels``
  array if present); otherwise every array, in ``arr_0, arr_1, ...`` order, is one ``(C, T)`` or
  ``(T,)`` recording.
- ``.csv`` (``.tsv`` / ``.txt`` too; tab-separated for ``.tsv`` or a first line holding a tab): one
  recording per file, columns = channels, one row per time step; an optional header row, and an
  optional time column (named ``time``, ``timestamp``, ``t``, ``seconds`` or ``time_s``, numeric
  seconds): the channels are then linearly interpolated onto a uniform grid at the sample rate (a
  model's input rate), starting at the first time. Empty cells and ``?``/``nan``/``NA``/``null``/
  ``none`` are missing.
- ``.ts``: the text format aeon and sktime write (``@`` header lines, ``@data``, ``:`` between
  dimensions, ``,`` between values, ``?`` for missing, optional ``(time,value)`` tuples whose
  times are ignored, and the class label as the last field when ``@classLabel true``). Dimensions
  of unequal length within one series are padded at the end with NaN (missing).
"""

from __future__ import annotations

import csv
import math
import os
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np

SERIES_EXTENSIONS: frozenset[str] = frozenset({".npy", ".npz", ".csv", ".ts"})
"""Suffixes read as series when scanning a folder (``.tsv`` there is a labels table)."""
FILE_EXTENSIONS: frozenset[str] = SERIES_EXTENSIONS | {".tsv", ".txt"}
"""Suffixes :func:`read_series` accepts for a single file."""

TIME_COLUMNS = frozenset({"time", "timestamp", "t", "seconds", "time_s"})
"""Header names of a CSV time column (seconds)."""
MAX_GRID_STEPS = 1 << 26
"""Longest time grid a CSV with a time column is interpolated onto (about 7.8 days at 100 Hz)."""
MISSING = frozenset({"", "?", "nan", "na", "n/a", "null", "none"})
"""Cell texts (lower-cased, stripped) read as a missing sample."""
_GRID_TOLERANCE = 1e-6
"""Steps of rounding forgiven when a time span is cut into grid steps (0.57 s x 100 Hz = 56.99999...)."""


class SeriesError(ValueError):
    """A series file cannot be used; the message names the file (and line) and the problem."""


def _as_series(a: np.ndarray, where: str) -> np.ndarray:
    """A (C, T) or (T,) numeric array as (C, T) float32."""
    if a.dtype.kind not in "biuf":
        raise SeriesError(f"{where}: expected numbers, got an array of dtype {a.dtype}")
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[1] == 0:
        raise SeriesError(f"{where}: expected a (channels, time) or (time,) array, got shape {a.shape}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _split_array(a: np.ndarray, where: str) -> list[np.ndarray]:
    """(N, C, T) -> N series; (C, T) or (T,) -> one."""
    if a.ndim == 3:
        return [_as_series(x, f"{where}[{i}]") for i, x in enumerate(a)]
    return [_as_series(a, where)]


def _archive_order(key: str) -> tuple[int, str]:
    """Sort key of an .npz entry: ``arr_2`` before ``arr_10``, named entries after."""
    m = re.fullmatch(r"arr_(\d+)", key)
    return (int(m.group(1)), "") if m else (1 << 30, key)


def _numpy_arrays(path: Path) -> tuple[list[np.ndarray], list[str] | None]:
    """Series (and ``y`` / ``labels`` of an ``X`` archive) of an .npy / .npz file; numpy's errors pass."""
    data = np.load(path, allow_pickle=False)
    if isinstance(data, np.ndarray):
        return _split_array(data, str(path)), None
    with data:
        keys = list(data.keys())
        if "X" in keys or "x" in keys:
            key = "X" if "X" in keys else "x"
            series = _split_array(data[key], f"{path}:{key}")
            label_key = next((k for k in ("y", "labels") if k in keys), None)
            labels = None if label_key is None else [str(v) for v in data[label_key].reshape(-1)]
            if labels is not None and len(labels) != len(series):
                raise SeriesError(f"{path}: {len(labels)} labels in {label_key!r} for {len(series)} series")
            return series, labels
        return [_as_series(data[k], f"{path}:{k}") for k in sorted(keys, key=_archive_order)], None


def _load_numpy(path: Path) -> tuple[list[np.ndarray], list[str] | None]:
    """:func:`_numpy_arrays` with numpy's and zipfile's errors as a SeriesError naming the file."""
    try:
        return _numpy_arrays(path)
    except SeriesError:
        raise
    except ValueError as e:
        raise SeriesError(f"{path}: cannot read ({e}); a list of series of different lengths must be saved "
                          f"with np.savez(path, *arrays), not as a pickled object array") from e
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise SeriesError(f"{path}: cannot read: {e}") from e


def parse_float(cell: str, where: str) -> float:
    """A table cell as a float; :data:`MISSING` texts are NaN, anything else non-numeric raises."""
    text = cell.strip()
    if text.lower() in MISSING:
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise SeriesError(f"{where}: {cell!r} is not a number") from None


def _is_number(cell: str) -> bool:
    try:
        parse_float(cell, "")
        return True
    except SeriesError:
        return False


def _table_rows(path: Path) -> list[list[str]]:
    """Non-blank rows of a CSV/TSV file (tab-separated for ``.tsv`` or a first line with a tab)."""
    try:
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        tab = path.suffix.lower() == ".tsv" or (bool(lines) and "\t" in lines[0])
        return [r for r in csv.reader(lines, delimiter="\t" if tab else ",") if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise SeriesError(f"{path}: cannot read CSV: {e}") from e


def _grid(times: np.ndarray, sample_rate: float, where: str) -> np.ndarray:
    """(S,) seconds of a uniform grid at ``sample_rate`` from ``times[0]`` to ``times[-1]``."""
    span = float(times[-1]) - float(times[0])  # inf when it overflows
    cells = span * sample_rate + _GRID_TOLERANCE
    if not cells < MAX_GRID_STEPS:
        raise SeriesError(f"{where}: the time column spans {span:g} s, more than "
                          f"{MAX_GRID_STEPS} steps at {sample_rate:g} Hz; is it in seconds?")
    grid: np.ndarray = times[0] + np.arange(math.floor(cells) + 1) / sample_rate
    return grid


def _on_grid(values: np.ndarray, time_col: int, name: str, sample_rate: float, where: str) -> np.ndarray:
    """(T, 1 + C) rows with a time column -> (C, S) channels linearly interpolated onto the grid."""
    times = values[:, time_col]
    channels = np.delete(values, time_col, axis=1).T  # (C, T)
    if channels.shape[0] == 0:
        raise SeriesError(f"{where}: only a time column, no channels")
    if not np.isfinite(times).all() or (times[1:] <= times[:-1]).any():  # no subtraction: +-1e308 cannot overflow
        raise SeriesError(f"{where}: the time column {name!r} must hold increasing seconds")
    grid = _grid(times, sample_rate, where)
    out = np.full((channels.shape[0], grid.shape[0]), np.nan)
    for c, ch in enumerate(channels):
        seen = np.isfinite(ch)
        if seen.any():  # gaps are bridged by the interpolation; a channel never observed stays missing
            out[c] = np.interp(grid, times[seen], ch[seen])
    return out


def _load_csv(path: Path, sample_rate: float) -> np.ndarray:
    """One recording: columns = channels (+ optional time column) -> (C, T) float32."""
    rows = _table_rows(path)
    if not rows:
        raise SeriesError(f"{path}: empty file")
    header: list[str] | None = None
    if not all(_is_number(c) for c in rows[0]):
        header, rows = [c.strip().lower() for c in rows[0]], rows[1:]
    if not rows:
        raise SeriesError(f"{path}: a header but no data rows")
    first = 2 if header else 1
    width = len(header) if header is not None else len(rows[0])
    for n, r in enumerate(rows, start=first):
        if len(r) != width:
            raise SeriesError(f"{path}: line {n} has {len(r)} columns, expected {width}")
    values = np.array([[parse_float(c, f"{path}: line {n}, column {j + 1}") for j, c in enumerate(r)]
                       for n, r in enumerate(rows, start=first)], dtype=np.float64)
    time_col = next((j for j, name in enumerate(header or []) if name in TIME_COLUMNS), None)
    if time_col is None or header is None:
        return _as_series(values.T, str(path))
    return _as_series(_on_grid(values, time_col, header[time_col], sample_rate, str(path)), str(path))


_TUPLE = re.compile(r"\(([^()]*),([^(),]*)\)")


def _split_fields(line: str) -> list[str]:
    """Split a .ts data line at ``:`` outside parentheses (timestamps may contain colons)."""
    fields, depth, start = [], 0, 0
    for i, ch in enumerate(line):
        depth += (ch == "(") - (ch == ")")
        if ch == ":" and depth == 0:
            fields.append(line[start:i])
            start = i + 1
    fields.append(line[start:])
    return fields


def _ts_header(lines: list[str], path: Path) -> tuple[dict[str, str], int]:
    """The ``@key value`` header of a .ts file (keys lower-cased) and the index of the first data line."""
    meta: dict[str, str] = {}
    for n, raw in enumerate(lines):
        line = raw.strip()
        if not line or line[0] in "#%":
            continue
        if not line.startswith("@"):
            raise SeriesError(f"{path}: line {n + 1}: data before the @data line")
        key, _, value = line[1:].partition(" ")
        if key.lower() == "data":
            return meta, n + 1
        meta[key.lower()] = value.strip()
    raise SeriesError(f"{path}: no @data line (not a .ts file?)")


def _ts_dimensions(fields: list[str], timestamps: bool, where: str) -> np.ndarray:
    """The value fields of one .ts series -> (C, T) float32, shorter dimensions NaN-padded at the end."""
    dims = []
    for field in fields:
        cells = [m.group(2) for m in _TUPLE.finditer(field)] if timestamps else field.split(",")
        dims.append(np.array([parse_float(c, where) for c in cells], dtype=np.float32))
    longest = max(len(d) for d in dims)
    if longest == 0:
        raise SeriesError(f"{where}: an empty series")
    arr = np.full((len(dims), longest), np.nan, dtype=np.float32)
    for c, d in enumerate(dims):
        arr[c, : len(d)] = d
    return arr


def _load_ts(path: Path) -> tuple[list[np.ndarray], list[str] | None]:
    """Series and labels of a .ts file (aeon / sktime text format)."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SeriesError(f"{path}: cannot read: {e}") from e
    meta, start = _ts_header(lines, path)
    class_spec = meta.get("classlabel", "false").split()
    has_class = bool(class_spec) and class_spec[0].lower() == "true"
    has_target = meta.get("targetlabel", "false").split()[:1] == ["true"]
    declared = set(class_spec[1:]) if has_class else set()
    timestamps = meta.get("timestamps", "false").lower() == "true"
    dims_text = meta.get("dimensions", "")
    dims_expected = int(dims_text) if dims_text.isascii() and dims_text.isdigit() else None
    series, labels = [], []
    for n in range(start, len(lines)):
        line = lines[n].strip()
        if not line or line[0] in "#%":
            continue
        where = f"{path}: line {n + 1}"
        fields = _split_fields(line) if timestamps else line.split(":")
        if has_class or has_target:
            label, fields = fields[-1].strip(), fields[:-1]
            if has_class and declared and label not in declared:
                raise SeriesError(f"{where}: class {label!r} is not declared in @classLabel")
            labels.append(label)
        if not fields:
            raise SeriesError(f"{where}: a label but no values")
        if dims_expected is not None and len(fields) != dims_expected:
            raise SeriesError(f"{where}: {len(fields)} dimensions, @dimensions says {dims_expected}")
        series.append(_ts_dimensions(fields, timestamps, where))
    if not series:
        raise SeriesError(f"{path}: no series after @data")
    channels = {s.shape[0] for s in series}
    if len(channels) > 1:
        raise SeriesError(f"{path}: series have different numbers of dimensions {sorted(channels)}")
    return series, (labels if has_class else None)


def read_series(path: str | os.PathLike[str], sample_rate: float) -> tuple[list[np.ndarray], list[str] | None]:
    """The series of one file (see the module docstring) and the labels it stores, if any.

    Args:
        path: ``.npy`` / ``.npz`` / ``.csv`` / ``.tsv`` / ``.txt`` / ``.ts`` file.
        sample_rate: Hz, the grid a CSV with a time column is interpolated onto.
    Returns:
        (C, T_i) float32 arrays (NaN = missing), and one label per series (``.ts`` class column,
        ``.npz`` ``y``) or None.
    Raises:
        SeriesError: naming the file and the problem.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in FILE_EXTENSIONS:
        raise SeriesError(f"{p}: unsupported series file (use {', '.join(sorted(FILE_EXTENSIONS))})")
    if not p.is_file():
        raise SeriesError(f"{p}: no such file")
    if suffix in (".npy", ".npz"):
        return _load_numpy(p)
    if suffix == ".ts":
        return _load_ts(p)
    return [_load_csv(p, sample_rate)], None
