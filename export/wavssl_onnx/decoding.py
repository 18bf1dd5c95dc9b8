"""CTC decoding on numpy log-probabilities: greedy, prefix beam search with n-gram shallow fusion,
word timestamps, and the CTC forward algorithm.

Inputs are per-frame log-probabilities ``(T, V)`` (a log-softmax over the vocabulary, blank = id 0).

Word times come from the CTC frames: a token's span runs from the frame where it is first emitted to
the last frame where it repeats; a word starts at ``first_frame * frame_shift`` of its first token
and ends at ``(last_frame + 1) * frame_shift`` of its last token, i.e. at the end of that frame.
In beam search a prefix's spans follow its most probable contribution at each frame.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from .lm import EOS, NGramLM
from .vocab import Vocabulary

Span = tuple[int, int]
"""First and last frame (inclusive) of one emitted token."""

_NEG_INF = -math.inf


@dataclass(frozen=True)
class WordTime:
    """One decoded word and where it lies in the audio."""

    word: str
    start: float
    """Seconds: start of the frame where the word's first token is emitted."""
    end: float
    """Seconds: end of the last frame of the word's last token (repeats included)."""

    def to_dict(self) -> dict[str, object]:
        """JSON-ready ``{word, start, end}`` (times to the millisecond)."""
        return {"word": self.word, "start": round(self.start, 3), "end": round(self.end, 3)}


@dataclass
class Hypothesis:
    """One decoding result."""

    text: str
    """Decoded text, words separated by single spaces."""
    token_ids: list[int]
    """Emitted token ids ``(L,)`` after collapsing repeats and removing blanks (delimiters kept)."""
    score: float
    """Greedy: log-probability of the best path. Beam search: log P_ctc(labelling) (summed over the
    alignments kept in the beam) + lm_weight * LM log-prob + word_bonus * words."""
    words: list[WordTime]
    """Word timestamps, in order."""


def _check_log_probs(log_probs: np.ndarray, vocab: Vocabulary) -> np.ndarray:
    """``log_probs`` as float64 ``(T, V)``; raises ``ValueError`` on a bad shape."""
    array = np.asarray(log_probs, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != len(vocab):
        raise ValueError(f"log_probs must have shape (T, {len(vocab)}) for this vocabulary, got {array.shape}")
    return array


def _check_frame_shift(frame_shift: float) -> None:
    """Raise ``ValueError`` unless ``frame_shift`` is a positive number of seconds."""
    if not frame_shift > 0:
        raise ValueError(f"frame_shift must be > 0 seconds, got {frame_shift}")


def word_times(token_ids: list[int], spans: list[Span], vocab: Vocabulary, frame_shift: float) -> list[WordTime]:
    """Words and their times from emitted tokens ``(L,)`` and their frame spans ``(L,)``.

    Words are the runs of tokens between word delimiters; see the module docstring for the times.
    """
    if len(token_ids) != len(spans):
        raise ValueError(f"token_ids and spans must have the same length, got {len(token_ids)} and {len(spans)}")
    words: list[WordTime] = []
    start = 0
    for i in range(len(token_ids) + 1):
        if i == len(token_ids) or token_ids[i] == vocab.delimiter_id:
            if i > start:
                word = vocab.decode(token_ids[start:i])
                words.append(WordTime(word, spans[start][0] * frame_shift, (spans[i - 1][1] + 1) * frame_shift))
            start = i + 1
    return words


def greedy_decode(log_probs: np.ndarray, vocab: Vocabulary, *, frame_shift: float = 0.02) -> Hypothesis:
    """Best-path CTC decoding: the most likely token per frame, repeats collapsed, blanks dropped.

    Args:
        log_probs: ``(T, V)`` per-frame log-probabilities.
        vocab: the model's vocabulary (blank id 0).
        frame_shift: seconds between frames.
    """
    _check_frame_shift(frame_shift)
    lp = _check_log_probs(log_probs, vocab)
    best = lp.argmax(axis=1)
    return greedy_from_best(best, float(lp[np.arange(lp.shape[0]), best].sum()), vocab, frame_shift=frame_shift)


def greedy_from_best(best: np.ndarray, score: float, vocab: Vocabulary, *, frame_shift: float = 0.02) -> Hypothesis:
    """The greedy hypothesis of per-frame best token ids ``(T,)`` whose log-probabilities sum to
    ``score`` (what :func:`greedy_decode` computes; streams keep ``best`` as frames arrive)."""
    num_frames = len(best)
    if num_frames == 0:
        return Hypothesis("", [], 0.0, [])
    run_starts = np.flatnonzero(np.r_[True, best[1:] != best[:-1]])
    run_ends = np.r_[run_starts[1:] - 1, num_frames - 1]
    emitted = best[run_starts] != vocab.blank_id
    token_ids = [int(i) for i in best[run_starts][emitted]]
    spans = [(int(s), int(e)) for s, e in zip(run_starts[emitted], run_ends[emitted], strict=True)]
    return Hypothesis(vocab.decode(token_ids), token_ids, score, word_times(token_ids, spans, vocab, frame_shift))


def shift_times(hypothesis: Hypothesis, seconds: float) -> Hypothesis:
    """``hypothesis`` with every word time moved by ``seconds`` (a piece decoded from frames that
    start that far into the audio)."""
    if not seconds:
        return hypothesis
    words = [WordTime(w.word, w.start + seconds, w.end + seconds) for w in hypothesis.words]
    return Hypothesis(hypothesis.text, hypothesis.token_ids, hypothesis.score, words)


def greedy_decode_batch(
    log_probs: np.ndarray, lengths: np.ndarray, vocab: Vocabulary, *, frame_shift: float = 0.02
) -> list[Hypothesis]:
    """Greedy decoding of a padded batch.

    Args:
        log_probs: ``(B, T, V)`` per-frame log-probabilities.
        lengths: ``(B,)`` valid frames per item (frames past the length are padding).
        vocab: the model's vocabulary.
        frame_shift: seconds between frames.
    """
    batch = np.asarray(log_probs)
    valid = np.asarray(lengths)
    if batch.ndim != 3:
        raise ValueError(f"log_probs must have shape (B, T, V), got {batch.shape}")
    if valid.shape != (batch.shape[0],):
        raise ValueError(f"lengths must have shape ({batch.shape[0]},), got {valid.shape}")
    if np.any(valid < 0) or np.any(valid > batch.shape[1]):
        raise ValueError(f"lengths must lie in [0, {batch.shape[1]}], got {valid.tolist()}")
    return [greedy_decode(batch[b, : int(n)], vocab, frame_shift=frame_shift) for b, n in enumerate(valid)]


def ctc_log_likelihood(log_probs: np.ndarray, token_ids: list[int], *, blank: int = 0) -> float:
    """log P(token_ids | log_probs) under CTC, summed over all alignments (forward algorithm).

    Args:
        log_probs: ``(T, V)`` per-frame log-probabilities.
        token_ids: the labelling ``(L,)``, without blanks.
        blank: id of the blank.

    Returns:
        The natural-log likelihood; ``-inf`` when no alignment fits in ``T`` frames.
    """
    lp = np.asarray(log_probs, dtype=np.float64)
    if lp.ndim != 2:
        raise ValueError(f"log_probs must have shape (T, V), got {lp.shape}")
    labels = np.asarray(token_ids, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= lp.shape[1] or np.any(labels == blank)):
        raise ValueError(f"token_ids must be non-blank ids in [0, {lp.shape[1]}), got {list(token_ids)}")
    num_frames = lp.shape[0]
    if num_frames == 0:
        return 0.0 if labels.size == 0 else _NEG_INF
    extended = np.full(2 * labels.size + 1, blank, dtype=np.int64)
    extended[1::2] = labels
    can_skip = np.zeros(extended.size, dtype=bool)
    can_skip[2:] = (extended[2:] != blank) & (extended[2:] != extended[:-2])
    alpha = np.full(extended.size, _NEG_INF)
    alpha[:2] = lp[0, extended[:2]]
    for t in range(1, num_frames):
        from_prev = np.full_like(alpha, _NEG_INF)
        from_prev[1:] = alpha[:-1]
        from_skip = np.full_like(alpha, _NEG_INF)
        from_skip[2:] = np.where(can_skip[2:], alpha[:-2], _NEG_INF)
        alpha = np.logaddexp(np.logaddexp(alpha, from_prev), from_skip) + lp[t, extended]
    return float(np.logaddexp(alpha[-1], alpha[-2]) if labels.size else alpha[-1])


@dataclass(frozen=True)
class _LMState:
    """What shallow fusion knows about a prefix; a function of the prefix alone."""

    score: float = 0.0
    """LM log-prob of the tokens scored so far (unweighted)."""
    words: int = 0
    """Completed words (a delimiter followed them)."""
    history: tuple[str, ...] = ()
    """Last ``order - 1`` LM tokens scored (characters with spaces, or words)."""
    partial: str = ""
    """Characters of the word being spelled (empty right after a delimiter)."""


def _advance(history: tuple[str, ...], token: str, lm: NGramLM) -> tuple[str, ...]:
    """``history + (token,)`` trimmed to the ``order - 1`` tokens the LM looks at."""
    keep = lm.order - 1
    return (*history, token)[-keep:] if keep else ()


def _extend_lm(state: _LMState, token_id: int, vocab: Vocabulary, lm: NGramLM | None) -> _LMState:
    """LM state after emitting ``token_id``.

    Char LM: each character is scored when emitted; the space between words is scored just before
    the next word's first character (never for leading, repeated or trailing delimiters). Word LM:
    a word is scored when a delimiter completes it (the last word is scored by ``_finish_lm``).
    """
    if token_id == vocab.delimiter_id:
        if not state.partial:
            return state
        if lm is None or lm.level == "char":
            return _LMState(state.score, state.words + 1, state.history, "")
        score = state.score + lm.score(state.history, state.partial)
        return _LMState(score, state.words + 1, _advance(state.history, state.partial, lm), "")
    char = vocab.tokens[token_id]
    if lm is None or lm.level == "word":
        return _LMState(state.score, state.words, state.history, state.partial + char)
    score, history = state.score, state.history
    if state.words and not state.partial:
        score += lm.score(history, " ")
        history = _advance(history, " ", lm)
    score += lm.score(history, char)
    return _LMState(score, state.words, _advance(history, char, lm), state.partial + char)


def _finish_lm(state: _LMState, lm: NGramLM | None) -> tuple[float, int]:
    """Final ``(LM log-prob, word count)`` of a prefix: the last word completed, then ``</s>``."""
    words = state.words + (1 if state.partial else 0)
    if lm is None:
        return 0.0, words
    score, history = state.score, state.history
    if lm.level == "word" and state.partial:
        score += lm.score(history, state.partial)
        history = _advance(history, state.partial, lm)
    return score + lm.score(history, EOS), words


def _logaddexp(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) for Python floats, exact at ``-inf``."""
    if a < b:
        a, b = b, a
    if b == _NEG_INF:
        return a
    return a + math.log1p(math.exp(b - a))


class _Beam:
    """Probability mass of one prefix at one frame, split by whether it ends in a blank."""

    __slots__ = ("best", "blank", "lm", "nonblank", "spans")

    def __init__(self, lm: _LMState) -> None:
        self.blank = _NEG_INF
        self.nonblank = _NEG_INF
        self.best = _NEG_INF
        self.spans: tuple[Span, ...] = ()
        self.lm = lm

    def add(self, logp: float, ends_in_blank: bool, spans: tuple[Span, ...]) -> None:
        """Merge one contribution; the spans follow the most probable contribution."""
        if ends_in_blank:
            self.blank = _logaddexp(self.blank, logp)
        else:
            self.nonblank = _logaddexp(self.nonblank, logp)
        if logp > self.best:
            self.best, self.spans = logp, spans

    @property
    def acoustic(self) -> float:
        """log P_ctc of the prefix over the alignments kept."""
        return _logaddexp(self.blank, self.nonblank)

    def fused(self, lm_weight: float, word_bonus: float) -> float:
        """Ranking score during the search: acoustic + weighted LM + word bonus."""
        return self.acoustic + lm_weight * self.lm.score + word_bonus * self.lm.words


Prefix = tuple[int, ...]
"""Emitted token ids of a beam entry."""


def _stay(beams: dict[Prefix, _Beam], row: list[float], t: int, blank: int) -> dict[Prefix, _Beam]:
    """Next-frame entries of the prefixes already in the beam.

    A prefix stays by a blank, by repeating its last token, or by its last token being emitted now
    after its parent (when the parent is in the beam too; the parent's blank-ending mass only, if
    the token repeats the parent's last token).
    """
    following: dict[Prefix, _Beam] = {}
    for prefix, state in beams.items():
        entry = following[prefix] = _Beam(state.lm)
        entry.add(state.acoustic + row[blank], True, state.spans)
        if not prefix:
            continue
        last = prefix[-1]
        entry.add(state.nonblank + row[last], False, (*state.spans[:-1], (state.spans[-1][0], t)))
        parent = beams.get(prefix[:-1])
        if parent is not None:
            source = parent.blank if len(prefix) > 1 and prefix[-2] == last else parent.acoustic
            if source != _NEG_INF:
                entry.add(source + row[last], False, (*parent.spans, (t, t)))
    return following


def _add_extensions(
    following: dict[Prefix, _Beam],
    beams: dict[Prefix, _Beam],
    frame: np.ndarray,
    candidates: np.ndarray,
    t: int,
    vocab: Vocabulary,
    lm: NGramLM | None,
    beam: int,
    lm_weight: float,
    word_bonus: float,
) -> None:
    """Add to ``following`` the new prefixes (one candidate token longer than a beam prefix) that can
    reach the top ``beam``.

    The acoustic score of every extension, ``(B, C)`` for B prefixes and C candidate tokens, is
    computed at once. Its fused score is bounded above by leaving out the LM increment (a
    log-probability, <= 0); extensions are created best bound first until the bound falls below the
    ``beam``-th best fused score, so the LM is only queried for extensions that may survive.
    """
    entries = list(beams.items())
    states = [state for _, state in entries]
    lasts = np.array([prefix[-1] if prefix else -1 for prefix, _ in entries])
    totals = np.array([state.acoustic for state in states])
    blanks = np.array([state.blank for state in states])
    source = np.where(candidates[None, :] == lasts[:, None], blanks[:, None], totals[:, None])
    acoustic = source + frame[candidates][None, :]
    base = np.array([lm_weight * state.lm.score + word_bonus * state.lm.words for state in states])
    completes = np.array([bool(state.lm.partial) for state in states])
    adds_word = completes[:, None] & (candidates == vocab.delimiter_id)[None, :]
    bound = acoustic + base[:, None] + word_bonus * adds_word
    column = {c: j for j, c in enumerate(candidates.tolist())}
    row_of = {prefix: i for i, (prefix, _) in enumerate(entries)}
    for prefix in beams:  # already merged by _stay
        if prefix and prefix[:-1] in row_of and prefix[-1] in column:
            bound[row_of[prefix[:-1]], column[prefix[-1]]] = _NEG_INF
    kept = heapq.nlargest(beam, (entry.fused(lm_weight, word_bonus) for entry in following.values()))
    heapq.heapify(kept)
    for flat in np.argsort(-bound, axis=None, kind="stable").tolist():
        b, j = divmod(flat, len(candidates))
        upper = float(bound[b, j])
        if upper == _NEG_INF or (len(kept) == beam and upper <= kept[0]):
            break
        prefix, parent = entries[b]
        token = int(candidates[j])
        entry = following[(*prefix, token)] = _Beam(_extend_lm(parent.lm, token, vocab, lm))
        entry.add(float(acoustic[b, j]), False, (*parent.spans, (t, t)))
        score = entry.fused(lm_weight, word_bonus)
        if len(kept) < beam:
            heapq.heappush(kept, score)
        elif score > kept[0]:
            heapq.heapreplace(kept, score)


def beam_search(
    log_probs: np.ndarray,
    vocab: Vocabulary,
    *,
    beam: int = 16,
    lm: NGramLM | None = None,
    lm_weight: float = 0.5,
    word_bonus: float = 0.0,
    frame_shift: float = 0.02,
    prune_logp: float = -12.0,
) -> list[Hypothesis]:
    """CTC prefix beam search with optional n-gram shallow fusion.

    Each prefix keeps two log-probabilities: its alignments ending in a blank and ending in its last
    token. A token equal to the prefix's last token extends the prefix only from the blank-ending
    mass (``a a`` without a blank between is one ``a``); the non-blank mass of the repeat stays on
    the prefix. Prefixes are ranked by ``log P_ctc + lm_weight * LM + word_bonus * words``, where a
    character LM scores every emitted character and a word LM every completed word (at a delimiter
    and at the end); ``</s>`` is scored at the end.

    Args:
        log_probs: ``(T, V)`` per-frame log-probabilities.
        vocab: the model's vocabulary (blank id 0).
        beam: prefixes kept per frame; also the most tokens tried per frame and the n-best size.
        lm: optional character- or word-level n-gram LM.
        lm_weight: weight of the LM log-probability (>= 0: extensions are pruned on an LM-free
            upper bound of their score before the LM is queried).
        word_bonus: added per word (counters the LM's bias towards fewer words).
        frame_shift: seconds between frames, for word times.
        prune_logp: tokens with a frame log-probability below this are not tried at that frame.

    Returns:
        Up to ``beam`` hypotheses with distinct texts (prefixes that decode to the same text, e.g.
        with and without a trailing delimiter, keep the best), best score first.
    """
    _check_frame_shift(frame_shift)
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    if lm_weight < 0:
        raise ValueError(f"lm_weight must be >= 0, got {lm_weight}")
    lp = _check_log_probs(log_probs, vocab)
    start = _Beam(_LMState())
    start.add(0.0, True, ())
    beams: dict[Prefix, _Beam] = {(): start}
    nonblank_ids = np.arange(1, len(vocab))

    for t, frame in enumerate(lp):
        candidates = nonblank_ids[frame[1:] >= prune_logp]
        if candidates.size > beam:
            candidates = candidates[np.argpartition(-frame[candidates], beam - 1)[:beam]]
        following = _stay(beams, frame.tolist(), t, vocab.blank_id)
        _add_extensions(following, beams, frame, candidates, t, vocab, lm, beam, lm_weight, word_bonus)
        beams = dict(heapq.nlargest(beam, following.items(), key=lambda item: item[1].fused(lm_weight, word_bonus)))

    hypotheses: dict[str, Hypothesis] = {}
    for prefix, state in beams.items():
        lm_score, words = _finish_lm(state.lm, lm)
        token_ids = list(prefix)
        text = vocab.decode(token_ids)
        score = state.acoustic + lm_weight * lm_score + word_bonus * words
        if text not in hypotheses or score > hypotheses[text].score:
            times = word_times(token_ids, list(state.spans), vocab, frame_shift)
            hypotheses[text] = Hypothesis(text, token_ids, score, times)
    return sorted(hypotheses.values(), key=lambda h: h.score, reverse=True)


# ---------------------------------------------------------------------------------- decoding methods


@dataclass(frozen=True)
class Greedy:
    """Best-path decoding (:func:`greedy_decode`). Incremental: a stream keeps each frame's best
    token as frames arrive, so partial results cost nothing and only ever grow."""

    incremental = True

    def decode(self, log_probs: np.ndarray, vocab: Vocabulary, *, frame_shift: float = 0.02) -> Hypothesis:
        """The hypothesis of ``(T, V)`` log-probabilities."""
        return greedy_decode(log_probs, vocab, frame_shift=frame_shift)

    def describe(self) -> str:
        return "greedy"


@dataclass(frozen=True)
class BeamSearch:
    """Prefix beam search with optional n-gram shallow fusion (:func:`beam_search`). Not
    incremental: a stream shows greedy partial results and runs the search once its input is
    finished."""

    beam: int = 8
    """Prefixes kept per frame (>= 1)."""
    lm: NGramLM | None = None
    """Character- or word-level n-gram LM, or None."""
    lm_weight: float = 0.5
    """Weight of the LM log-probability (>= 0)."""
    word_bonus: float = 0.0
    """Added per word."""

    incremental = False

    def __post_init__(self) -> None:
        if self.beam < 1:
            raise ValueError(f"beam must be >= 1, got {self.beam}")
        if not self.lm_weight >= 0:
            raise ValueError(f"lm_weight must be >= 0, got {self.lm_weight}")

    def decode(self, log_probs: np.ndarray, vocab: Vocabulary, *, frame_shift: float = 0.02) -> Hypothesis:
        """The best hypothesis of ``(T, V)`` log-probabilities."""
        return beam_search(log_probs, vocab, beam=self.beam, lm=self.lm, lm_weight=self.lm_weight,
                           word_bonus=self.word_bonus, frame_shift=frame_shift)[0]

    def describe(self) -> str:
        lm = "" if self.lm is None else f" + {self.lm.order}-gram {self.lm.level} LM (weight {self.lm_weight:g})"
        bonus = f", word bonus {self.word_bonus:g}" if self.word_bonus else ""
        return f"beam {self.beam}{lm}{bonus}"


Decoding = Greedy | BeamSearch
"""How a recognizer turns log-probabilities into text; chosen once, held by the recognizer."""


def choose_decoding(beam: int = 1, lm: NGramLM | None = None, lm_weight: float = 0.5,
                    word_bonus: float = 0.0) -> Decoding:
    """The one policy for command-line style options: greedy unless a beam wider than 1 or an LM is
    asked for; an LM with ``beam`` 1 searches with a beam of 2 (fusion needs alternatives)."""
    if beam <= 1 and lm is None:
        return Greedy()
    return BeamSearch(beam=max(beam, 2), lm=lm, lm_weight=lm_weight, word_bonus=word_bonus)
