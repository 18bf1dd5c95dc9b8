"""Decoding methods as objects (wavssl_onnx.Greedy / BeamSearch): chosen once, held by recognizers.

The objects must give exactly what the functions give, the one policy (``choose_decoding``) must pick
greedy unless a beam or an LM is asked for, and a stream must show greedy partial results and apply
its recognizer's method once the input is finished.
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from wavssl_onnx import BeamSearch, Greedy, NGramLM, Vocabulary, beam_search, choose_decoding, greedy_decode
from wavssl_onnx.cli import add_decoding_args, decoding_from_args
from wavssl_onnx.streaming import StreamingDecoder

VOCAB = Vocabulary.build(["the cat sat on the mat", "a bat"])


def _log_probs(seed: int, frames: int = 60) -> np.ndarray:
    """(T, V) peaky random log-probabilities (CTC-like: blank most of the time)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(frames, len(VOCAB))) * 3
    logits[:, VOCAB.blank_id] += 2.0
    return (logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)).astype(np.float32)


def test_objects_decode_exactly_as_the_functions() -> None:
    lm = NGramLM.from_lines(["the cat sat on the mat", "a bat sat"], order=3, level="char")
    for seed in range(5):
        lp = _log_probs(seed)
        assert Greedy().decode(lp, VOCAB, frame_shift=0.02) == greedy_decode(lp, VOCAB, frame_shift=0.02)
        method = BeamSearch(beam=6, lm=lm, lm_weight=0.8, word_bonus=0.3)
        want = beam_search(lp, VOCAB, beam=6, lm=lm, lm_weight=0.8, word_bonus=0.3, frame_shift=0.02)[0]
        assert method.decode(lp, VOCAB, frame_shift=0.02) == want


def test_one_policy_for_options() -> None:
    lm = NGramLM.from_lines(["a bat"], order=2, level="char")
    assert choose_decoding() == Greedy() and choose_decoding(beam=1, lm_weight=2.0) == Greedy()
    assert choose_decoding(beam=4) == BeamSearch(beam=4)
    assert choose_decoding(beam=1, lm=lm, lm_weight=0.3) == BeamSearch(beam=2, lm=lm, lm_weight=0.3)
    with pytest.raises(ValueError, match="beam must be >= 1"):
        BeamSearch(beam=0)
    with pytest.raises(ValueError, match="lm_weight must be >= 0"):
        BeamSearch(lm_weight=-1.0)
    assert Greedy().describe() == "greedy"
    assert BeamSearch(8, lm, 0.75).describe() == "beam 8 + 2-gram char LM (weight 0.75)"


def test_command_line_options_build_the_method(tmp_path) -> None:
    corpus = tmp_path / "lm.txt"
    corpus.write_text("the cat sat\na bat\n", encoding="utf-8")
    p = argparse.ArgumentParser()
    add_decoding_args(p)
    assert decoding_from_args(p.parse_args([]), "en") == Greedy()
    method = decoding_from_args(p.parse_args(["--lm", str(corpus), "--lm-order", "3", "--lm-weight", "0.4",
                                              "--word-bonus", "0.5"]), "en")
    assert isinstance(method, BeamSearch) and method.beam == 2 and method.lm is not None
    assert (method.lm.order, method.lm_weight, method.word_bonus) == (3, 0.4, 0.5)


class _FrameEngine:
    """Stands in for the acoustic model: every pushed sample releases one prepared frame."""

    def __init__(self, frames: np.ndarray) -> None:
        self.frames, self.at = frames, 0

    def push(self, block: np.ndarray) -> list[np.ndarray]:
        piece = self.frames[self.at: self.at + len(block)]
        self.at += len(block)
        return [piece] if len(piece) else []

    def finish(self) -> list[np.ndarray]:
        return []


def test_a_stream_shows_greedy_partials_and_finishes_with_its_method() -> None:
    lp = _log_probs(3)
    lm = NGramLM.from_lines(["the cat sat on the mat"], order=3, level="char")
    method = BeamSearch(beam=8, lm=lm, lm_weight=1.5)
    assert method.decode(lp, VOCAB) != greedy_decode(lp, VOCAB)  # the case is informative
    decoder = StreamingDecoder(lambda: _FrameEngine(lp), VOCAB, sample_rate=16000, frame_shift=0.02, latency=0.0,
                               decoding=method)
    stream = decoder.create_stream()
    for start in range(0, len(lp), 20):
        stream.accept_waveform(16000, np.zeros(20, np.float32))
        partial = decoder.decode(stream)
        assert partial == greedy_decode(lp[: start + 20], VOCAB)
    stream.input_finished()
    assert decoder.decode(stream) == method.decode(lp, VOCAB)
    assert decoder.decode(stream, Greedy()) == greedy_decode(lp, VOCAB)  # a call may override the method
