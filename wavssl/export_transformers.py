"""Write a wavssl run directory as a Hugging Face transformers Wav2Vec2 model directory.

:func:`export_transformers` turns

- a recognizer run (``task = "ctc"``) into a ``Wav2Vec2ForCTC`` directory that
  ``transformers.pipeline("automatic-speech-recognition", model=DIR)`` loads and runs:
  ``config.json``, ``model.safetensors``, the ``Wav2Vec2CTCTokenizer`` files (``vocab.json``,
  ``tokenizer_config.json``, ``special_tokens_map.json``) and the ``Wav2Vec2FeatureExtractor``'s
  ``preprocessor_config.json``;
- a pretraining run (``task = "pretrain"``) into a ``Wav2Vec2ForPreTraining`` directory (config,
  weights and feature extractor).

It is the importer (:mod:`wavssl.train.importers`) read backwards: tensor names come from
:data:`~wavssl.train.importers.TRANSFORMERS_NAMES` (fused ``qkv`` split into q/k/v), config keys from
:data:`~wavssl.train.importers.TRANSFORMERS_FIELDS` / :data:`~wavssl.train.importers.TRANSFORMERS_CTC_FIELDS`;
the conv stack, ``feat_extract_norm`` (``default`` -> ``group``, ``layer_norm`` -> ``layer``) and
``do_stable_layer_norm`` (pre-LN) follow the same conventions. A positional conv trained without
weight norm is written in weight-norm form (g = ||w|| over each kernel tap, v = w: the same weights).
The feature extractor's ``do_normalize`` is the run's ``data.normalize`` (the same per-utterance
standardisation, variance floored by 1e-7) and its ``sampling_rate`` the front end's rate.

Vocabulary: wavssl's blank (token 0) is the tokenizer's pad token, which transformers' CTC decoding
drops after merging repeats; ``<unk>`` and the word delimiter ``|`` keep their roles, so greedy
transcripts match wavssl's. One difference remains in transformers' decoder: two word delimiters
separated by a blank give two spaces where wavssl writes one.

Refused with :class:`TransformersExportError` (one line naming the run's ``config.json`` and the field)
because transformers' Wav2Vec2 cannot compute them: the log-mel (``fbank``) and ``sensor`` front ends, a
conv stack without normalisation (``norm_mode = "none"``), a positional conv with bounded look-ahead,
chunked attention, classifier runs, and a vocabulary whose blank, ``<unk>`` and delimiter are not three
distinct tokens. Training-only settings without a transformers counterpart (Gumbel temperature
schedule, feature penalty, cross-sample negatives, front-end gradient scale) are not exported.

Neither transformers nor huggingface_hub is imported: the files are written directly.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save
from torch import Tensor
from wavssl_onnx.fileio import atomic_write_bytes, atomic_write_text, make_temp_dir
from wavssl_onnx.vocab import Vocabulary

from .config import Config, WaveformFrontend
from .train.importers import (
    TRANSFORMERS_CTC_FIELDS,
    TRANSFORMERS_FIELDS,
    TRANSFORMERS_NAMES,
    TRANSFORMERS_PREFIX,
    TRANSFORMERS_TOP_LEVEL,
    compile_names,
    rename,
)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PREPROCESSOR_FILE = "preprocessor_config.json"
TOKENIZER_FILES = ("vocab.json", "tokenizer_config.json", "special_tokens_map.json")
STALE_FILES = ("pytorch_model.bin", "model.safetensors.index.json", *TOKENIZER_FILES)
"""Files of an earlier export into the same folder that this export would not overwrite; removed."""

_TO_TRANSFORMERS = compile_names(TRANSFORMERS_NAMES, reverse=True)
_POS_CONV = "encoder.context.pos_conv.conv."


class TransformersExportError(ValueError):
    """A run has no exact transformers counterpart; the message names the file and the field."""


def export_transformers(run: str | Path, out: str | Path) -> Path:
    """Write the model of ``run`` as a transformers Wav2Vec2 directory ``out``.

    Args:
        run: recognizer (``ctc``) or pretraining run directory, or a checkpoint directory inside one.
        out: directory to write (created; the files named above are replaced, stale tokenizer or
            weight files of an earlier export removed).
    Returns:
        ``out`` as a Path.
    Raises:
        TransformersExportError: the run uses something transformers cannot express (nothing is written).
    """
    from .models import CTCModel
    from .train.checkpoint import load, load_config

    run, out = Path(run), Path(out)
    cfg = load_config(run)
    check_exportable(cfg, run / CONFIG_FILE)
    model = load(run)
    vocab: Vocabulary | None = getattr(model, "vocab", None) if cfg.task == "ctc" else None
    if cfg.task == "ctc":
        assert isinstance(model, CTCModel)  # a ctc run
        _check_vocab(vocab, int(model.head.out_features), run)
    config = transformers_config(cfg, vocab)
    state = transformers_state(model.state_dict(), keep_mask_emb=config["mask_time_prob"] > 0
                               or config["mask_feature_prob"] > 0)
    files: dict[str, str | bytes] = {
        WEIGHTS_FILE: save(state, metadata={"format": "pt"}),
        CONFIG_FILE: _json(config),
        PREPROCESSOR_FILE: _json(feature_extractor_config(cfg, ctc=vocab is not None)),
    }
    if vocab is not None:
        files.update({name: _json(content) for name, content in tokenizer_files(vocab).items()})
    out.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out, ".export-transformers-")
    try:
        for name, content in files.items():
            if isinstance(content, bytes):
                atomic_write_bytes(tmp / name, content)
            else:
                atomic_write_text(tmp / name, content)
        for name in STALE_FILES:
            if name not in files:
                (out / name).unlink(missing_ok=True)
        for name in files:
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def check_exportable(cfg: Config, where: str | Path) -> None:
    """Raise :class:`TransformersExportError` naming ``where`` (the run's config.json) and the field when
    the run has no exact transformers ``Wav2Vec2`` counterpart."""
    fe, cx = cfg.model.frontend, cfg.model.context
    centred = cx.pos_conv_kernel // 2 - (1 - cx.pos_conv_kernel % 2)
    kind = "log-mel (fbank)" if fe.kind == "fbank" else fe.kind
    norm_mode = fe.norm_mode if isinstance(fe, WaveformFrontend) else "default"
    problems = [
        (cfg.task in ("ctc", "pretrain"),
         (f"task = {cfg.task!r}: only recognizer (ctc) and pretraining runs have a transformers counterpart "
          "(Wav2Vec2ForCTC / Wav2Vec2ForPreTraining); export a classifier to ONNX (wavssl export)")),
        (fe.kind == "waveform",
         (f"model.frontend.kind = {fe.kind!r}: transformers' Wav2Vec2 has only the raw-waveform conv front end, "
          f"no {kind} front end; export this run to ONNX instead (wavssl export)")),
        (norm_mode in ("default", "layer_norm"),
         (f"model.frontend.norm_mode = {norm_mode!r}: transformers' conv feature encoder always normalises "
          "(feat_extract_norm = group or layer)")),
        (cx.pos_conv_lookahead in (-1, centred),
         (f"model.context.pos_conv_lookahead = {cx.pos_conv_lookahead}: transformers' positional conv is centred "
          f"(look-ahead {centred} frames for kernel {cx.pos_conv_kernel}); a bounded look-ahead cannot be expressed")),
        (cx.attention_chunk == 0,
         (f"model.context.attention_chunk = {cx.attention_chunk}: transformers' Wav2Vec2 attends to every frame; "
          "chunked (streaming) attention cannot be expressed")),
    ]
    for ok, message in problems:
        if not ok:
            raise TransformersExportError(f"{where}: cannot export to transformers: {message}")


def _check_vocab(vocab: Vocabulary | None, rows: int, run: Path) -> None:
    """The vocabulary maps onto a Wav2Vec2CTCTokenizer: blank = pad = id 0, distinct unk and delimiter,
    one token per output row."""
    if vocab is None:
        raise TransformersExportError(f"{run}: cannot export to transformers: the recognizer has no vocabulary (vocab.json)")
    specials = (vocab.blank, vocab.unk, vocab.word_delimiter)
    if len(set(specials)) != 3:
        raise TransformersExportError(f"{run}/vocab.json: cannot export to transformers: blank {vocab.blank!r}, unk "
                                      f"{vocab.unk!r} and word delimiter {vocab.word_delimiter!r} must be three tokens")
    if len(vocab) != rows:
        raise TransformersExportError(f"{run}/vocab.json: cannot export to transformers: {len(vocab)} tokens but the "
                                      f"output layer has {rows} rows")


def transformers_state(state: dict[str, Tensor], *, keep_mask_emb: bool = True) -> dict[str, Tensor]:
    """wavssl tensors (``model.state_dict()`` of a ``CTCModel`` or ``SSLModel``) under transformers names:
    fused ``qkv`` split into q/k/v, a plain positional-conv weight rewritten as weight norm, encoder
    tensors under ``wav2vec2.``; the mask embedding only with ``keep_mask_emb`` (transformers has one
    only when a masking probability is > 0)."""
    split: dict[str, Tensor] = {}
    for key, value in state.items():
        stem, _, leaf = key.rpartition(".")
        if stem.endswith(".attention.qkv"):
            for part, chunk in zip("qkv", value.chunk(3, dim=0)):
                split[f"{stem[:-3]}{part}.{leaf}"] = chunk
        elif key == _POS_CONV + "weight":  # trained without weight norm: g = ||w|| per kernel tap, v = w
            split[_POS_CONV + "parametrizations.weight.original0"] = torch.linalg.vector_norm(value, dim=(0, 1), keepdim=True)
            split[_POS_CONV + "parametrizations.weight.original1"] = value
        elif key == "encoder.mask_emb" and not keep_mask_emb:
            continue
        else:
            split[key] = value
    out: dict[str, Tensor] = {}
    for key, value in split.items():
        name = rename(key, _TO_TRANSFORMERS)
        if name is None:
            raise TransformersExportError(f"wavssl tensor {key!r} has no transformers counterpart")
        name = name if name.startswith(TRANSFORMERS_TOP_LEVEL) else TRANSFORMERS_PREFIX + name
        out[name] = value.detach().to("cpu", torch.float32).clone().contiguous()
    return out


def _get(cfg: Config, dotted: str) -> Any:
    value: Any = cfg
    for name in dotted.split("."):
        value = getattr(value, name)
    return value


def transformers_config(cfg: Config, vocab: Vocabulary | None = None) -> dict[str, Any]:
    """The ``Wav2Vec2Config`` dict (``config.json``) of a run: ``Wav2Vec2ForCTC`` with ``vocab``, else
    ``Wav2Vec2ForPreTraining``. Every key that changes the computation is written explicitly, so the file
    does not depend on transformers' defaults."""
    fe = cfg.model.frontend
    assert isinstance(fe, WaveformFrontend), "checked by transformers_problems"
    hf: dict[str, Any] = {
        "architectures": ["Wav2Vec2ForCTC" if vocab is not None else "Wav2Vec2ForPreTraining"],
        "model_type": "wav2vec2",
        "conv_dim": [c for c, _, _ in fe.conv_layers],
        "conv_kernel": [k for _, k, _ in fe.conv_layers],
        "conv_stride": [s for _, _, s in fe.conv_layers],
        "num_feat_extract_layers": len(fe.conv_layers),
        "feat_extract_norm": "group" if fe.norm_mode == "default" else "layer",
        "feat_extract_activation": "gelu",
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
        "feat_extract_dropout": 0.0,
        "add_adapter": False,
        "use_weighted_layer_sum": False,
        "apply_spec_augment": True,
        "torch_dtype": "float32",
    }
    for key, field, _ in TRANSFORMERS_FIELDS:
        hf[key] = _get(cfg, field)
    if vocab is not None:
        for key, field in TRANSFORMERS_CTC_FIELDS:
            hf[key] = _get(cfg, field)
        hf.update(vocab_size=len(vocab), pad_token_id=vocab.blank_id, bos_token_id=None, eos_token_id=None,
                  ctc_loss_reduction="sum", ctc_zero_infinity=True)
    return hf


def feature_extractor_config(cfg: Config, *, ctc: bool) -> dict[str, Any]:
    """``preprocessor_config.json`` of a ``Wav2Vec2FeatureExtractor``: the run's rate and per-utterance
    standardisation; attention masks on (wavssl masks padded frames in attention)."""
    out: dict[str, Any] = {
        "feature_extractor_type": "Wav2Vec2FeatureExtractor",
        "feature_size": 1,
        "sampling_rate": cfg.model.frontend.sample_rate,
        "padding_value": 0.0,
        "padding_side": "right",
        "do_normalize": bool(cfg.data.normalize),
        "return_attention_mask": True,
    }
    if ctc:
        out["processor_class"] = "Wav2Vec2Processor"
    return out


def tokenizer_files(vocab: Vocabulary) -> dict[str, dict[str, Any]]:
    """``Wav2Vec2CTCTokenizer`` files for ``vocab``: ``vocab.json`` (token -> id), ``tokenizer_config.json``
    and ``special_tokens_map.json``; pad = wavssl's blank, no bos/eos tokens, no lower-casing."""
    specials = {"pad_token": vocab.blank, "unk_token": vocab.unk}
    return {
        "vocab.json": {token: i for i, token in enumerate(vocab.tokens)},
        "tokenizer_config.json": {
            "tokenizer_class": "Wav2Vec2CTCTokenizer", "processor_class": "Wav2Vec2Processor", **specials,
            "word_delimiter_token": vocab.word_delimiter, "replace_word_delimiter_char": " ", "bos_token": None,
            "eos_token": None, "do_lower_case": False, "target_lang": None, "clean_up_tokenization_spaces": False,
        },
        "special_tokens_map.json": specials,
    }


def _json(content: dict[str, Any]) -> str:
    return json.dumps(content, indent=2, ensure_ascii=False) + "\n"
