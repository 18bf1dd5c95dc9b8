"""wavssl: wav2vec 2.0-style self-supervised learning for speech and sensor time series.

Public API: ``load(RUN_DIR)``, ``import_checkpoint(SRC, RUN_DIR)``, ``pretrain(AUDIO, RUN_DIR, cfg)``,
configs and presets in ``wavssl.config``, models in ``wavssl.models``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from torch import nn


def load(run_dir: str | Path, map_location: Any = "cpu") -> "nn.Module":
    """The model stored in a run (or checkpoint) directory, in eval mode."""
    from .train.checkpoint import load as _load

    return _load(run_dir, map_location)


def import_checkpoint(src: str | Path, run_dir: str | Path, *, base_config: Any = None,
                      trust_checkpoint: bool = False, revision: str | None = None) -> Path:
    """Convert a transformers or fairseq wav2vec2 checkpoint (a local path, or a Hugging Face Hub id
    such as ``"facebook/wav2vec2-base"`` at ``revision``, read through huggingface_hub's cache) into a
    wavssl run directory; fields the source does not define (data, optimiser, training) come from
    ``base_config`` (default: BASE). A fairseq file pickling objects outside the safe list is refused
    unless ``trust_checkpoint``."""
    from .train.importers import import_checkpoint as _import

    return _import(src, run_dir, base_config=base_config, trust_checkpoint=trust_checkpoint, revision=revision)


def pretrain(audio: str | Path, run_dir: str | Path, cfg: Any, **kwargs: Any) -> Any:
    """Pretrain on a folder of unlabeled audio; see :func:`wavssl.train.pretraining.pretrain`."""
    from .train.pretraining import pretrain as _pretrain

    return _pretrain(audio, run_dir, cfg, **kwargs)
