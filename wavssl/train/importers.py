"""Import wav2vec 2.0 checkpoints from Hugging Face transformers (local or on the Hub) and fairseq into
wavssl run directories.

:func:`import_checkpoint` reads

- a transformers model directory: ``config.json`` plus ``model.safetensors`` (or a sharded
  ``model.safetensors.index.json``, or ``pytorch_model.bin``) of a ``Wav2Vec2ForPreTraining``,
  ``Wav2Vec2Model`` or ``Wav2Vec2ForCTC``, with or without the ``wav2vec2.`` key prefix; an optional
  ``preprocessor_config.json`` gives the sample rate and input normalisation;
- a Hugging Face Hub model id (``facebook/wav2vec2-base``) when no local path of that name exists:
  :func:`resolve_source` fetches the files an import needs with ``huggingface_hub.snapshot_download``
  (its cache, ``HF_HUB_OFFLINE`` and a ``revision`` apply) and reads the snapshot as above;
- a fairseq wav2vec 2.0 ``.pt`` file: a pretrained model, or the encoder of a CTC fine-tuned one
  (``w2v_encoder.w2v_model.`` keys), with its configuration under ``cfg`` or a legacy ``args``.

It builds the matching :class:`~wavssl.config.Config`, renames the tensors to wavssl's names
(q/k/v fused into ``qkv``; weight norm as ``weight_g``/``weight_v`` or
``parametrizations.weight.original0/1``), checks that every wavssl tensor is filled and every source
tensor is used, and writes ``config.json`` + ``model.safetensors`` with
:func:`~wavssl.train.checkpoint.save_model`. Neither transformers nor fairseq is imported.

The transformers name and config tables (:data:`TRANSFORMERS_NAMES`, :data:`TRANSFORMERS_FIELDS`,
:data:`TRANSFORMERS_CTC_FIELDS`) are read in both directions: :mod:`wavssl.export_transformers` writes
run directories back as transformers models with them.

A transformers ``Wav2Vec2ForCTC`` directory that holds its tokenizer (``vocab.json``, blank = pad token
= id 0) becomes a recognizer run (``task = "ctc"``, ``lm_head`` -> ``head``, ``vocab.json`` in wavssl's
format). Left out, each with a :class:`CheckpointImportWarning`:

- the CTC output layer of fine-tuned sources without a vocabulary (transformers ``lm_head`` without
  ``vocab.json``, fairseq ``w2v_encoder.proj``): only the encoder is imported;
- sources without pretraining heads (``Wav2Vec2Model``, ``Wav2Vec2ForCTC``, fairseq fine-tuned) get a
  freshly initialised quantizer, ``project_q`` and ``final_proj`` (pretraining runs); a source
  without a mask embedding gets a fresh ``encoder.mask_emb``.

Security: a fairseq ``.pt`` file is a Python pickle. It is read with ``torch.load(weights_only=True)``,
which cannot run code, allowing the few classes fairseq checkpoints hold (``argparse.Namespace``,
omegaconf containers). A file that pickles anything else is refused unless ``trust_checkpoint=True``
(``wavssl import-checkpoint --trust-checkpoint``): then it is read with full pickle, after a warning,
and a pickle can run arbitrary code. Pass it only for checkpoints you trust.
"""

from __future__ import annotations

import argparse
import ast
import collections
import copy
import dataclasses
import json
import logging
import math
import pickle
import re
import typing
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn
from wavssl_onnx.vocab import Vocabulary

from ..config import Config, ConfigError, ConvSpec, ModelConfig, WaveformFrontend, base
from ..models import build_model, build_recognizer
from .checkpoint import save_model

logger = logging.getLogger(__name__)


class CheckpointImportError(ValueError):
    """A source checkpoint cannot be imported; the message names the file and the field or tensor."""


class CheckpointImportWarning(UserWarning):
    """Part of a source checkpoint is not imported, or wavssl initialises part of the model afresh."""


# ------------------------------------------------------------------------------------------ API


def import_checkpoint(src: str | Path, run_dir: str | Path, *, base_config: Config | None = None,
                      trust_checkpoint: bool = False, revision: str | None = None) -> Path:
    """Convert a transformers directory, a fairseq ``.pt`` file or a Hugging Face Hub model into a
    wavssl run directory.

    Args:
        src: transformers model directory, fairseq checkpoint file, or (when no such local path
            exists) a Hub model id such as ``facebook/wav2vec2-base``, fetched with
            ``huggingface_hub.snapshot_download`` (its cache, ``HF_HUB_CACHE`` / ``HF_HOME``,
            ``HF_HUB_OFFLINE`` and ``HF_TOKEN`` apply; see :func:`resolve_source`).
        run_dir: wavssl run directory to write (``config.json`` + ``model.safetensors``, and
            ``vocab.json`` for a recognizer).
        base_config: where everything the source does not define comes from: the ``data``, ``optim``
            and ``train`` sections, and model fields such as the Gumbel temperatures and the feature
            penalty weight of transformers sources, or the streaming options (chunked attention,
            positional-conv look-ahead). Defaults to :func:`wavssl.config.base`.
        trust_checkpoint: read a fairseq ``.pt`` that pickles objects outside the allow-list with
            full pickle (which can run code from the file); without it such a file is refused.
        revision: Hub branch, tag or commit of a Hub id (default: ``main``); an error with a local path.
    Returns:
        ``run_dir`` as a Path.
    Raises:
        CheckpointImportError: unreadable or missing source, unsupported variant, or tensors that do not fit.

    A transformers ``Wav2Vec2ForCTC`` whose directory also holds its tokenizer's ``vocab.json`` becomes
    a recognizer run (``task = "ctc"``, output layer and vocabulary imported; the blank must be token 0).
    """
    src, run_dir = resolve_source(src, revision), Path(run_dir)
    start = copy.deepcopy(base_config) if base_config is not None else base()
    vocab = None
    if src.is_dir():
        cfg, state, vocab = _read_transformers(src, start)
    else:
        cfg, state = _read_fairseq(src, start, trust_checkpoint)
    try:
        cfg.validate()
    except ConfigError as e:
        raise CheckpointImportError(f"{src}: the imported configuration is invalid: {e}") from e
    model = _fill_model(src, cfg, state, vocab)
    save_model(run_dir, model, cfg)
    if vocab is not None:
        vocab.save(run_dir)
    logger.info("imported %s (%d tensors) -> %s", src, len(state), run_dir)
    return run_dir


# ------------------------------------------------------------------------------------- Hub ids

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
"""``name`` or ``owner/name`` as the Hub spells repository ids."""
_LOCAL_SUFFIXES = (".pt", ".bin", ".ckpt", ".safetensors", ".json")
"""Names ending like this are files the user meant, never Hub ids."""
_HUB_FILES = ["config.json", "preprocessor_config.json", "vocab.json", "tokenizer_config.json",
              "special_tokens_map.json"]
_HUB_WEIGHTS = (["model.safetensors", "model.safetensors.index.json", "model-*-of-*.safetensors"],
                ["pytorch_model.bin"])
"""What an import needs from a Hub repository: configs, tokenizer, then safetensors weights, or the
legacy pickle when the repository has no safetensors (never both)."""


def resolve_source(src: str | Path, revision: str | None = None) -> Path:
    """An existing local path as it is; otherwise a Hub model id, as the local snapshot folder
    ``huggingface_hub.snapshot_download`` gives (downloaded once, then read from its cache; with
    ``HF_HUB_OFFLINE=1`` only the cache is read). Only the files an import needs are fetched.

    Raises:
        CheckpointImportError: no such path and not a Hub id, or a Hub id that is neither cached nor
            downloadable (offline, unreachable, unknown, gated); the message names the id and the cache.
    """
    path = Path(src)
    if path.exists():
        if revision is not None:
            raise CheckpointImportError(f"{src}: revision={revision!r} applies to Hugging Face Hub ids, not to a local path")
        return path
    text = str(src)
    if not _HUB_ID.fullmatch(text) or text.lower().endswith(_LOCAL_SUFFIXES):
        raise CheckpointImportError(f"{src}: no such file or directory")
    try:
        import huggingface_hub
        from huggingface_hub import constants, errors
    except ImportError:
        raise CheckpointImportError(f"{src}: no such file or directory (and huggingface_hub, needed to read it as a "
                                    "Hub model id, is not installed: pip install huggingface_hub)") from None
    where = f"{text}@{revision}" if revision else text
    cache = constants.HF_HUB_CACHE
    try:
        folder = Path(huggingface_hub.snapshot_download(text, revision=revision, allow_patterns=_HUB_FILES + _HUB_WEIGHTS[0]))
        if not any((folder / name).is_file() for name in _HUB_WEIGHTS[0][:2]):
            folder = Path(huggingface_hub.snapshot_download(text, revision=revision, allow_patterns=_HUB_FILES + _HUB_WEIGHTS[1]))
    except errors.LocalEntryNotFoundError as e:
        why = ("HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE
               else f"the Hub cannot be reached: {_first_line(e.__cause__ or e)}")
        raise CheckpointImportError(
            f"{src}: no such local path, and Hub model {where!r} is not in the Hugging Face cache at {cache} ({why}); "
            f"download it where the Hub is reachable (hf download {text}) and use that cache (HF_HUB_CACHE or "
            "HF_HOME), or pass a local model directory") from None
    except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError, errors.GatedRepoError,
            errors.HfHubHTTPError, errors.HFValidationError, errors.IncompleteSnapshotError) as e:
        raise CheckpointImportError(f"{src}: no such local path, and Hub model {where!r} cannot be fetched: "
                                    f"{type(e).__name__}: {_first_line(e)}") from None
    logger.info("Hub model %s -> %s", where, folder)
    return folder


def _first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message (Hub errors run to several lines)."""
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)


# ------------------------------------------------------------------------------- tensor renaming

_Rules = tuple[tuple[re.Pattern[str], str], ...]

_PLACEHOLDERS = {
    "i": r"\d+",  # layer or block index
    "p": r"weight|bias",
    "wn": r"bias|weight_g|weight_v|parametrizations\.weight\.original[01]",  # weight-normalised conv, both namings
    "qkv": r"[qkv]",
}
"""What each ``{name}`` in a tensor-name pair stands for (see :func:`compile_names`)."""

TRANSFORMERS_NAMES: tuple[tuple[str, str], ...] = (
    ("feature_extractor.conv_layers.{i}.conv.{p}", "encoder.frontend.blocks.{i}.0.{p}"),
    ("feature_extractor.conv_layers.{i}.layer_norm.{p}", "encoder.frontend.blocks.{i}.1.{p}"),
    ("feature_projection.layer_norm.{p}", "encoder.feature_norm.{p}"),
    ("feature_projection.projection.{p}", "encoder.feature_proj.{p}"),
    ("masked_spec_embed", "encoder.mask_emb"),
    ("encoder.pos_conv_embed.conv.{wn}", "encoder.context.pos_conv.conv.{wn}"),
    ("encoder.layer_norm.{p}", "encoder.context.layer_norm.{p}"),
    ("encoder.layers.{i}.attention.{qkv}_proj.{p}", "encoder.context.layers.{i}.attention.{qkv}.{p}"),
    ("encoder.layers.{i}.attention.out_proj.{p}", "encoder.context.layers.{i}.attention.out.{p}"),
    ("encoder.layers.{i}.layer_norm.{p}", "encoder.context.layers.{i}.attn_norm.{p}"),
    ("encoder.layers.{i}.feed_forward.intermediate_dense.{p}", "encoder.context.layers.{i}.fc1.{p}"),
    ("encoder.layers.{i}.feed_forward.output_dense.{p}", "encoder.context.layers.{i}.fc2.{p}"),
    ("encoder.layers.{i}.final_layer_norm.{p}", "encoder.context.layers.{i}.ffn_norm.{p}"),
    ("quantizer.codevectors", "quantizer.codevectors"),
    ("quantizer.weight_proj.{p}", "quantizer.weight_proj.{p}"),
    ("project_q.{p}", "project_q.{p}"),
    ("project_hid.{p}", "final_proj.{p}"),
    ("lm_head.{p}", "head.{p}"),
)
"""transformers Wav2Vec2 tensor name (without the ``wav2vec2.`` prefix) <-> wavssl tensor name, one pair
per tensor family; the importer reads it left to right, :mod:`wavssl.export_transformers` right to
left. wavssl's side names the attention projections q, k, v separately (they are fused into ``qkv``
after renaming / split before it)."""

TRANSFORMERS_PREFIX = "wav2vec2."
"""Prefix of the encoder's tensors in ``Wav2Vec2ForPreTraining`` / ``Wav2Vec2ForCTC`` checkpoints."""
TRANSFORMERS_TOP_LEVEL = ("quantizer.", "project_q.", "project_hid.", "lm_head.")
"""transformers tensors outside the ``wav2vec2.`` encoder: pretraining heads and the CTC output layer."""

TRANSFORMERS_FIELDS: tuple[tuple[str, str, bool], ...] = (
    ("conv_bias", "model.frontend.conv_bias", True),
    ("hidden_size", "model.context.embed_dim", True),
    ("num_hidden_layers", "model.context.num_layers", True),
    ("num_attention_heads", "model.context.num_heads", True),
    ("intermediate_size", "model.context.ffn_dim", True),
    ("do_stable_layer_norm", "model.context.layer_norm_first", True),
    ("num_conv_pos_embeddings", "model.context.pos_conv_kernel", True),
    ("num_conv_pos_embedding_groups", "model.context.pos_conv_groups", True),
    ("num_codevector_groups", "model.quantizer.groups", True),
    ("num_codevectors_per_group", "model.quantizer.entries", True),
    ("codevector_dim", "model.quantizer.dim", True),
    ("proj_codevector_dim", "model.final_dim", True),
    ("hidden_dropout", "model.context.dropout", False),
    ("attention_dropout", "model.context.attention_dropout", False),
    ("activation_dropout", "model.context.activation_dropout", False),
    ("layerdrop", "model.context.layer_drop", False),
    ("feat_proj_dropout", "model.context.dropout_input", False),
    ("feat_quantizer_dropout", "model.context.dropout_features", False),
    ("mask_time_prob", "model.masking.mask_prob", False),
    ("mask_time_length", "model.masking.mask_length", False),
    ("mask_time_min_masks", "model.masking.min_masks", False),
    ("num_negatives", "model.masking.num_negatives", False),
    ("contrastive_logits_temperature", "model.loss.logit_temp", False),
    ("diversity_loss_weight", "model.loss.diversity_weight", False),
)
"""``Wav2Vec2Config`` key <-> wavssl :class:`~wavssl.config.Config` field (dotted path), and whether the
importer requires the key. The conv stack (``conv_dim`` / ``conv_kernel`` / ``conv_stride``) and
``feat_extract_norm`` are converted by code on both sides."""

TRANSFORMERS_CTC_FIELDS: tuple[tuple[str, str], ...] = (
    ("final_dropout", "ctc.final_dropout"),
    ("layerdrop", "ctc.layer_drop"),
    ("mask_time_prob", "ctc.mask_prob"),
    ("mask_time_length", "ctc.mask_length"),
    ("mask_feature_prob", "ctc.channel_prob"),
    ("mask_feature_length", "ctc.channel_length"),
)
"""Fine-tuning settings of a ``Wav2Vec2ForCTC`` <-> a wavssl recognizer run (they override the
pretraining fields of :data:`TRANSFORMERS_FIELDS` for CTC models)."""


def compile_names(pairs: tuple[tuple[str, str], ...] | list[tuple[str, str]], *, reverse: bool = False) -> _Rules:
    """(pattern, template) rules from name pairs: ``{name}`` placeholders (:data:`_PLACEHOLDERS`) become
    named groups on the source side and back-references on the target side; ``reverse`` swaps the sides."""
    rules = []
    for a, b in pairs:
        source, target = (b, a) if reverse else (a, b)
        parts = re.split(r"\{(\w+)\}", source)  # literal, name, literal, ...
        pattern = "".join(re.escape(part) if k % 2 == 0 else f"(?P<{part}>{_PLACEHOLDERS[part]})"
                          for k, part in enumerate(parts))
        rules.append((re.compile(pattern), re.sub(r"\{(\w+)\}", r"\\g<\1>", target)))
    return tuple(rules)


def rename(name: str, rules: _Rules) -> str | None:
    """``name`` under the first rule whose pattern matches all of it, or None."""
    for pattern, template in rules:
        match = pattern.fullmatch(name)
        if match:
            return match.expand(template)
    return None


_TRANSFORMERS_RULES = compile_names(TRANSFORMERS_NAMES)
_TRANSFORMERS_CTC_HEAD = re.compile(r"lm_head\.(weight|bias)")

_FAIRSEQ_RULES = compile_names([
    ("feature_extractor.conv_layers.{i}.0.{p}", "encoder.frontend.blocks.{i}.0.{p}"),
    # default mode: Sequential(conv, dropout, GroupNorm, GELU) on the first block only
    ("feature_extractor.conv_layers.{i}.2.{p}", "encoder.frontend.blocks.{i}.1.{p}"),
    # layer_norm mode: Sequential(conv, dropout, Sequential(transpose, LayerNorm, transpose), GELU)
    ("feature_extractor.conv_layers.{i}.2.1.{p}", "encoder.frontend.blocks.{i}.1.{p}"),
    ("layer_norm.{p}", "encoder.feature_norm.{p}"),
    ("post_extract_proj.{p}", "encoder.feature_proj.{p}"),
    ("mask_emb", "encoder.mask_emb"),
    ("encoder.pos_conv.0.{wn}", "encoder.context.pos_conv.conv.{wn}"),
    ("encoder.layer_norm.{p}", "encoder.context.layer_norm.{p}"),
    ("encoder.layers.{i}.self_attn.{qkv}_proj.{p}", "encoder.context.layers.{i}.attention.{qkv}.{p}"),
    ("encoder.layers.{i}.self_attn.out_proj.{p}", "encoder.context.layers.{i}.attention.out.{p}"),
    ("encoder.layers.{i}.self_attn_layer_norm.{p}", "encoder.context.layers.{i}.attn_norm.{p}"),
    ("encoder.layers.{i}.fc1.{p}", "encoder.context.layers.{i}.fc1.{p}"),
    ("encoder.layers.{i}.fc2.{p}", "encoder.context.layers.{i}.fc2.{p}"),
    ("encoder.layers.{i}.final_layer_norm.{p}", "encoder.context.layers.{i}.ffn_norm.{p}"),
    ("quantizer.vars", "quantizer.codevectors"),
    ("quantizer.weight_proj.{p}", "quantizer.weight_proj.{p}"),
    ("project_q.{p}", "project_q.{p}"),
    ("final_proj.{p}", "final_proj.{p}"),
])
_FAIRSEQ_CTC_HEAD = re.compile(r"w2v_encoder\.proj\.(weight|bias)")
_FAIRSEQ_FINETUNED_PREFIX = "w2v_encoder.w2v_model."

_QKV = re.compile(r"(encoder\.context\.layers\.\d+\.attention\.)([qkv])\.(weight|bias)")
_WEIGHT_NORM_NAMES = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}
_PRETRAINING_HEADS = ("quantizer.", "project_q.", "final_proj.")
_MASK_EMB = "encoder.mask_emb"


def _strip_prefix(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Drop ``prefix`` from the keys that carry it."""
    return {k.removeprefix(prefix): v for k, v in tensors.items()}


def _rename(src: Path, tensors: Mapping[str, Tensor], rules: _Rules, ctc_head: re.Pattern[str], *,
            keep_head: bool = False) -> dict[str, Tensor]:
    """Source tensors under wavssl names (q/k/v fused). The CTC head is left out with a warning unless
    ``keep_head``; any other tensor no rule places is an error."""
    out: dict[str, Tensor] = {}
    head: list[str] = []
    unknown: list[str] = []
    for key, value in tensors.items():
        if not keep_head and ctc_head.fullmatch(key):
            head.append(key)
            continue
        name = rename(key, rules)
        if name is None:
            unknown.append(key)
            continue
        stem, _, leaf = name.rpartition(".")
        out[f"{stem}.{_WEIGHT_NORM_NAMES[leaf]}" if leaf in _WEIGHT_NORM_NAMES else name] = value
    if unknown:
        raise CheckpointImportError(
            f"{src}: {len(unknown)} source tensor(s) have no place in a wavssl model, e.g. {unknown[:5]} "
            "(unsupported model variant or task head)")
    if head:
        warnings.warn(f"{src}: the CTC output layer ({', '.join(sorted(head))}) is not imported (no vocab.json "
                      "beside it): only the encoder is imported; wavssl CTC recognizers are added later.",
                      CheckpointImportWarning, stacklevel=4)
    return _fuse_qkv(src, out)


def _fuse_qkv(src: Path, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Concatenate each layer's separate q, k, v projections (rows) into the fused ``qkv``."""
    out: dict[str, Tensor] = {}
    parts: dict[tuple[str, str], dict[str, Tensor]] = {}
    for key, value in state.items():
        match = _QKV.fullmatch(key)
        if match is None:
            out[key] = value
        else:
            parts.setdefault((match[1], match[3]), {})[match[2]] = value
    for (prefix, kind), qkv in parts.items():
        missing = sorted(set("qkv") - set(qkv))
        if missing:
            raise CheckpointImportError(f"{src}: {prefix}{kind}: the {'/'.join(missing)} projection is missing")
        out[f"{prefix}qkv.{kind}"] = torch.cat([qkv["q"], qkv["k"], qkv["v"]])
    return out


def _fill_model(src: Path, cfg: Config, state: dict[str, Tensor], vocab: Vocabulary | None = None) -> nn.Module:
    """Build the wavssl model (seeded, so fresh parts are reproducible) and load ``state`` strictly: an
    ``SSLModel``, or a ``CTCModel`` over ``vocab`` for a recognizer (``cfg.task == "ctc"``). Only the
    pretraining heads (all of them) and the mask embedding may be missing."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if vocab is None:
            model: nn.Module = build_model(cfg.model)
        else:
            model = build_recognizer(cfg.model, cfg.ctc, len(vocab))
            model.vocab, model.normalize_audio = vocab, cfg.data.normalize
    target = model.state_dict()
    unexpected = sorted(set(state) - set(target))
    if unexpected:
        raise CheckpointImportError(f"{src}: tensors the imported config has no place for, e.g. {unexpected[:5]} "
                                    "(the source config and weights disagree)")
    missing = set(target) - set(state)
    heads = {k for k in target if k.startswith(_PRETRAINING_HEADS)}
    fresh: list[str] = []
    if heads and heads <= missing:
        missing -= heads
        fresh.append("quantizer, project_q and final_proj")
    if _MASK_EMB in missing:
        missing.discard(_MASK_EMB)
        fresh.append("mask embedding (encoder.mask_emb)")
    if missing:
        raise CheckpointImportError(f"{src}: {len(missing)} wavssl tensor(s) not found in the source, "
                                    f"e.g. {sorted(missing)[:5]}")
    for key, value in state.items():
        if value.shape != target[key].shape:
            raise CheckpointImportError(f"{src}: {key}: source shape {tuple(value.shape)} does not match the "
                                        f"imported config's {tuple(target[key].shape)}")
    if fresh:
        warnings.warn(f"{src}: the source has no {' and no '.join(fresh)}; they are freshly initialised "
                      "(random). Continue pretraining before relying on them.", CheckpointImportWarning,
                      stacklevel=3)
    model.load_state_dict({**target, **state}, strict=True)
    return model


# ------------------------------------------------------------------------------- config helpers


def _require(fields: Mapping[str, Any], key: str, src: Path) -> Any:
    """``fields[key]``; a missing or null field is an error naming the file."""
    value = fields.get(key)
    if value is None:
        raise CheckpointImportError(f"{src}: config field {key!r} is missing")
    return value


def _opt(fields: Mapping[str, Any], key: str, fallback: Any) -> Any:
    """``fields[key]`` converted to the type of ``fallback``, or ``fallback`` when absent/null."""
    value = fields.get(key)
    return fallback if value is None else type(fallback)(value)


def _expect(src: Path, fields: Mapping[str, Any], key: str, allowed: tuple[Any, ...], why: str) -> None:
    """Raise unless ``fields[key]`` (taking ``allowed[0]`` when absent) is one of ``allowed``."""
    value = fields.get(key, allowed[0])
    if value not in allowed:
        raise CheckpointImportError(f"{src}: unsupported {key}={value!r}: {why}")


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; errors name the file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointImportError(f"{path}: cannot read JSON: {e}") from e
    if not isinstance(data, dict):
        raise CheckpointImportError(f"{path}: expected a JSON object")
    return data


# ---------------------------------------------------------------------------------- transformers


def _read_transformers(src: Path, start: Config) -> tuple[Config, dict[str, Tensor], Vocabulary | None]:
    """Config, wavssl-named tensors and (for a CTC model with its tokenizer) vocabulary of a transformers
    Wav2Vec2 directory."""
    config_path = src / "config.json"
    if not config_path.is_file():
        raise CheckpointImportError(f"{src}: not a transformers model directory (no config.json)")
    hf = _read_json(config_path)
    cfg = _transformers_config(config_path, hf, start)
    preprocessor = src / "preprocessor_config.json"
    if preprocessor.is_file():
        fields = _read_json(preprocessor)
        rate = _opt(fields, "sampling_rate", cfg.model.frontend.sample_rate)
        cfg.model.frontend.sample_rate = cfg.data.sample_rate = rate
        cfg.data.normalize = _opt(fields, "do_normalize", cfg.data.normalize)
    tensors = _transformers_tensors(src)
    tensors = {k if k.startswith(TRANSFORMERS_TOP_LEVEL) else k.removeprefix(TRANSFORMERS_PREFIX): v
               for k, v in tensors.items()}
    vocab = None
    if "lm_head.weight" in tensors and (src / "vocab.json").is_file():
        vocab = _transformers_vocab(src, hf, int(tensors["lm_head.weight"].shape[0]))
        cfg.task = "ctc"
        for key, field in TRANSFORMERS_CTC_FIELDS:
            _set_field(cfg, field, hf.get(key))
    return cfg, _rename(src, tensors, _TRANSFORMERS_RULES, _TRANSFORMERS_CTC_HEAD, keep_head=vocab is not None), vocab


def _token(value: Any) -> str | None:
    """A special token as tokenizer files store it: a string, or an AddedToken dict with ``content``."""
    return value.get("content") if isinstance(value, dict) else value


def _transformers_vocab(src: Path, hf: Mapping[str, Any], rows: int) -> Vocabulary:
    """The wavssl Vocabulary of a ``Wav2Vec2CTCTokenizer`` (``vocab.json`` token -> id, special tokens from
    ``tokenizer_config.json`` / ``special_tokens_map.json``); the blank (pad token) must be id 0."""
    path = src / "vocab.json"
    table = _read_json(path)
    if not all(isinstance(k, str) and isinstance(v, int) for k, v in table.items()):
        raise CheckpointImportError(f"{path}: not a CTC tokenizer vocabulary (token -> id); a multilingual (nested, "
                                    "per-language) vocabulary is not supported")
    ids = sorted(table.values())
    if ids != list(range(len(ids))) or len(ids) != rows:
        raise CheckpointImportError(f"{path}: token ids must be 0..{rows - 1}, one per row of lm_head.weight "
                                    f"({rows} rows); got {len(ids)} tokens with ids {ids[:1]}..{ids[-1:]}")
    specials: dict[str, Any] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the tokenizer config wins
        if (src / name).is_file():
            specials.update({k: v for k, v in _read_json(src / name).items() if v is not None})
    tokens = [token for token, _ in sorted(table.items(), key=lambda item: item[1])]
    blank = _token(specials.get("pad_token", "<pad>"))
    unk = _token(specials.get("unk_token", "<unk>"))
    delimiter = _token(specials.get("word_delimiter_token", "|"))
    pad_id = hf.get("pad_token_id")
    if tokens[0] != blank or pad_id not in (None, 0):
        raise CheckpointImportError(f"{path}: the CTC blank (pad token {blank!r}, config pad_token_id={pad_id}) must be "
                                    f"token 0 as in wavssl; token 0 is {tokens[0]!r}")
    try:
        if unk is None or delimiter is None:  # an AddedToken entry without "content"
            raise ValueError(f"vocabulary {'unk' if unk is None else 'word_delimiter'} token None is not among the tokens")
        return Vocabulary(tokens, blank=blank, unk=unk, word_delimiter=delimiter)
    except ValueError as e:
        raise CheckpointImportError(f"{path}: cannot be a wavssl vocabulary: {e}") from e


def _transformers_tensors(src: Path) -> dict[str, Tensor]:
    """All tensors of ``model.safetensors``, its sharded index, or ``pytorch_model.bin``."""
    single, index, legacy = src / "model.safetensors", src / "model.safetensors.index.json", src / "pytorch_model.bin"
    try:
        if single.is_file():
            return load_file(str(single))
        if index.is_file():
            tensors: dict[str, Tensor] = {}
            for shard in sorted(set(_require(_read_json(index), "weight_map", index).values())):
                tensors.update(load_file(str(src / shard)))
            return tensors
        if legacy.is_file():
            return torch.load(legacy, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError) as e:
        raise CheckpointImportError(f"{src}: cannot read the weights: {e}") from e
    raise CheckpointImportError(f"{src}: no weights (expected model.safetensors, model.safetensors.index.json "
                                "or pytorch_model.bin)")


def _check_transformers(path: Path, hf: Mapping[str, Any]) -> None:
    """Reject transformers configs wavssl cannot represent exactly."""
    _expect(path, hf, "model_type", ("wav2vec2",), "only wav2vec2 models are imported")
    _expect(path, hf, "hidden_act", ("gelu",), "wavssl Transformer layers use exact GELU")
    _expect(path, hf, "feat_extract_activation", ("gelu",), "the wavssl front end uses exact GELU")
    _expect(path, hf, "feat_extract_norm", ("group", "layer"), "expected group or layer")
    _expect(path, hf, "add_adapter", (False,), "adapter layers are not supported")
    _expect(path, hf, "adapter_attn_dim", (None,), "attention adapters are not supported")
    eps = hf.get("layer_norm_eps", 1e-5)
    if not math.isclose(eps, 1e-5, rel_tol=1e-6):
        raise CheckpointImportError(f"{path}: unsupported layer_norm_eps={eps!r}: wavssl LayerNorms use 1e-5")


def _set_field(cfg: Config, dotted: str, value: Any) -> None:
    """Set ``cfg.<dotted>`` to ``value`` converted to the field's type; None leaves it unchanged."""
    if value is None:
        return
    *parents, leaf = dotted.split(".")
    owner = cfg
    for name in parents:
        owner = getattr(owner, name)
    setattr(owner, leaf, type(getattr(owner, leaf))(value))


def _transformers_config(path: Path, hf: Mapping[str, Any], start: Config) -> Config:
    """wavssl Config from a transformers ``Wav2Vec2Config`` dict, over ``start`` (:data:`TRANSFORMERS_FIELDS`)."""
    _check_transformers(path, hf)
    dims, kernels, strides = (list(_require(hf, k, path)) for k in ("conv_dim", "conv_kernel", "conv_stride"))
    count = hf.get("num_feat_extract_layers", len(dims))
    if not len(dims) == len(kernels) == len(strides) == count:
        raise CheckpointImportError(f"{path}: conv_dim, conv_kernel, conv_stride and num_feat_extract_layers "
                                    f"disagree ({len(dims)}, {len(kernels)}, {len(strides)}, {count})")
    fe = start.model.frontend
    start.model.frontend = WaveformFrontend(
        sample_rate=fe.sample_rate, feature_grad_mult=fe.feature_grad_mult,
        conv_layers=tuple((int(c), int(k), int(s)) for c, k, s in zip(dims, kernels, strides)),
        norm_mode="default" if _require(hf, "feat_extract_norm", path) == "group" else "layer_norm")
    start.model.context.pos_conv_weight_norm = True
    for key, field, required in TRANSFORMERS_FIELDS:
        _set_field(start, field, _require(hf, key, path) if required else hf.get(key))
    return start


# --------------------------------------------------------------------------------------- fairseq

_FAIRSEQ_TRAINING_DEFAULTS: dict[str, Any] = {
    "negatives_from_everywhere": False, "cross_sample_negatives": 0, "codebook_negatives": 0,
    "mask_selection": "static", "no_mask_overlap": False,
}
"""fairseq pretraining options with no wavssl equivalent; other values only change further training."""


def _fairseq_safe_globals() -> list[Any]:
    """Classes a fairseq checkpoint pickles besides tensors and plain containers, allowed to
    ``torch.load(weights_only=True)``: ``argparse.Namespace`` (legacy ``args``) and, where omegaconf
    is installed, its containers and nodes (hydra ``cfg``). None of them runs code on unpickling."""
    allowed: list[Any] = [argparse.Namespace, collections.defaultdict, typing.Any]
    try:
        import omegaconf
        from omegaconf import base as oc_base
        from omegaconf import nodes as oc_nodes
    except ImportError:
        return allowed
    allowed += [omegaconf.DictConfig, omegaconf.ListConfig, oc_base.ContainerMetadata, oc_base.Metadata]
    allowed += [getattr(oc_nodes, name) for name in ("AnyNode", "StringNode", "IntegerNode", "FloatNode",
                                                     "BooleanNode", "EnumNode", "ValueNode") if hasattr(oc_nodes, name)]
    return allowed


def _load_pickle(path: Path, trust: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True`` and :func:`_fairseq_safe_globals` allowed. A file that
    pickles anything else is refused, unless ``trust`` (``--trust-checkpoint``): then it is read with
    full pickle, which can run code stored in the file (with a warning)."""
    try:
        with torch.serialization.safe_globals(_fairseq_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        reason = f"it pickles {found[1]}" if found else "not a weights-only pickle"
        if not trust:
            raise CheckpointImportError(
                f"{path}: refused: {reason}, which a fairseq checkpoint does not need and which could run code "
                "when unpickled; import it with --trust-checkpoint (trust_checkpoint=True) only if you trust "
                "where it came from") from None
        warnings.warn(f"{path}: cannot be read with torch.load(weights_only=True) ({reason}); reading it with full "
                      "pickle as --trust-checkpoint asks, which can execute arbitrary code stored in the file.",
                      CheckpointImportWarning, stacklevel=4)
    except (OSError, RuntimeError) as e:
        raise CheckpointImportError(f"{path}: cannot read the checkpoint: {e}") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure; re-raised naming the file
        raise CheckpointImportError(f"{path}: cannot read the checkpoint: {type(e).__name__}: {e}") from e


def _mapping(src: Path, value: Any, what: str) -> dict[str, Any]:
    """A config section as a plain dict: a dict, a dict-like (OmegaConf) or an argparse Namespace."""
    if value is None:
        return {}
    if isinstance(value, argparse.Namespace):
        return dict(vars(value))
    if hasattr(value, "keys"):
        return {k: value[k] for k in value.keys()}
    raise CheckpointImportError(f"{src}: {what} is a {type(value).__name__}, not a config mapping")


def _fairseq_sections(src: Path, ckpt: Mapping[str, Any], finetuned: bool) -> tuple[dict[str, Any], ...]:
    """(model, task, criterion) config sections of the pretrained model; for a fine-tuned checkpoint,
    those of its ``w2v_args`` (the pretraining config with the fine-tuning overrides)."""
    if ckpt.get("cfg") is not None:
        cfg = _mapping(src, ckpt["cfg"], "cfg")
        model = _mapping(src, cfg.get("model"), "cfg['model']")
        sections = (model, _mapping(src, cfg.get("task"), "cfg['task']"),
                    _mapping(src, cfg.get("criterion"), "cfg['criterion']"))
    elif ckpt.get("args") is not None:
        model = _mapping(src, ckpt["args"], "args")
        sections = (model, model, model)
    else:
        raise CheckpointImportError(f"{src}: no 'cfg' or 'args' entry: the model configuration is missing")
    if not finetuned:
        return sections
    inner = _mapping(src, model.get("w2v_args"), "w2v_args")
    if not inner:
        raise CheckpointImportError(f"{src}: fine-tuned checkpoint without w2v_args (the pretraining config)")
    if "model" in inner:
        return _mapping(src, inner["model"], "w2v_args.model"), _mapping(src, inner.get("task"), "w2v_args.task"), {}
    return inner, inner, {}


def _literal(src: Path, key: str, value: Any) -> Any:
    """A config value that legacy fairseq stores as a Python-literal string (parsed safely)."""
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError) as e:
        raise CheckpointImportError(f"{src}: cannot parse {key}={value!r}: {e}") from e


_MAX_CONV_REPEAT = 64
"""Largest ``* n`` accepted in ``conv_feature_layers`` (real stacks have about 7 blocks)."""


def _layer_list(node: ast.expr) -> list[Any]:
    """Evaluate a ``conv_feature_layers`` expression: list literals joined by ``+``, repeated by ``* int``."""
    if isinstance(node, ast.List):
        return [ast.literal_eval(element) for element in node.elts]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _layer_list(node.left) + _layer_list(node.right)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        items, count = (node.left, node.right) if isinstance(node.right, ast.Constant) else (node.right, node.left)
        times = ast.literal_eval(count)
        if not isinstance(times, int) or not 0 < times <= _MAX_CONV_REPEAT:
            raise ValueError(f"repeat count {ast.unparse(count)!r} is not an integer in 1..{_MAX_CONV_REPEAT}")
        return _layer_list(items) * times
    raise ValueError(f"unsupported expression {ast.unparse(node)!r}")


def _conv_layers(src: Path, spec: Any) -> tuple[ConvSpec, ...]:
    """fairseq ``conv_feature_layers`` (string expression or sequence) -> (channels, kernel, stride) tuples."""
    try:
        layers = _layer_list(ast.parse(spec, mode="eval").body) if isinstance(spec, str) else list(spec)
        out = tuple((int(c), int(k), int(s)) for c, k, s in layers)
    except (SyntaxError, ValueError, TypeError) as e:
        raise CheckpointImportError(f"{src}: cannot parse conv_feature_layers={spec!r}: {e}") from e
    if not out or any(v <= 0 for layer in out for v in layer):
        raise CheckpointImportError(f"{src}: conv_feature_layers={spec!r} is empty or not positive")
    return out


def _check_fairseq(src: Path, m: Mapping[str, Any], finetuned: bool) -> None:
    """Reject fairseq model configs wavssl cannot represent exactly; warn about training-only options."""
    name = m.get("_name", m.get("arch"))
    if name not in (None, "wav2vec2"):
        raise CheckpointImportError(f"{src}: unsupported model {name!r}: only wav2vec2 models are imported")
    _expect(src, m, "extractor_mode", ("default", "layer_norm"), "expected default or layer_norm")
    _expect(src, m, "activation_fn", ("gelu",), "wavssl Transformer layers use exact GELU")
    _expect(src, m, "layer_type", ("transformer",), "only the plain Transformer layer is supported")
    _expect(src, m, "pos_conv_depth", (1,), "only a single positional conv is supported")
    _expect(src, m, "conv_pos_batch_norm", (False,), "the positional conv must use weight norm")
    _expect(src, m, "quantize_input", (False,), "quantised inputs are not supported")
    _expect(src, m, "target_glu", (False,), "a GLU on the targets is not supported")
    if not finetuned:  # a fine-tuned encoder has no pretraining heads left
        _expect(src, m, "quantize_targets", (True,), "wavssl targets are always quantised")
        _expect(src, m, "quantizer_depth", (1,), "the quantizer projection must be a single Linear")
    changed = {k: m[k] for k, v in _FAIRSEQ_TRAINING_DEFAULTS.items() if m.get(k, v) != v}
    if changed:
        warnings.warn(f"{src}: fairseq options {changed} have no wavssl equivalent; the weights import exactly, "
                      "but further pretraining uses wavssl's masking and negative sampling.",
                      CheckpointImportWarning, stacklevel=5)


def _fairseq_config(src: Path, sections: tuple[dict[str, Any], ...], start: Config, finetuned: bool) -> Config:
    """wavssl Config from fairseq (model, task, criterion) config sections, over ``start``."""
    m, task, criterion = sections
    _check_fairseq(src, m, finetuned)
    embed_dim = int(_require(m, "encoder_embed_dim", src))
    final_dim = int(m.get("final_dim") or 0) or embed_dim
    mc = start.model
    fe, cx, q, mk, ls = mc.frontend, mc.context, mc.quantizer, mc.masking, mc.loss
    temps = _literal(src, "latent_temp", m.get("latent_temp") or (q.max_temp, q.min_temp, q.temp_decay))
    weights = _literal(src, "loss_weights", criterion.get("loss_weights") or
                       (ls.diversity_weight, ls.feature_penalty_weight))
    if len(temps) != 3 or len(weights) != 2:
        raise CheckpointImportError(f"{src}: expected latent_temp=(max, min, decay) and loss_weights=[diversity, "
                                    f"feature penalty], got {temps!r} and {weights!r}")
    rate = _opt(task, "sample_rate", fe.sample_rate)
    start.data.sample_rate = rate
    start.data.normalize = _opt(task, "normalize", start.data.normalize)
    start.model = ModelConfig(
        frontend=WaveformFrontend(
            sample_rate=rate, conv_layers=_conv_layers(src, _require(m, "conv_feature_layers", src)),
            norm_mode=_require(m, "extractor_mode", src), conv_bias=bool(_require(m, "conv_bias", src)),
            feature_grad_mult=_opt(m, "feature_grad_mult", fe.feature_grad_mult)),
        context=dataclasses.replace(
            cx, embed_dim=embed_dim, num_layers=int(_require(m, "encoder_layers", src)),
            num_heads=int(_require(m, "encoder_attention_heads", src)),
            ffn_dim=int(_require(m, "encoder_ffn_embed_dim", src)),
            layer_norm_first=bool(_require(m, "layer_norm_first", src)),
            pos_conv_kernel=int(_require(m, "conv_pos", src)),
            pos_conv_groups=int(_require(m, "conv_pos_groups", src)),
            pos_conv_weight_norm=True,
            dropout=_opt(m, "dropout", cx.dropout),
            attention_dropout=_opt(m, "attention_dropout", cx.attention_dropout),
            activation_dropout=_opt(m, "activation_dropout", cx.activation_dropout),
            layer_drop=_opt(m, "encoder_layerdrop", cx.layer_drop),
            dropout_input=_opt(m, "dropout_input", cx.dropout_input),
            dropout_features=_opt(m, "dropout_features", cx.dropout_features)),
        quantizer=dataclasses.replace(
            q, groups=int(_require(m, "latent_groups", src)), entries=int(_require(m, "latent_vars", src)),
            dim=int(m.get("latent_dim") or 0) or final_dim,
            max_temp=float(temps[0]), min_temp=float(temps[1]), temp_decay=float(temps[2])),
        masking=dataclasses.replace(
            mk, mask_prob=_opt(m, "mask_prob", mk.mask_prob), mask_length=_opt(m, "mask_length", mk.mask_length),
            min_masks=2,  # fairseq's wav2vec2 hard-codes two spans at least
            require_same_masks=_opt(m, "require_same_masks", mk.require_same_masks),
            num_negatives=_opt(m, "num_negatives", mk.num_negatives)),
        loss=dataclasses.replace(
            ls, logit_temp=_opt(m, "logit_temp", ls.logit_temp), diversity_weight=float(weights[0]),
            feature_penalty_weight=float(weights[1])),
        final_dim=final_dim,
    )
    return start


def _read_fairseq(src: Path, start: Config, trust: bool = False) -> tuple[Config, dict[str, Tensor]]:
    """Config and wavssl-named tensors of a fairseq wav2vec 2.0 checkpoint (pretrained or fine-tuned)."""
    ckpt = _load_pickle(src, trust)
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("model"), Mapping):
        raise CheckpointImportError(f"{src}: not a fairseq checkpoint (no 'model' state dict)")
    tensors = dict(ckpt["model"])
    finetuned = any(k.startswith(_FAIRSEQ_FINETUNED_PREFIX) for k in tensors)
    cfg = _fairseq_config(src, _fairseq_sections(src, ckpt, finetuned), start, finetuned)
    state = _rename(src, _strip_prefix(tensors, _FAIRSEQ_FINETUNED_PREFIX), _FAIRSEQ_RULES, _FAIRSEQ_CTC_HEAD)
    frame_dim, embed_dim = cfg.model.frontend.frame_dim, cfg.model.context.embed_dim
    if "encoder.feature_proj.weight" not in state and frame_dim == embed_dim:
        # fairseq omits post_extract_proj when the frame and model widths agree: an identity projection
        state["encoder.feature_proj.weight"] = torch.eye(embed_dim)
        state["encoder.feature_proj.bias"] = torch.zeros(embed_dim)
    return cfg, state
