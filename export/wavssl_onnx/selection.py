"""Decoding settings chosen on a dev split, then applied once to a test split.

The protocol every wavssl result follows: beam width, LM weight and word bonus are picked by the
lowest CER on held-out *dev* utterances; the test split is decoded afterwards with the chosen
setting only (and greedy, for reference). ``wavssl quickstart`` and ``benchmarks/ssl_benefit.py``
both call :func:`choose_decoding_on_dev` and :func:`score`.

- :class:`Setting`: one point of the grid; ``lm_weight == 0`` means greedy decoding (no search).
- :func:`decode_texts`: ``(T_i, V)`` log-probabilities -> normalised hypothesis texts.
- :func:`score`: hypotheses of one setting against references -> :class:`Scores` (CER, WER).
- :func:`choose_decoding_on_dev`: every setting of the grid on dev -> :class:`DevChoice`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .decoding import Hypothesis, beam_search, greedy_decode
from .lm import NGramLM
from .metrics import cer, wer
from .text import normalize_text
from .vocab import Vocabulary


@dataclass(frozen=True, order=True)
class Setting:
    """One decoding setting; ``lm_weight == 0`` is greedy decoding (beam and bonus unused)."""

    lm_weight: float = 0.0
    """Weight of the n-gram LM in the beam search; 0: greedy, no LM."""
    word_bonus: float = 0.0
    """Added per word in the beam search."""
    beam: int = 8
    """Prefixes kept per frame."""

    @property
    def greedy(self) -> bool:
        return self.lm_weight == 0

    def decode(self, log_probs: np.ndarray, vocab: Vocabulary, lm: NGramLM | None, *,
               frame_shift: float = 0.02) -> Hypothesis:
        """Best hypothesis of ``(T, V)`` log-probabilities: greedy, or prefix beam search fused with
        ``lm`` (a beam of at least 2: fusion needs alternatives)."""
        if self.greedy or lm is None:
            return greedy_decode(log_probs, vocab, frame_shift=frame_shift)
        return beam_search(log_probs, vocab, beam=max(self.beam, 2), lm=lm, lm_weight=self.lm_weight,
                           word_bonus=self.word_bonus, frame_shift=frame_shift)[0]

    def to_dict(self) -> dict[str, float | int | bool]:
        return {"greedy": self.greedy, "lm_weight": self.lm_weight, "word_bonus": self.word_bonus,
                "beam": 1 if self.greedy else self.beam}


@dataclass(frozen=True)
class Scores:
    """Corpus-level error rates of one setting on one split (fractions, not percent)."""

    cer: float
    wer: float
    utterances: int

    def to_dict(self) -> dict[str, float | int]:
        return {"cer": self.cer, "wer": self.wer, "utterances": self.utterances}


@dataclass(frozen=True)
class DevChoice:
    """The outcome of a dev sweep: the chosen setting and every setting's dev scores."""

    best: Setting
    dev: dict[Setting, Scores]

    @property
    def best_scores(self) -> Scores:
        return self.dev[self.best]

    def grid(self) -> list[dict[str, object]]:
        """Every setting with its dev CER / WER, in grid order (JSON-ready)."""
        return [{**s.to_dict(), **sc.to_dict()} for s, sc in self.dev.items()]


def grid(lm_weights: Sequence[float], word_bonuses: Sequence[float] = (0.0,), beams: Sequence[int] = (8,)) -> list[Setting]:
    """The settings to try: greedy once (for any weight 0) and every (weight > 0, bonus, beam)."""
    out: list[Setting] = []
    if any(w == 0 for w in lm_weights):
        out.append(Setting())
    for w, b, k in itertools.product(sorted(w for w in lm_weights if w > 0), word_bonuses, beams):
        out.append(Setting(float(w), float(b), int(k)))
    if not out:
        raise ValueError("empty decoding grid: give at least one LM weight (0 = greedy)")
    return out


def decode_texts(log_probs: Sequence[np.ndarray], vocab: Vocabulary, setting: Setting, lm: NGramLM | None, *,
                 language: str | None, frame_shift: float = 0.02) -> list[str]:
    """Hypotheses of every ``(T_i, V)`` log-probability matrix under ``setting``, normalised for
    ``language`` like the references."""
    return [normalize_text(setting.decode(lp, vocab, lm, frame_shift=frame_shift).text, language) for lp in log_probs]


def score(references: Sequence[str], hypotheses: Sequence[str]) -> Scores:
    """Corpus-level CER and WER of ``hypotheses`` against ``references``."""
    return Scores(cer(references, hypotheses).rate, wer(references, hypotheses).rate, len(references))


def choose_decoding_on_dev(log_probs: Sequence[np.ndarray], references: Sequence[str], vocab: Vocabulary,
                           lm: NGramLM | None, settings: Sequence[Setting], *, language: str | None,
                           frame_shift: float = 0.02) -> DevChoice:
    """Score every setting on the dev split; the lowest CER wins, ties going to the simpler setting
    (smaller LM weight, then smaller bonus, then narrower beam). Without an LM only greedy is tried.

    Args:
        log_probs: ``(T_i, V)`` log-probabilities of the dev utterances.
        references: their normalised transcripts.
        settings: the grid (:func:`grid`).
    """
    if len(log_probs) != len(references):
        raise ValueError(f"{len(log_probs)} log-probability matrices for {len(references)} references")
    tried = [s for s in settings if lm is not None or s.greedy] or [Setting()]
    dev = {s: score(references, decode_texts(log_probs, vocab, s, lm, language=language, frame_shift=frame_shift))
           for s in tried}
    best = min(dev, key=lambda s: (dev[s].cer, s.lm_weight, abs(s.word_bonus), s.beam))
    return DevChoice(best, dev)
