"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from wavssl.data.synth import synthesize_corpus

SPEECH_UTTERANCES = 40


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of 40 synthesized English utterances (16 kHz mono WAV, ~3 min in total)
    plus ``transcripts.tsv``; built once per test session with espeak-ng/flite."""
    out = tmp_path_factory.mktemp("speech")
    synthesize_corpus(out, num_utterances=SPEECH_UTTERANCES, seed=0)
    return out


class SyncRecorder(TorchDispatchMode):
    """Records, during its ``with`` block (forward and backward alike), every op that makes the host
    wait for a CUDA device: reading a value back (``.item()``, ``int(t)``, ``bool(t)``), ops whose
    output shape depends on values (``nonzero``, boolean indexing, ``masked_select``, ``unique``,
    ``repeat_interleave`` with tensor repeats) and tensors built from host data (``torch.tensor``
    inside a step is a blocking host-to-device copy). Works on CPU tensors: the ops are what count,
    so a CPU run shows what a GPU run would wait on."""

    SYNCING = ("aten._local_scalar_dense", "aten.item", "aten.is_nonzero", "aten.equal", "aten.nonzero.",
               "aten.masked_select", "aten._unique", "aten.unique", "aten.repeat_interleave.Tensor",
               "aten.lift_fresh", "aten.allclose")
    INDEXING = ("aten.index.Tensor", "aten.index_put", "aten._index_put_impl_")

    def __init__(self) -> None:
        super().__init__()
        self.syncs: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        name = str(func)
        bool_index = name.startswith(self.INDEXING) and any(
            i is not None and i.dtype == torch.bool for i in args[1])
        if name.startswith(self.SYNCING) or bool_index:
            self.syncs.append(name)
        return func(*args, **(kwargs or {}))


@pytest.fixture
def sync_recorder() -> type[SyncRecorder]:
    """:class:`SyncRecorder`, to use as ``with sync_recorder() as rec: ...; assert not rec.syncs``."""
    return SyncRecorder
