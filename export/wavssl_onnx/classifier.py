"""Sequence classification (sensor series) with an exported classifier on ONNX Runtime (no PyTorch).

``Classifier.from_dir(MODEL_DIR).predict(series)`` gives class probabilities for (C, T) float arrays
(NaN = missing sample; the graph imputes them as the PyTorch model does). Series files
(``.npy``, ``.npz``, ``.csv``/``.tsv``, ``.ts``) are read by :func:`wavssl_onnx.series.read_series`,
the reader training uses, at the model's sample rate (a CSV time column is interpolated onto it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .batching import group_by_budget, pad_stack
from .model_dir import ModelInfo
from .series import SeriesError, read_series
from .session import open_model


@dataclass
class Prediction:
    """Class probabilities of one series."""

    source: str
    """File (with ``[i]`` for the i-th series of a stack)."""
    probabilities: np.ndarray | None = None
    """(K,) probabilities in class order."""
    label: str | None = None
    """Most probable class."""
    error: str | None = None

    def to_dict(self, class_names: Sequence[str]) -> dict[str, Any]:
        """JSON-ready: ``source``, ``label``, ``probabilities`` {class: p} - or ``error``."""
        if self.probabilities is None:
            return {"source": self.source, "error": self.error}
        return {"source": self.source, "label": self.label,
                "probabilities": {n: round(float(p), 6) for n, p in zip(class_names, self.probabilities)}}


def load_series(path: str | os.PathLike[str], sample_rate: float = 100.0) -> list[np.ndarray]:
    """The (C, T) float32 series in a file (``sample_rate``: Hz of a CSV time column's grid); raises
    SeriesError naming the file."""
    return read_series(path, sample_rate)[0]


class Classifier:
    """A sequence classifier on ONNX Runtime. Build it with :meth:`from_dir`."""

    def __init__(self, info: ModelInfo, session: Any, *, max_batch_size: int = 32) -> None:
        if info.class_names is None:
            raise ValueError("a classifier needs class names")
        self.info, self.session, self.max_batch_size = info, session, max_batch_size
        self.class_names: list[str] = list(info.class_names)

    @classmethod
    def from_dir(cls, model_dir: str | os.PathLike[str], *, threads: int | None = None, int8: bool = False,
                 spin: bool = False, max_batch_size: int = 32) -> Classifier:
        """Load an exported classifier (``threads``: intra-op threads; ``int8``: the quantized graph;
        ``spin``: busy-waiting worker threads). Raises ModelDirError naming a bad file."""
        info, session, _ = open_model(model_dir, "classify", threads=threads, int8=int8, spin=spin)
        return cls(info, session, max_batch_size=max_batch_size)

    def check(self, series: np.ndarray, name: str = "series") -> np.ndarray:
        """(C, T) float32 or a SeriesError naming the problem (channels, length)."""
        x = np.asarray(series, dtype=np.float32)
        if x.ndim == 1 and self.info.in_channels == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[0] != self.info.in_channels:
            raise SeriesError(f"{name}: expected ({self.info.in_channels} channels, time), got shape {x.shape}")
        if x.shape[1] < self.info.min_samples:
            raise SeriesError(f"{name}: {x.shape[1]} time steps; the model needs at least {self.info.min_samples}")
        if np.isinf(x).any():
            raise SeriesError(f"{name}: holds infinite values (missing samples are NaN)")
        if np.isnan(x).all():
            raise SeriesError(f"{name}: no observed value (every sample is NaN, i.e. missing): nothing to classify")
        return x

    def predict(self, series: Sequence[np.ndarray]) -> np.ndarray:
        """(N, K) class probabilities of (C, T_i) series (NaN = missing), batched by length."""
        xs = [self.check(s, f"series {i}") for i, s in enumerate(series)]
        out = np.zeros((len(xs), len(self.class_names)), dtype=np.float32)
        lengths = [x.shape[1] for x in xs]
        for group in group_by_budget(np.argsort(lengths, kind="stable"), lengths, None, self.max_batch_size):
            batch, counts = pad_stack([xs[i] for i in group])
            (log_probs,) = self.session.run(None, {self.info.inputs[0]: batch, self.info.inputs[1]: counts})
            out[group] = np.exp(log_probs)
        return out

    def run(self, paths: Sequence[str | os.PathLike[str]]) -> list[Prediction]:
        """Classify every series in every file; a bad file or series gives a :class:`Prediction` with
        ``error`` and the others still come out."""
        results: list[Prediction] = []
        for path in paths:
            try:
                found = load_series(path, self.info.sample_rate)
            except SeriesError as e:
                results.append(Prediction(str(path), error=str(e)))
                continue
            batch: list[tuple[Prediction, np.ndarray]] = []
            for i, s in enumerate(found):
                result = Prediction(str(path) if len(found) == 1 else f"{path}[{i}]")
                results.append(result)
                try:
                    batch.append((result, self.check(s, result.source)))
                except SeriesError as e:
                    result.error = str(e)
            if batch:
                for (result, _), probs in zip(batch, self.predict([x for _, x in batch])):
                    if not np.isfinite(probs).all():
                        result.error = (f"{result.source}: the model gave non-finite (NaN or infinite) "
                                        f"probabilities (a corrupt model file?)")
                        continue
                    result.probabilities, result.label = probs, self.class_names[int(probs.argmax())]
        return results
