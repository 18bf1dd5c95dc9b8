"""Imported checkpoints compute what their source computes.

Randomly initialised transformers wav2vec2 models (BASE-shaped, small post-LN and small pre-LN /
layer-norm front end) are saved, imported into wavssl run directories (mostly through
``python -m wavssl import-checkpoint``) and compared in eval mode: frame features, every layer's
hidden state, the final context vectors and the quantizer's chosen codevectors. fairseq-format ``.pt``
files are written by renaming the same weights to fairseq's names.
"""

from __future__ import annotations

import argparse
import fractions
import itertools
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from wavssl.config import base
from wavssl.train.checkpoint import load, load_config
from wavssl.train.importers import CheckpointImportError, CheckpointImportWarning, import_checkpoint

transformers = pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[1]
TOL = 1e-4

BASE = dict(conv_dim=(512,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
            feat_extract_norm="group", conv_bias=False, do_stable_layer_norm=False, hidden_size=768,
            num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, num_conv_pos_embeddings=128,
            num_conv_pos_embedding_groups=16, num_codevector_groups=2, num_codevectors_per_group=320,
            codevector_dim=256, proj_codevector_dim=256)
SMALL = {**BASE, "conv_dim": (32,) * 7, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 128, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4,
         "num_codevectors_per_group": 48, "codevector_dim": 32, "proj_codevector_dim": 24}
STABLE = {**SMALL, "do_stable_layer_norm": True, "feat_extract_norm": "layer", "conv_bias": True,
          "num_hidden_layers": 3, "num_conv_pos_embeddings": 15, "conv_dim": (48,) * 7}


# ------------------------------------------------------------------------------------------ helpers


def hf_model(cls_name: str, seed: int = 0, **fields: Any) -> torch.nn.Module:
    """A random transformers model in eval mode; 1-D parameters (norms, biases) are perturbed so that
    a swapped weight/bias or a missed LayerNorm shows."""
    torch.manual_seed(seed)
    model = getattr(transformers, cls_name)(transformers.Wav2Vec2Config(**fields))
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def cli_import(src: Path, out: Path) -> None:
    """Import through the command line, as a user would."""
    subprocess.run([sys.executable, "-m", "wavssl", "import-checkpoint", str(src), str(out)], check=True, cwd=REPO)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max())


def parity(hf: torch.nn.Module, ours: torch.nn.Module, wav: torch.Tensor,
           lengths: torch.Tensor | None = None) -> dict[str, float]:
    """Max abs differences (valid frames only) of the frame features, every layer, the last hidden
    state and, for pretraining sources on unpadded input, the chosen codevectors, their projection
    and the projected context."""
    base = getattr(hf, "wav2vec2", hf)
    mask = None if lengths is None else (torch.arange(wav.shape[1])[None] < lengths[:, None]).long()
    with torch.no_grad():
        ref = base(wav, attention_mask=mask, output_hidden_states=True)
        got = ours.encode(wav, lengths)
        valid = ~got.padding_mask
        hidden = ref.hidden_states[1:]
        assert len(hidden) == len(got.layer_outputs)
        pairs = list(zip(hidden, got.layer_outputs))
        if base.config.do_stable_layer_norm and torch.equal(hidden[-1], ref.last_hidden_state):
            # transformers 4.x records the last layer after the final LayerNorm; 5.x records it before
            pairs[-1] = (hidden[-1], got.last_hidden_state)
        diffs = {
            "features": max_diff(ref.extract_features[valid], got.features[valid]),
            "layers": max(max_diff(a[valid], b[valid]) for a, b in pairs),
            "last": max_diff(ref.last_hidden_state[valid], got.last_hidden_state[valid]),
        }
        if hasattr(hf, "quantizer") and lengths is None:
            ref_q, _ = hf.quantizer(ref.extract_features)
            q = ours.quantizer(got.features.reshape(-1, got.features.shape[-1]))
            diffs["codevectors"] = max_diff(ref_q.reshape(q.quantized.shape), q.quantized)
            diffs["project_q"] = max_diff(hf.project_q(ref_q).reshape(-1, ours.cfg.final_dim),
                                          ours.project_q(q.quantized))
            diffs["final_proj"] = max_diff(hf.project_hid(ref.last_hidden_state),
                                           ours.final_proj(got.last_hidden_state))
    return diffs


def assert_close(name: str, diffs: dict[str, float]) -> None:
    print(f"{name}: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    assert max(diffs.values()) <= TOL, (name, diffs)


def audio(*lengths: int, batch: int = 2, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, n, generator=g) for n in lengths]


# ------------------------------------------------------------------------------------ transformers


@pytest.mark.parametrize("fields", [BASE, SMALL, STABLE], ids=["base", "small", "stable_layer_norm"])
def test_transformers_pretraining_parity(tmp_path: Path, fields: dict[str, Any]) -> None:
    hf = hf_model("Wav2Vec2ForPreTraining", **fields)
    hf.save_pretrained(tmp_path / "src")
    cli_import(tmp_path / "src", tmp_path / "run")
    ours = load(tmp_path / "run")
    cfg = ours.cfg
    assert cfg.context.layer_norm_first == fields["do_stable_layer_norm"]
    assert cfg.frontend.norm_mode == ("layer_norm" if fields["feat_extract_norm"] == "layer" else "default")
    assert (cfg.quantizer.groups, cfg.quantizer.entries, cfg.quantizer.dim, cfg.final_dim) == (
        fields["num_codevector_groups"], fields["num_codevectors_per_group"], fields["codevector_dim"],
        fields["proj_codevector_dim"])
    for wav in audio(16000, 8000 if fields is BASE else 12345):
        assert_close(f"{hf.config.hidden_size}x{hf.config.num_hidden_layers} T={wav.shape[1]}", parity(hf, ours, wav))
    if fields is STABLE:  # per-frame normalisation: padded batches agree on the valid frames
        wav, = audio(16000, seed=2)
        assert_close("padded", parity(hf, ours, wav, torch.tensor([16000, 11000])))


def test_transformers_sharded_preprocessor_and_base_config(tmp_path: Path) -> None:
    hf = hf_model("Wav2Vec2ForPreTraining", **SMALL)
    hf.save_pretrained(tmp_path / "single")
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    (tmp_path / "single" / "preprocessor_config.json").write_text('{"sampling_rate": 8000, "do_normalize": true}')
    start = base()
    start.optim.lr, start.model.quantizer.min_temp, start.model.context.attention_chunk = 1e-5, 0.1, 8
    one = import_checkpoint(tmp_path / "single", tmp_path / "a", base_config=start)
    many = import_checkpoint(tmp_path / "sharded", tmp_path / "b")
    a, b = load_file(one / "model.safetensors"), load_file(many / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    cfg = load_config(one)
    assert (cfg.data.sample_rate, cfg.model.frontend.sample_rate, cfg.data.normalize) == (8000, 8000, True)
    assert (cfg.optim.lr, cfg.model.quantizer.min_temp, cfg.model.context.attention_chunk) == (1e-5, 0.1, 8)
    assert cfg.model.context.embed_dim == SMALL["hidden_size"] and start.model.context.embed_dim == 768


def test_transformers_ctc_source(tmp_path: Path) -> None:
    hf = hf_model("Wav2Vec2ForCTC", vocab_size=12, **SMALL)
    hf.save_pretrained(tmp_path / "src")
    with pytest.warns(CheckpointImportWarning) as record:
        import_checkpoint(tmp_path / "src", tmp_path / "run")
    messages = " | ".join(str(w.message) for w in record)
    assert "lm_head.weight" in messages and "no quantizer, project_q and final_proj" in messages
    ours = load(tmp_path / "run")
    for wav in audio(16000, 7777):
        assert_close("ctc encoder", parity(hf, ours, wav))


def test_transformers_base_model_source_without_mask_embedding(tmp_path: Path) -> None:
    hf = hf_model("Wav2Vec2Model", mask_time_prob=0.0, **STABLE)
    hf.save_pretrained(tmp_path / "src")
    assert not any("masked_spec_embed" in k for k in load_file(tmp_path / "src" / "model.safetensors"))
    with pytest.warns(CheckpointImportWarning, match=r"no quantizer, project_q and final_proj and no mask embedding"):
        import_checkpoint(tmp_path / "src", tmp_path / "run")
    ours = load(tmp_path / "run")
    for wav in audio(16000, 5000):
        assert_close("model encoder", parity(hf, ours, wav))


@pytest.mark.parametrize(("field", "value"), [("hidden_act", "relu"), ("layer_norm_eps", 1e-6),
                                              ("add_adapter", True), ("feat_extract_activation", "gelu_new")])
def test_transformers_unsupported_variant(tmp_path: Path, field: str, value: Any) -> None:
    transformers.Wav2Vec2Config(**{**SMALL, field: value}).save_pretrained(tmp_path / "src")
    with pytest.raises(CheckpointImportError, match=rf"config\.json: unsupported {field}="):
        import_checkpoint(tmp_path / "src", tmp_path / "run")


def test_transformers_unplaced_tensor_is_an_error(tmp_path: Path) -> None:
    hf = hf_model("Wav2Vec2ForPreTraining", **SMALL)
    hf.save_pretrained(tmp_path / "src")
    weights = tmp_path / "src" / "model.safetensors"
    save_file({**load_file(weights), "classifier.weight": torch.zeros(3, 64)}, weights)
    with pytest.raises(CheckpointImportError, match="classifier.weight"):
        import_checkpoint(tmp_path / "src", tmp_path / "run")


# ----------------------------------------------------------------------------------------- fairseq

_TO_FAIRSEQ = [
    (r"wav2vec2\.feature_extractor\.conv_layers\.(\d+)\.conv\.", r"feature_extractor.conv_layers.\1.0."),
    (r"wav2vec2\.feature_projection\.layer_norm\.", "layer_norm."),
    (r"wav2vec2\.feature_projection\.projection\.", "post_extract_proj."),
    (r"wav2vec2\.masked_spec_embed", "mask_emb"),
    (r"wav2vec2\.encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original0", "encoder.pos_conv.0.weight_g"),
    (r"wav2vec2\.encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original1", "encoder.pos_conv.0.weight_v"),
    (r"wav2vec2\.encoder\.pos_conv_embed\.conv\.bias", "encoder.pos_conv.0.bias"),
    (r"wav2vec2\.encoder\.layers\.(\d+)\.attention\.", r"encoder.layers.\1.self_attn."),
    (r"wav2vec2\.encoder\.layers\.(\d+)\.layer_norm\.", r"encoder.layers.\1.self_attn_layer_norm."),
    (r"wav2vec2\.encoder\.layers\.(\d+)\.feed_forward\.intermediate_dense\.", r"encoder.layers.\1.fc1."),
    (r"wav2vec2\.encoder\.layers\.(\d+)\.feed_forward\.output_dense\.", r"encoder.layers.\1.fc2."),
    (r"wav2vec2\.encoder\.", "encoder."),
    (r"quantizer\.codevectors", "quantizer.vars"),
    (r"project_hid\.", "final_proj."),
]


def fairseq_state(hf: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The transformers model's weights under fairseq wav2vec2 names."""
    layer_norm_mode = hf.config.feat_extract_norm == "layer"
    out = {}
    for key, value in hf.state_dict().items():
        conv_norm = re.fullmatch(r"wav2vec2\.feature_extractor\.conv_layers\.(\d+)\.layer_norm\.(weight|bias)", key)
        if conv_norm:  # Sequential(conv, dropout, norm, GELU); layer_norm mode wraps the norm in transposes
            key = f"feature_extractor.conv_layers.{conv_norm[1]}.2.{'1.' if layer_norm_mode else ''}{conv_norm[2]}"
        for pattern, replacement in _TO_FAIRSEQ:
            key = re.sub("^" + pattern, replacement, key)
        out[key] = value.clone()
    return out


def conv_string(c: Any) -> str:
    """fairseq's conv_feature_layers expression, e.g. ``[(512, 10, 5)] + [(512, 3, 2)] * 4 + ...``."""
    specs = zip(c.conv_dim, c.conv_kernel, c.conv_stride)
    terms = [(spec, len(list(run))) for spec, run in itertools.groupby(specs)]
    return " + ".join(f"[{spec}]" + (f" * {n}" if n > 1 else "") for spec, n in terms)


def fairseq_model_cfg(c: Any) -> dict[str, Any]:
    return {
        "_name": "wav2vec2", "extractor_mode": "layer_norm" if c.feat_extract_norm == "layer" else "default",
        "conv_feature_layers": conv_string(c), "conv_bias": c.conv_bias, "encoder_layers": c.num_hidden_layers,
        "encoder_embed_dim": c.hidden_size, "encoder_ffn_embed_dim": c.intermediate_size,
        "encoder_attention_heads": c.num_attention_heads, "activation_fn": "gelu", "layer_type": "transformer",
        "dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.0, "encoder_layerdrop": 0.05,
        "dropout_input": 0.1, "dropout_features": 0.1, "final_dim": c.proj_codevector_dim,
        "layer_norm_first": c.do_stable_layer_norm, "conv_pos": c.num_conv_pos_embeddings,
        "conv_pos_groups": c.num_conv_pos_embedding_groups, "pos_conv_depth": 1, "quantize_targets": True,
        "quantize_input": False, "same_quantizer": False, "target_glu": False, "feature_grad_mult": 0.1,
        "quantizer_depth": 1, "latent_vars": c.num_codevectors_per_group, "latent_groups": c.num_codevector_groups,
        "latent_dim": c.codevector_dim, "latent_temp": [2.0, 0.25, 0.9995], "mask_prob": 0.65, "mask_length": 10,
        "require_same_masks": True, "mask_selection": "static", "num_negatives": 100, "logit_temp": 0.1,
        "negatives_from_everywhere": False, "cross_sample_negatives": 0, "codebook_negatives": 0,
    }


def fairseq_checkpoint(hf: torch.nn.Module) -> dict[str, Any]:
    """A pretraining checkpoint shaped like fairseq's (hydra ``cfg`` as plain dicts)."""
    return {
        "model": fairseq_state(hf),
        "cfg": {"model": fairseq_model_cfg(hf.config), "task": {"_name": "audio_pretraining", "sample_rate": 16000,
                                                               "normalize": hf.config.do_stable_layer_norm},
                "criterion": {"_name": "wav2vec", "infonce": True, "loss_weights": [0.2, 5.0]}},
        "optimizer_history": [{"num_updates": 400000}],
    }


def test_fairseq_pretrained_parity(tmp_path: Path) -> None:
    hf = hf_model("Wav2Vec2ForPreTraining", **SMALL)
    torch.save(fairseq_checkpoint(hf), tmp_path / "checkpoint_best.pt")
    cli_import(tmp_path / "checkpoint_best.pt", tmp_path / "run")
    ours = load(tmp_path / "run")
    q, loss = ours.cfg.quantizer, ours.cfg.loss
    assert (q.max_temp, q.min_temp, q.temp_decay) == (2.0, 0.25, 0.9995)
    assert (loss.diversity_weight, loss.feature_penalty_weight) == (0.2, 5.0)
    for wav in audio(16000, 9999):
        assert_close("fairseq", parity(hf, ours, wav))


def test_fairseq_legacy_args_layer_norm_and_pickle_fallback(tmp_path: Path) -> None:
    """Legacy ``args`` Namespace with string-typed fields; a non-allowlisted object is refused, or read with
    full pickle under ``trust_checkpoint``."""
    hf = hf_model("Wav2Vec2ForPreTraining", **STABLE)
    fields = {**fairseq_model_cfg(hf.config), "arch": "wav2vec2", "latent_temp": "(2, 0.5, 0.999995)",
              "loss_weights": "[0.1, 10]", "normalize": True, "sample_rate": 16000}
    del fields["_name"]
    state = fairseq_state(hf)
    assert "feature_extractor.conv_layers.3.2.1.weight" in state
    ckpt = {"model": state, "args": argparse.Namespace(**fields), "extra_state": fractions.Fraction(1, 3)}
    torch.save(ckpt, tmp_path / "legacy.pt")
    with pytest.raises(CheckpointImportError, match=r"legacy\.pt: refused: it pickles fractions\.Fraction.*--trust-checkpoint"):
        import_checkpoint(tmp_path / "legacy.pt", tmp_path / "run")
    with pytest.warns(CheckpointImportWarning, match="full pickle"):
        import_checkpoint(tmp_path / "legacy.pt", tmp_path / "run", trust_checkpoint=True)
    ours = load(tmp_path / "run")
    assert ours.cfg.frontend.norm_mode == "layer_norm" and ours.cfg.context.layer_norm_first
    for wav in audio(16000, 6400):
        assert_close("fairseq legacy", parity(hf, ours, wav))


def test_fairseq_finetuned_encoder(tmp_path: Path) -> None:
    hf = hf_model("Wav2Vec2ForPreTraining", **SMALL)
    pretrained = fairseq_checkpoint(hf)
    state = {f"w2v_encoder.w2v_model.{k}": v for k, v in pretrained["model"].items()
             if not k.startswith(("quantizer.", "project_q.", "final_proj."))}
    state |= {"w2v_encoder.proj.weight": torch.zeros(10, 64), "w2v_encoder.proj.bias": torch.zeros(10)}
    w2v_args = {"model": pretrained["cfg"]["model"], "task": pretrained["cfg"]["task"]}
    ckpt = {"model": state, "cfg": {"model": {"_name": "wav2vec_ctc", "w2v_args": w2v_args},
                                    "task": {"_name": "audio_finetuning"}}}
    torch.save(ckpt, tmp_path / "finetuned.pt")
    with pytest.warns(CheckpointImportWarning) as record:
        import_checkpoint(tmp_path / "finetuned.pt", tmp_path / "run")
    messages = " | ".join(str(w.message) for w in record)
    assert "w2v_encoder.proj.weight" in messages and "no quantizer, project_q and final_proj" in messages
    ours = load(tmp_path / "run")
    assert_close("fairseq fine-tuned encoder", parity(hf.wav2vec2, ours, audio(16000)[0]))


@pytest.mark.parametrize(("field", "value"), [
    ("conv_feature_layers", "__import__('os').system('true')"),
    ("conv_feature_layers", "[(32, 10, 5)] * 10**9"),
    ("conv_feature_layers", "[(32, 10, 5)] * 1000000000"),
    ("conv_feature_layers", "[]"),
    ("activation_fn", "relu"),
    ("layer_type", "conformer"),
    ("target_glu", True),
    ("quantize_targets", False),
])
def test_fairseq_unsupported_or_unsafe_config(tmp_path: Path, field: str, value: Any) -> None:
    ckpt = fairseq_checkpoint(hf_model("Wav2Vec2ForPreTraining", **SMALL))
    ckpt["cfg"]["model"][field] = value
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointImportError, match=rf"bad\.pt: .*{field}="):
        import_checkpoint(tmp_path / "bad.pt", tmp_path / "run")
