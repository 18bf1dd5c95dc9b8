"""Checkpoint directories: atomic writes, rotation, loading.

A run directory holds the latest weights for users (``config.json`` + ``model.safetensors``) and,
under ``checkpoints/update_NNNNNNNN/``, complete checkpoint directories (``config.json``,
``model.safetensors``, ``trainer_state.pt``) for resuming. Each of those is written in a temporary
directory and renamed into place in one step, so a kill at any moment leaves the previous complete
checkpoint; the top-level files are replaced one by one with ``os.replace``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save
from torch import nn
from wavssl_onnx import Vocabulary
from wavssl_onnx.fileio import NoSpaceError, atomic_write, atomic_write_bytes, atomic_write_text, make_temp_dir
from wavssl_onnx.vocab import VOCAB_FILE

from ..config import Config, ConfigError, load_json, to_dict
from ..models import build_classifier, build_model, build_recognizer

CHECKPOINTS = "checkpoints"
_PREFIX = "update_"
TMP_PREFIX = ".tmp_"
LABELS_FILE = "labels.json"
"""A classifier run's class names, in output order (a JSON list), beside its config.json."""
"""Prefix of a checkpoint directory being written (left behind only by a kill; removed at start)."""


class CheckpointError(RuntimeError):
    """A checkpoint directory is missing a file or cannot be read; the message names the path."""


def _write_model_files(directory: Path, model: nn.Module, cfg: Config,
                       model_state: dict[str, torch.Tensor] | None = None) -> None:
    source = model.state_dict() if model_state is None else model_state
    state = {k: v.detach().to("cpu").contiguous() for k, v in source.items()}
    atomic_write_bytes(directory / "model.safetensors", save(state, metadata={"format": "pt"}))
    atomic_write_text(directory / "config.json", json.dumps(to_dict(cfg), indent=2) + "\n")


def _no_space(error: NoSpaceError, run_dir: Path) -> CheckpointError:
    """A one-line CheckpointError for a full disk, naming the file and the checkpoint still intact."""
    previous = latest_checkpoint(run_dir)
    intact = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
    return CheckpointError(f"{error}; {intact} (free some space, then continue with --resume)")


def save_model(run_dir: str | Path, model: nn.Module, cfg: Config,
               model_state: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``config.json`` and ``model.safetensors`` into ``run_dir`` (each atomically); the weights
    are ``model_state`` when given (e.g. gathered from a sharded model), else ``model.state_dict()``.
    A full disk raises :class:`CheckpointError` naming the file."""
    try:
        _write_model_files(Path(run_dir), model, cfg, model_state)
    except NoSpaceError as e:
        raise _no_space(e, Path(run_dir)) from e


def save_checkpoint(run_dir: str | Path, model: nn.Module, cfg: Config, trainer_state: dict[str, Any],
                    num_updates: int, keep_last: int = 3, model_state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write a complete checkpoint directory for ``num_updates``, refresh the top-level weights and
    delete all but the newest ``keep_last`` checkpoints (weights as :func:`save_model`). Returns the
    checkpoint directory."""
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{_PREFIX}{num_updates:08d}"
    tmp = make_temp_dir(root, TMP_PREFIX)
    try:
        _write_model_files(tmp, model, cfg, model_state)
        atomic_write(tmp / "trainer_state.pt", lambda f: torch.save(trainer_state, f))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except NoSpaceError as e:
        raise _no_space(e, Path(run_dir)) from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    save_model(run_dir, model, cfg, model_state)
    for old in list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint directories of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    dirs = [d for d in root.iterdir() if d.is_dir() and d.name.startswith(_PREFIX)
            and (d / "trainer_state.pt").is_file() and (d / "model.safetensors").is_file()]
    return sorted(dirs, key=lambda d: d.name)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint directory, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_trainer_state(checkpoint_dir: str | Path) -> dict[str, Any]:
    """``trainer_state.pt`` loaded with ``weights_only=True``."""
    path = Path(checkpoint_dir) / "trainer_state.pt"
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the path
        raise CheckpointError(f"{path}: cannot load trainer state: {e}") from e


def load_state_dict(directory: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of ``model.safetensors`` in ``directory``; a file that is not safetensors, or a
    tensor holding NaN or Inf, raises :class:`CheckpointError` naming the file (and the tensor)."""
    path = Path(directory) / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{path}: no model weights here (expected model.safetensors)")
    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises its own error type; re-raised naming the file
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable safetensors file ({reason})") from e
    check_finite(state, path)
    return state


def check_finite(state: dict[str, torch.Tensor], where: str | Path) -> None:
    """Raise :class:`CheckpointError` naming the first floating-point tensor with NaN or Inf."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"{where}: tensor {name!r} holds {bad} NaN or infinite value(s) of "
                                  f"{tensor.numel()}; refusing corrupt weights")


def load_config(directory: str | Path) -> Config:
    """``config.json`` in ``directory``; a malformed one raises :class:`CheckpointError` naming it."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (not a wavssl run or checkpoint directory)")
    try:
        return load_json(path)
    except ConfigError as e:
        raise CheckpointError(str(e)) from e


def find_sidecar(directory: str | Path, name: str) -> Path | None:
    """``name`` (e.g. ``vocab.json``) in a run directory, or in the run directory of a checkpoint
    directory inside it (``RUN/best``, ``RUN/checkpoints/update_N``); None if absent."""
    directory = Path(directory)
    for candidate in (directory / name, directory.parent / name, directory.parent.parent / name):
        if candidate.is_file():
            return candidate
    return None


def load(run_dir: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """The model stored in a run or checkpoint directory, in eval mode: an ``SSLModel`` for a
    pretraining run, a ``CTCModel`` (vocabulary from ``vocab.json``) for a recognizer run, a
    ``SequenceClassifier`` (classes from ``labels.json``) for a classifier run."""
    cfg = load_config(run_dir)
    model: nn.Module
    if cfg.task == "ctc":
        path = find_sidecar(run_dir, VOCAB_FILE)
        if path is None:
            raise CheckpointError(f"{Path(run_dir) / VOCAB_FILE}: missing (a recognizer run keeps its vocabulary there)")
        vocab = Vocabulary.load(path)
        model = build_recognizer(cfg.model, cfg.ctc, len(vocab))
        model.vocab, model.normalize_audio = vocab, cfg.data.normalize
    elif cfg.task == "classify":
        names = read_labels_file(run_dir)
        model = build_classifier(cfg.model, cfg.classify, len(names))
        model.class_names = names
    else:
        model = build_model(cfg.model)
    missing, unexpected = model.load_state_dict(load_state_dict(run_dir), strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{run_dir}: weights do not match config.json "
                              f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model.to(map_location).eval()


def write_labels_file(run_dir: str | Path, names: list[str]) -> None:
    """Write a classifier run's class names (``labels.json``, atomically)."""
    atomic_write_text(Path(run_dir) / LABELS_FILE, json.dumps(names, indent=1) + "\n")


def read_labels_file(run_dir: str | Path) -> list[str]:
    """Class names of a classifier run or checkpoint directory (``labels.json`` in it or in its run
    directory, for ``RUN/checkpoints/update_N`` and ``RUN/best``)."""
    path = find_sidecar(run_dir, LABELS_FILE)
    if path is None:
        raise FileNotFoundError(f"{Path(run_dir) / LABELS_FILE}: missing (a classifier run keeps its class names there)")
    try:
        names = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names:
        raise ValueError(f"{path}: expected a non-empty JSON list of class names")
    return names
