"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from wavssl.data.synth import synthesize_corpus

SPEECH_UTTERANCES = 40


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of 40 synthesized English utterances (16 kHz mono WAV, ~3 min in total)
    plus ``transcripts.tsv``; built once per test session with espeak-ng/flite."""
    out = tmp_path_factory.mktemp("speech")
    synthesize_corpus(out, num_utterances=SPEECH_UTTERANCES, seed=0)
    return out
