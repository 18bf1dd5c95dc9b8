"""The Sensor tab's work: series files through a :class:`wavssl_onnx.Classifier`.

Files are read with the runtime's reader (``.npy``, ``.npz``, ``.csv``, ``.tsv``, ``.ts``), the one
training uses, at the model's sample rate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from wavssl_onnx.series import FILE_EXTENSIONS, SeriesError, read_series

SERIES_SUFFIXES = tuple(sorted(FILE_EXTENSIONS))
"""Series files the Sensor tab accepts: every kind the runtime's reader reads."""


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


def classify_file(classifier: Any, path: str | os.PathLike[str], max_series: int,
                  name: str | None = None) -> Classified:
    """Read a series file and classify (at most ``max_series`` of) its series with ``classifier``."""
    series, labels = read_series(path, classifier.info.sample_rate)
    if not series:
        raise SeriesError(f"{name or Path(path).name}: no series in the file")
    if len(series) > max_series:
        raise SeriesError(f"{name or Path(path).name}: {len(series)} series; this demo classifies at most "
                          f"{max_series} per file")
    probs = classifier.predict(series)
    return Classified(name or Path(path).name, series, probs, list(classifier.class_names), labels)
