"""The Sensor tab's work: series files through a :class:`wavssl_onnx.Classifier`.

Files are read with the runtime's reader (``.npy``, ``.npz``, ``.csv``, ``.tsv``); ``.ts`` files
(aeon/sktime) with wavssl's, which needs the full wavssl install (it imports torch).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from wavssl_onnx.classifier import SeriesError, load_series

SERIES_SUFFIXES = (".npy", ".npz", ".csv", ".tsv", ".ts")


@dataclass
class Classified:
    """A file's series and their class probabilities."""

    source: str
    series: list[np.ndarray]
    """(C, T_i) float32 each (NaN = missing)."""
    probabilities: np.ndarray
    """(N, K) class probabilities."""
    class_names: list[str]
    labels: list[str] | None = None
    """Labels stored in the file (``.ts`` class column), if any."""

    def top(self, i: int) -> dict[str, float]:
        """Series ``i``'s probabilities by class name (for ``gr.Label``)."""
        return {n: float(p) for n, p in zip(self.class_names, self.probabilities[i])}

    def rows(self) -> list[list[Any]]:
        """One table row per series: number, length, predicted class, its probability, stored label."""
        out = []
        for i, (s, p) in enumerate(zip(self.series, self.probabilities)):
            k = int(p.argmax())
            out.append([i, s.shape[1], self.class_names[k], round(float(p[k]), 3),
                        self.labels[i] if self.labels else ""])
        return out


def read_series(path: str | os.PathLike[str]) -> tuple[list[np.ndarray], list[str] | None]:
    """(C, T) float32 series in a file, and labels if the file stores them (``.ts``)."""
    p = Path(path)
    if p.suffix.lower() not in SERIES_SUFFIXES:
        raise SeriesError(f"{p.name}: unsupported series file (use {', '.join(SERIES_SUFFIXES)})")
    if p.suffix.lower() != ".ts":
        return load_series(p), None
    try:
        from wavssl.data.sensor import SensorDataError
        from wavssl.data.sensor import load_series as load_ts
    except ImportError as e:
        raise SeriesError(f"{p.name}: .ts files need wavssl (pip install wavssl); use .npy or .csv") from e
    try:
        data = load_ts(p)
    except SensorDataError as e:
        raise SeriesError(str(e)) from e
    return data.series, data.labels


def classify_file(classifier: Any, path: str | os.PathLike[str], max_series: int,
                  name: str | None = None) -> Classified:
    """Read a series file and classify (at most ``max_series`` of) its series with ``classifier``."""
    series, labels = read_series(path)
    if not series:
        raise SeriesError(f"{name or Path(path).name}: no series in the file")
    if len(series) > max_series:
        raise SeriesError(f"{name or Path(path).name}: {len(series)} series; this demo classifies at most "
                          f"{max_series} per file")
    probs = classifier.predict(series)
    return Classified(name or Path(path).name, series, probs, list(classifier.class_names), labels)
