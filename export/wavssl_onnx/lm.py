"""N-gram language model with interpolated Kneser-Ney smoothing, in plain Python.

Tokens are characters (``level="char"``: a line is its characters, words separated by single
spaces, and the space is a token) or words (``level="word"``: a line is its whitespace-separated
words). Each sentence is padded with ``order - 1`` start tokens ``<s>`` and ends with ``</s>``.

Smoothing is interpolated Kneser-Ney (Chen & Goodman) with one absolute discount per order:

    P_k(w | h) = max(c_k(h, w) - D_k, 0) / C_k(h) + D_k * N_k(h) / C_k(h) * P_{k-1}(w | h[1:])

where ``c_k`` is the raw count at the highest order and the continuation count (the number of
distinct tokens seen just before ``h w``) at lower orders, ``C_k(h) = sum_w c_k(h, w)``,
``N_k(h)`` the number of distinct ``w`` after ``h``, and ``P_0`` is uniform over the vocabulary. A
history never seen at order ``k`` uses ``P_{k-1}`` unchanged. ``D_k = n1 / (n1 + 2 n2)`` from the
number of k-grams with count 1 and 2, clipped to [0.1, 0.9] (0.5 when there are none). The
vocabulary is the training tokens plus ``</s>`` and ``<unk>`` (``<unk>`` gets only the uniform
share; unseen tokens are scored as ``<unk>``), so for any history the probabilities over the
vocabulary sum to 1.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .fileio import atomic_write_text

BOS = "<s>"
"""Sentence-start token (history padding only; never predicted)."""
EOS = "</s>"
"""Sentence-end token."""
UNK = "<unk>"
"""Token that stands for every token not seen in training."""
LEVELS = ("char", "word")
"""Token levels: characters (space is a token) or whitespace-separated words."""

_FORMAT = "wavssl-ngram-lm"
_MIN_DISCOUNT, _MAX_DISCOUNT = 0.1, 0.9
_FALLBACK_DISCOUNT = 0.5

NGramCounts = dict[tuple[str, ...], dict[str, int]]
"""Counts of one order: history (k - 1 tokens) -> next token -> count."""


def tokenize(line: str, level: str) -> list[str]:
    """Tokens of ``line``: its characters with whitespace collapsed to single spaces (``char``), or
    its whitespace-separated words (``word``)."""
    if level == "char":
        return list(" ".join(line.split()))
    if level == "word":
        return line.split()
    raise ValueError(f"level must be one of {LEVELS}, got {level!r}")


def _discount(counts: NGramCounts) -> float:
    """Kneser-Ney discount ``n1 / (n1 + 2 n2)`` of one order, clipped to [0.1, 0.9]; 0.5 when no
    n-gram has count 1 or 2."""
    histogram = Counter(c for table in counts.values() for c in table.values() if c <= 2)
    n1, n2 = histogram[1], histogram[2]
    estimate = n1 / (n1 + 2 * n2) if n1 + n2 else _FALLBACK_DISCOUNT
    return min(max(estimate, _MIN_DISCOUNT), _MAX_DISCOUNT)


@dataclass
class NGramLM:
    """Interpolated Kneser-Ney n-gram LM; build it with ``from_lines`` or ``from_text_file``."""

    order: int
    """N of the n-grams (1 = unigram)."""
    level: str
    """``char`` or ``word``."""
    vocab: tuple[str, ...]
    """Every token the model predicts: the training tokens, ``</s>`` and ``<unk>``, sorted."""
    discounts: tuple[float, ...]
    """``D_k`` for k = 1 .. order."""
    counts: tuple[NGramCounts, ...]
    """``c_k`` for k = 1 .. order (continuation counts below the highest order)."""
    _vocab_set: frozenset[str] = field(init=False, repr=False, compare=False)
    _totals: tuple[dict[tuple[str, ...], tuple[int, int]], ...] = field(init=False, repr=False, compare=False)
    _cache: dict[tuple[tuple[str, ...], str], float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.order < 1:
            raise ValueError(f"order must be >= 1, got {self.order}")
        if self.level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {self.level!r}")
        if len(self.discounts) != self.order or len(self.counts) != self.order:
            raise ValueError(
                f"an order-{self.order} LM needs {self.order} discounts and count tables, "
                f"got {len(self.discounts)} and {len(self.counts)}"
            )
        if EOS not in self.vocab or UNK not in self.vocab or BOS in self.vocab:
            raise ValueError(f"vocab must contain {EOS!r} and {UNK!r} and not {BOS!r}")
        self._vocab_set = frozenset(self.vocab)
        self._totals = tuple(
            {h: (sum(table.values()), len(table)) for h, table in counts.items()} for counts in self.counts
        )
        self._cache = {}

    @classmethod
    def from_lines(cls, lines: Iterable[str], order: int = 3, level: str = "char") -> NGramLM:
        """Estimate an LM from text lines (blank lines are skipped)."""
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        raw: list[defaultdict[tuple[str, ...], Counter[str]]] = [defaultdict(Counter) for _ in range(order)]
        tokens_seen: set[str] = set()
        for line in lines:
            tokens = tokenize(line, level)
            if not tokens:
                continue
            tokens_seen.update(tokens)
            padded = [BOS] * (order - 1) + tokens + [EOS]
            for i in range(order - 1, len(padded)):
                for k in range(1, order + 1):
                    raw[k - 1][tuple(padded[i - k + 1 : i])][padded[i]] += 1
        if not tokens_seen:
            raise ValueError("cannot estimate an n-gram LM from text without tokens")
        if BOS in tokens_seen:
            raise ValueError(f"training text must not contain the reserved token {BOS!r}")
        counts: list[NGramCounts] = []
        for k in range(1, order):
            continuation: defaultdict[tuple[str, ...], Counter[str]] = defaultdict(Counter)
            for history, table in raw[k].items():
                for token in table:
                    continuation[history[1:]][token] += 1
            counts.append({h: dict(t) for h, t in continuation.items()})
        counts.append({h: dict(t) for h, t in raw[order - 1].items()})
        vocab = tuple(sorted(tokens_seen | {EOS, UNK}))
        return cls(order, level, vocab, tuple(_discount(c) for c in counts), tuple(counts))

    @classmethod
    def from_text_file(cls, path: str | os.PathLike[str], order: int = 3, level: str = "char") -> NGramLM:
        """Estimate an LM from a UTF-8 text file, one sentence per line."""
        with open(path, encoding="utf-8") as f:
            return cls.from_lines(f, order=order, level=level)

    def tokenize(self, line: str) -> list[str]:
        """Tokens of ``line`` at this LM's level."""
        return tokenize(line, self.level)

    def score(self, history: Sequence[str], token: str) -> float:
        """Natural-log probability of ``token`` after ``history``.

        Args:
            history: the tokens of the sentence so far (from its start; ``<s>`` padding is added).
                Tokens outside the vocabulary count as ``<unk>``.
            token: the next token, ``</s>`` to end the sentence; an unseen token is scored as ``<unk>``.
        """
        if token == BOS:
            raise ValueError(f"token {BOS!r} is never predicted; it only pads histories")
        n = self.order - 1
        recent = history[-n:] if n else ()
        context = tuple(t if t in self._vocab_set or t == BOS else UNK for t in recent)
        context = (BOS,) * (n - len(context)) + context
        word = token if token in self._vocab_set else UNK
        key = (context, word)
        cached = self._cache.get(key)
        if cached is None:
            cached = math.log(self._probability(context, word))
            self._cache[key] = cached
        return cached

    def _probability(self, context: tuple[str, ...], token: str) -> float:
        """Interpolated KN probability of ``token`` after ``context`` (``order - 1`` tokens)."""
        p = 1.0 / len(self.vocab)
        for k in range(1, self.order + 1):
            history = context[len(context) - (k - 1) :]
            table = self.counts[k - 1].get(history)
            if table is None:
                continue
            total, types = self._totals[k - 1][history]
            discount = self.discounts[k - 1]
            p = max(table.get(token, 0) - discount, 0.0) / total + discount * types / total * p
        return p

    def sentence_logprob(self, line: str) -> float:
        """Natural-log probability of a whole sentence, ``</s>`` included."""
        tokens = self.tokenize(line)
        return sum(self.score(tokens[:i], t) for i, t in enumerate(tokens)) + self.score(tokens, EOS)

    def perplexity(self, lines: Iterable[str]) -> float:
        """Per-token perplexity over ``lines`` (each ``</s>`` counts as a token; blank lines skipped)."""
        total_logprob, total_tokens = 0.0, 0
        for line in lines:
            tokens = self.tokenize(line)
            if tokens:
                total_logprob += self.sentence_logprob(line)
                total_tokens += len(tokens) + 1
        if total_tokens == 0:
            raise ValueError("perplexity needs at least one non-blank line")
        return math.exp(-total_logprob / total_tokens)

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable content; counts of order k are rows ``[*history, token, count]``."""
        return {
            "format": _FORMAT,
            "order": self.order,
            "level": self.level,
            "vocab": list(self.vocab),
            "discounts": list(self.discounts),
            "counts": [
                [[*h, t, c] for h, table in sorted(counts.items()) for t, c in sorted(table.items())]
                for counts in self.counts
            ],
        }

    @classmethod
    def from_dict(cls, data: object) -> NGramLM:
        """LM from ``to_dict`` content; raises ``ValueError`` naming the bad field."""
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError(f"not a {_FORMAT} object (missing or wrong 'format')")
        try:
            order, level = int(data["order"]), str(data["level"])
            vocab = tuple(str(t) for t in data["vocab"])
            discounts = tuple(float(d) for d in data["discounts"])
            rows_by_order = list(data["counts"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"bad or missing field: {e!r}") from e
        counts: list[NGramCounts] = []
        for k, rows in enumerate(rows_by_order, start=1):
            table: NGramCounts = {}
            for row in rows:
                if not isinstance(row, list) or len(row) != k + 1 or not isinstance(row[-1], int):
                    raise ValueError(f"order-{k} count row must be [{k} tokens, count], got {row!r}")
                table.setdefault(tuple(row[: k - 1]), {})[row[k - 1]] = row[k]
            counts.append(table)
        return cls(order, level, vocab, discounts, tuple(counts))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the LM as JSON, atomically (temp file + rename)."""
        atomic_write_text(path, json.dumps(self.to_dict(), ensure_ascii=False))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NGramLM:
        """Read an LM written by ``save``; errors name the file."""
        target = Path(path)
        try:
            data = json.loads(target.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{target}: not a valid JSON n-gram LM file: {e}") from e
        try:
            return cls.from_dict(data)
        except ValueError as e:
            raise ValueError(f"{target}: invalid n-gram LM: {e}") from e


def load_lm(path: str | os.PathLike[str], *, language: str | None = None, order: int = 4,
            level: str = "char") -> NGramLM:
    """An LM from ``path``: a saved model (``.json``), or a text file (one sentence per line) whose
    lines are normalised for ``language`` and estimated into an ``order``-gram ``level`` LM."""
    from .text import normalize_text

    if str(path).endswith(".json"):
        return NGramLM.load(path)
    with open(path, encoding="utf-8") as f:
        lines = [normalize_text(line, language or None) for line in f.read().splitlines()]
    return NGramLM.from_lines([x for x in lines if x], order=order, level=level)

