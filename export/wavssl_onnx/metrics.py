"""Word and character error rates (corpus level) from Levenshtein alignments.

Conventions:

- WER units are whitespace-separated words. CER units are characters *including* the space between
  words, after whitespace runs are collapsed to one space and leading/trailing whitespace removed
  (``"a  b"`` has the 3 units ``a``, `` ``, ``b``).
- Rates are corpus level: the sum of edits over all utterances divided by the sum of reference units
  (not the mean of per-utterance rates).
- An empty hypothesis for a non-empty reference is all deletions (rate 1.0). An empty reference with
  a non-empty hypothesis contributes its insertions. When the whole corpus has 0 reference units the
  rate is ``inf`` if there is any insertion and 0.0 when the hypotheses are empty too.
- Text is compared as given (any script; Cyrillic and Czech work): normalise both sides first with
  ``wavssl_onnx.text.normalize_text`` so case and punctuation do not count as errors.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EditCounts:
    """Minimum edits turning a reference into a hypothesis, by kind."""

    substitutions: int
    deletions: int
    insertions: int

    @property
    def edits(self) -> int:
        """Total edits (the Levenshtein distance)."""
        return self.substitutions + self.deletions + self.insertions


@dataclass(frozen=True)
class ErrorRate:
    """A corpus-level error rate and its parts."""

    rate: float
    """``edits / ref_units``; ``inf`` or 0.0 when ``ref_units`` is 0 (see the module docstring)."""
    edits: int
    """Substitutions + deletions + insertions."""
    ref_units: int
    """Reference words (WER) or characters (CER) in the corpus."""
    substitutions: int
    deletions: int
    insertions: int


def _distance_matrix(ref: np.ndarray, hyp: np.ndarray) -> np.ndarray:
    """Levenshtein DP table ``(N + 1, M + 1)`` of integer sequences ``ref (N,)`` and ``hyp (M,)``.

    Each row is computed at once: the substitution/deletion candidates first, then insertions along
    the row as a running minimum of ``candidate[k] + (j - k)``.
    """
    n, m = len(ref), len(hyp)
    columns = np.arange(m + 1, dtype=np.int64)
    table = np.empty((n + 1, m + 1), dtype=np.int64)
    table[0] = columns
    for i in range(1, n + 1):
        above = table[i - 1]
        candidate = np.empty(m + 1, dtype=np.int64)
        candidate[0] = i
        candidate[1:] = np.minimum(above[1:] + 1, above[:-1] + (hyp != ref[i - 1]))
        table[i] = np.minimum.accumulate(candidate - columns) + columns
    return table


def edit_ops(ref_units: Sequence[Hashable], hyp_units: Sequence[Hashable]) -> EditCounts:
    """Levenshtein alignment of two unit sequences with the substitution/deletion/insertion counts.

    Args:
        ref_units: reference units ``(N,)`` (words, characters, token ids: anything hashable).
        hyp_units: hypothesis units ``(M,)``.

    Among alignments with the minimum number of edits, the backtrace prefers a match or
    substitution, then a deletion, then an insertion.
    """
    ids: dict[Hashable, int] = {}
    ref = np.array([ids.setdefault(u, len(ids)) for u in ref_units], dtype=np.int64)
    hyp = np.array([ids.setdefault(u, len(ids)) for u in hyp_units], dtype=np.int64)
    table = _distance_matrix(ref, hyp)
    i, j = len(ref), len(hyp)
    substitutions = deletions = insertions = 0
    while i > 0 or j > 0:
        if i > 0 and j > 0 and table[i, j] == table[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]):
            substitutions += int(ref[i - 1] != hyp[j - 1])
            i, j = i - 1, j - 1
        elif i > 0 and table[i, j] == table[i - 1, j] + 1:
            deletions += 1
            i -= 1
        else:
            insertions += 1
            j -= 1
    return EditCounts(substitutions, deletions, insertions)


def _words(text: str) -> list[str]:
    """WER units: whitespace-separated words."""
    return text.split()


def _chars(text: str) -> list[str]:
    """CER units: characters, with one space between words."""
    return list(" ".join(text.split()))


def _error_rate(refs: Sequence[str], hyps: Sequence[str], units: Callable[[str], list[str]]) -> ErrorRate:
    """Corpus-level error rate of ``hyps`` against ``refs`` with ``units`` splitting each text."""
    for name, texts in (("refs", refs), ("hyps", hyps)):
        if isinstance(texts, str):
            raise TypeError(f"{name} must be a sequence of strings (one per utterance), got a single str")
    if len(refs) != len(hyps):
        raise ValueError(f"refs and hyps must have the same length, got {len(refs)} and {len(hyps)}")
    substitutions = deletions = insertions = ref_units = 0
    for ref, hyp in zip(refs, hyps, strict=True):
        ref_seq = units(ref)
        counts = edit_ops(ref_seq, units(hyp))
        substitutions += counts.substitutions
        deletions += counts.deletions
        insertions += counts.insertions
        ref_units += len(ref_seq)
    edits = substitutions + deletions + insertions
    if ref_units:
        rate = edits / ref_units
    else:
        rate = float("inf") if edits else 0.0
    return ErrorRate(rate, edits, ref_units, substitutions, deletions, insertions)


def wer(refs: Sequence[str], hyps: Sequence[str]) -> ErrorRate:
    """Corpus word error rate of ``hyps`` against ``refs`` (one string per utterance each)."""
    return _error_rate(refs, hyps, _words)


def cer(refs: Sequence[str], hyps: Sequence[str]) -> ErrorRate:
    """Corpus character error rate (spaces between words count as characters; see module docstring)."""
    return _error_rate(refs, hyps, _chars)
