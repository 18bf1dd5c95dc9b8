"""Import wav2vec 2.0 checkpoints from Hugging Face transformers and fairseq into wavssl run directories.

:func:`import_checkpoint` reads

- a transformers model directory: ``config.json`` plus ``model.safetensors`` (or a sharded
  ``model.safetensors.index.json``, or ``pytorch_model.bin``) of a ``Wav2Vec2ForPreTraining``,
  ``Wav2Vec2Model`` or ``Wav2Vec2ForCTC``, with or without the ``wav2vec2.`` key prefix; an optional
  ``preprocessor_config.json`` gives the sample rate and input normalisation;
- a fairseq wav2vec 2.0 ``.pt`` file: a pretrained model, or the encoder of a CTC fine-tuned one
  (``w2v_encoder.w2v_model.`` keys), with its configuration under ``cfg`` or a legacy ``args``.

It builds the matching :class:`~wavssl.config.ModelConfig`, renames the tensors to wavssl's names
(q/k/v fused into ``qkv``; weight norm as ``weight_g``/``weight_v`` or
``parametrizations.weight.original0/1``), checks that every wavssl tensor is filled and every source
tensor is used, and writes ``config.json`` + ``model.safetensors`` with
:func:`~wavssl.train.checkpoint.save_model`. Neither transformers nor fairseq is imported.

Left out, each with a :class:`CheckpointImportWarning`:

- the CTC output layer of fine-tuned sources (transformers ``lm_head``, fairseq ``w2v_encoder.proj``):
  wavssl's CTC recognizers are added later, so only the encoder is imported;
- sources without pretraining heads (``Wav2Vec2Model``, ``Wav2Vec2ForCTC``, fairseq fine-tuned) get a
  freshly initialised quantizer, ``project_q`` and ``final_proj``; a source without a mask embedding
  gets a fresh ``encoder.mask_emb``.

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
from torch import Tensor

from ..config import Config, ConfigError, ConvSpec, ModelConfig, base
from ..models import SSLModel, build_model
from .checkpoint import save_model

logger = logging.getLogger(__name__)


class CheckpointImportError(ValueError):
    """A source checkpoint cannot be imported; the message names the file and the field or tensor."""


class CheckpointImportWarning(UserWarning):
    """Part of a source checkpoint is not imported, or wavssl initialises part of the model afresh."""


# ------------------------------------------------------------------------------------------ API


def import_checkpoint(src: str | Path, run_dir: str | Path, *, base_config: Config | None = None,
                      trust_checkpoint: bool = False) -> Path:
    """Convert a transformers directory or a fairseq ``.pt`` file into a wavssl run directory.

    Args:
        src: transformers model directory, or fairseq checkpoint file.
        run_dir: wavssl run directory to write (``config.json`` + ``model.safetensors``).
        base_config: where everything the source does not define comes from: the ``data``, ``optim``
            and ``train`` sections, and model fields such as the Gumbel temperatures and the feature
            penalty weight of transformers sources, or the streaming options (chunked attention,
            positional-conv look-ahead). Defaults to :func:`wavssl.config.base`.
        trust_checkpoint: read a fairseq ``.pt`` that pickles objects outside the allow-list with
            full pickle (which can run code from the file); without it such a file is refused.
    Returns:
        ``run_dir`` as a Path.
    Raises:
        CheckpointImportError: unreadable source, unsupported variant, or tensors that do not fit.
    """
    src, run_dir = Path(src), Path(run_dir)
    start = copy.deepcopy(base_config) if base_config is not None else base()
    if src.is_dir():
        cfg, state = _read_transformers(src, start)
    elif src.is_file():
        cfg, state = _read_fairseq(src, start, trust_checkpoint)
    else:
        raise CheckpointImportError(f"{src}: no such file or directory")
    try:
        cfg.validate()
    except ConfigError as e:
        raise CheckpointImportError(f"{src}: the imported configuration is invalid: {e}") from e
    model = _fill_model(src, cfg.model, state)
    save_model(run_dir, model, cfg)
    logger.info("imported %s (%d tensors) -> %s", src, len(state), run_dir)
    return run_dir


# ------------------------------------------------------------------------------- tensor renaming

_Rules = tuple[tuple[re.Pattern[str], str], ...]


def _compile(pairs: list[tuple[str, str]]) -> _Rules:
    """Compile (source regex, wavssl template) pairs."""
    return tuple((re.compile(pattern), template) for pattern, template in pairs)


_WN = r"(bias|weight_g|weight_v|parametrizations\.weight\.original[01])"
"""Tensor names of a weight-normalised conv, in both the old and the parametrization naming."""

_LAYER = r"encoder\.layers\.(\d+)\."
_CTX = r"encoder.context.layers.\1."

_TRANSFORMERS_RULES = _compile([
    (r"feature_extractor\.conv_layers\.(\d+)\.conv\.(weight|bias)", r"encoder.frontend.blocks.\1.0.\2"),
    (r"feature_extractor\.conv_layers\.(\d+)\.layer_norm\.(weight|bias)", r"encoder.frontend.blocks.\1.1.\2"),
    (r"feature_projection\.layer_norm\.(weight|bias)", r"encoder.feature_norm.\1"),
    (r"feature_projection\.projection\.(weight|bias)", r"encoder.feature_proj.\1"),
    (r"masked_spec_embed", "encoder.mask_emb"),
    (rf"encoder\.pos_conv_embed\.conv\.{_WN}", r"encoder.context.pos_conv.conv.\1"),
    (r"encoder\.layer_norm\.(weight|bias)", r"encoder.context.layer_norm.\1"),
    (_LAYER + r"attention\.([qkv])_proj\.(weight|bias)", _CTX + r"attention.\2.\3"),
    (_LAYER + r"attention\.out_proj\.(weight|bias)", _CTX + r"attention.out.\2"),
    (_LAYER + r"layer_norm\.(weight|bias)", _CTX + r"attn_norm.\2"),
    (_LAYER + r"feed_forward\.intermediate_dense\.(weight|bias)", _CTX + r"fc1.\2"),
    (_LAYER + r"feed_forward\.output_dense\.(weight|bias)", _CTX + r"fc2.\2"),
    (_LAYER + r"final_layer_norm\.(weight|bias)", _CTX + r"ffn_norm.\2"),
    (r"quantizer\.codevectors", "quantizer.codevectors"),
    (r"quantizer\.weight_proj\.(weight|bias)", r"quantizer.weight_proj.\1"),
    (r"project_q\.(weight|bias)", r"project_q.\1"),
    (r"project_hid\.(weight|bias)", r"final_proj.\1"),
])
_TRANSFORMERS_CTC_HEAD = re.compile(r"lm_head\.(weight|bias)")
_TRANSFORMERS_PREFIX = "wav2vec2."

_FAIRSEQ_RULES = _compile([
    (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", r"encoder.frontend.blocks.\1.0.\2"),
    # default mode: Sequential(conv, dropout, GroupNorm, GELU) on the first block only
    (r"feature_extractor\.conv_layers\.(\d+)\.2\.(weight|bias)", r"encoder.frontend.blocks.\1.1.\2"),
    # layer_norm mode: Sequential(conv, dropout, Sequential(transpose, LayerNorm, transpose), GELU)
    (r"feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)", r"encoder.frontend.blocks.\1.1.\2"),
    (r"layer_norm\.(weight|bias)", r"encoder.feature_norm.\1"),
    (r"post_extract_proj\.(weight|bias)", r"encoder.feature_proj.\1"),
    (r"mask_emb", "encoder.mask_emb"),
    (rf"encoder\.pos_conv\.0\.{_WN}", r"encoder.context.pos_conv.conv.\1"),
    (r"encoder\.layer_norm\.(weight|bias)", r"encoder.context.layer_norm.\1"),
    (_LAYER + r"self_attn\.([qkv])_proj\.(weight|bias)", _CTX + r"attention.\2.\3"),
    (_LAYER + r"self_attn\.out_proj\.(weight|bias)", _CTX + r"attention.out.\2"),
    (_LAYER + r"self_attn_layer_norm\.(weight|bias)", _CTX + r"attn_norm.\2"),
    (_LAYER + r"fc1\.(weight|bias)", _CTX + r"fc1.\2"),
    (_LAYER + r"fc2\.(weight|bias)", _CTX + r"fc2.\2"),
    (_LAYER + r"final_layer_norm\.(weight|bias)", _CTX + r"ffn_norm.\2"),
    (r"quantizer\.vars", "quantizer.codevectors"),
    (r"quantizer\.weight_proj\.(weight|bias)", r"quantizer.weight_proj.\1"),
    (r"project_q\.(weight|bias)", r"project_q.\1"),
    (r"final_proj\.(weight|bias)", r"final_proj.\1"),
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


def _rename(src: Path, tensors: Mapping[str, Tensor], rules: _Rules, ctc_head: re.Pattern[str]) -> dict[str, Tensor]:
    """Source tensors under wavssl names (q/k/v fused). The CTC head is left out with a warning;
    any other tensor no rule places is an error."""
    out: dict[str, Tensor] = {}
    head: list[str] = []
    unknown: list[str] = []
    for key, value in tensors.items():
        if ctc_head.fullmatch(key):
            head.append(key)
            continue
        for pattern, template in rules:
            match = pattern.fullmatch(key)
            if match:
                name = match.expand(template)
                stem, _, leaf = name.rpartition(".")
                out[f"{stem}.{_WEIGHT_NORM_NAMES[leaf]}" if leaf in _WEIGHT_NORM_NAMES else name] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointImportError(
            f"{src}: {len(unknown)} source tensor(s) have no place in a wavssl model, e.g. {unknown[:5]} "
            "(unsupported model variant or task head)")
    if head:
        warnings.warn(f"{src}: the CTC output layer ({', '.join(sorted(head))}) is not imported: wavssl CTC "
                      "recognizers are added later; only the encoder is imported.", CheckpointImportWarning,
                      stacklevel=4)
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


def _fill_model(src: Path, cfg: ModelConfig, state: dict[str, Tensor]) -> SSLModel:
    """Build the wavssl model (seeded, so fresh parts are reproducible) and load ``state`` strictly;
    only the pretraining heads (all of them) and the mask embedding may be missing."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(cfg)
    target = model.state_dict()
    unexpected = sorted(set(state) - set(target))
    if unexpected:
        raise CheckpointImportError(f"{src}: tensors the imported config has no place for, e.g. {unexpected[:5]} "
                                    "(the source config and weights disagree)")
    missing = set(target) - set(state)
    heads = {k for k in target if k.startswith(_PRETRAINING_HEADS)}
    fresh: list[str] = []
    if heads <= missing:
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


def _read_transformers(src: Path, start: Config) -> tuple[Config, dict[str, Tensor]]:
    """Config and wavssl-named tensors of a transformers Wav2Vec2 directory."""
    config_path = src / "config.json"
    if not config_path.is_file():
        raise CheckpointImportError(f"{src}: not a transformers model directory (no config.json)")
    cfg = _transformers_config(config_path, _read_json(config_path), start)
    preprocessor = src / "preprocessor_config.json"
    if preprocessor.is_file():
        fields = _read_json(preprocessor)
        rate = _opt(fields, "sampling_rate", cfg.model.frontend.sample_rate)
        cfg.model.frontend.sample_rate = cfg.data.sample_rate = rate
        cfg.data.normalize = _opt(fields, "do_normalize", cfg.data.normalize)
    tensors = _strip_prefix(_transformers_tensors(src), _TRANSFORMERS_PREFIX)
    return cfg, _rename(src, tensors, _TRANSFORMERS_RULES, _TRANSFORMERS_CTC_HEAD)


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


def _transformers_config(path: Path, hf: Mapping[str, Any], start: Config) -> Config:
    """wavssl Config from a transformers ``Wav2Vec2Config`` dict, over ``start``."""
    _check_transformers(path, hf)
    dims, kernels, strides = (list(_require(hf, k, path)) for k in ("conv_dim", "conv_kernel", "conv_stride"))
    count = hf.get("num_feat_extract_layers", len(dims))
    if not len(dims) == len(kernels) == len(strides) == count:
        raise CheckpointImportError(f"{path}: conv_dim, conv_kernel, conv_stride and num_feat_extract_layers "
                                    f"disagree ({len(dims)}, {len(kernels)}, {len(strides)}, {count})")
    m = start.model
    fe, cx, q, mk, ls = m.frontend, m.context, m.quantizer, m.masking, m.loss
    start.model = ModelConfig(
        frontend=dataclasses.replace(
            fe, kind="waveform", conv_layers=tuple((int(c), int(k), int(s)) for c, k, s in zip(dims, kernels, strides)),
            norm_mode="default" if _require(hf, "feat_extract_norm", path) == "group" else "layer_norm",
            conv_bias=bool(_require(hf, "conv_bias", path))),
        context=dataclasses.replace(
            cx, embed_dim=int(_require(hf, "hidden_size", path)),
            num_layers=int(_require(hf, "num_hidden_layers", path)),
            num_heads=int(_require(hf, "num_attention_heads", path)),
            ffn_dim=int(_require(hf, "intermediate_size", path)),
            layer_norm_first=bool(_require(hf, "do_stable_layer_norm", path)),
            pos_conv_kernel=int(_require(hf, "num_conv_pos_embeddings", path)),
            pos_conv_groups=int(_require(hf, "num_conv_pos_embedding_groups", path)),
            pos_conv_weight_norm=True,
            dropout=_opt(hf, "hidden_dropout", cx.dropout),
            attention_dropout=_opt(hf, "attention_dropout", cx.attention_dropout),
            activation_dropout=_opt(hf, "activation_dropout", cx.activation_dropout),
            layer_drop=_opt(hf, "layerdrop", cx.layer_drop),
            dropout_input=_opt(hf, "feat_proj_dropout", cx.dropout_input),
            dropout_features=_opt(hf, "feat_quantizer_dropout", cx.dropout_features)),
        quantizer=dataclasses.replace(
            q, groups=int(_require(hf, "num_codevector_groups", path)),
            entries=int(_require(hf, "num_codevectors_per_group", path)),
            dim=int(_require(hf, "codevector_dim", path))),
        masking=dataclasses.replace(
            mk, mask_prob=_opt(hf, "mask_time_prob", mk.mask_prob),
            mask_length=_opt(hf, "mask_time_length", mk.mask_length),
            min_masks=_opt(hf, "mask_time_min_masks", mk.min_masks),
            num_negatives=_opt(hf, "num_negatives", mk.num_negatives),
            channel_prob=_opt(hf, "mask_feature_prob", mk.channel_prob),
            channel_length=_opt(hf, "mask_feature_length", mk.channel_length)),
        loss=dataclasses.replace(
            ls, logit_temp=_opt(hf, "contrastive_logits_temperature", ls.logit_temp),
            diversity_weight=_opt(hf, "diversity_loss_weight", ls.diversity_weight)),
        final_dim=int(_require(hf, "proj_codevector_dim", path)),
    )
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
        frontend=dataclasses.replace(
            fe, kind="waveform", sample_rate=rate,
            conv_layers=_conv_layers(src, _require(m, "conv_feature_layers", src)),
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
            num_negatives=_opt(m, "num_negatives", mk.num_negatives),
            channel_prob=_opt(m, "mask_channel_prob", mk.channel_prob),
            channel_length=_opt(m, "mask_channel_length", mk.channel_length)),
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
