"""What the pretraining benchmarks share: wavssl configs translated into transformers'
``Wav2Vec2Config``, a synthetic speech-like batch, and the host-side masks and distractor indices
that transformers' ``Wav2Vec2ForPreTraining`` needs.

No audio files and no audio I/O packages (soundfile, soxr) are needed: the batch is generated here.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from wavssl.config import ModelConfig, WaveformFrontend, preset

SAMPLE_RATE = 16000


# ------------------------------------------------------------------------------------------ configs


def small5m() -> ModelConfig:
    """~5M parameters: 7-block conv stack of 256 channels (standard kernels and strides), a 4 x 256
    post-LN Transformer (4 heads, ffn 1024), G=2 x V=320 codebooks, final dim 128, K=100, p=0.65, M=10.
    Layer drop is off so both models do the same work every step."""
    m = ModelConfig()
    m.frontend = WaveformFrontend(conv_layers=((256, 10, 5),) + ((256, 3, 2),) * 4 + ((256, 2, 2),) * 2)
    m.context = dataclasses.replace(m.context, embed_dim=256, num_layers=4, num_heads=4, ffn_dim=1024,
                                    pos_conv_kernel=128, pos_conv_groups=16, layer_drop=0.0)
    m.quantizer = dataclasses.replace(m.quantizer, groups=2, entries=320, dim=256)
    m.masking = dataclasses.replace(m.masking, mask_prob=0.65, mask_length=10, num_negatives=100)
    m.final_dim = 128
    return m


def model_config(name: str) -> tuple[ModelConfig, list[str]]:
    """The named benchmark config (``small5m`` or a wavssl preset) and notes on anything changed to
    make it translatable."""
    if name == "small5m":
        return small5m(), []
    m = preset(name).model
    notes = []
    if m.frontend.kind != "waveform":
        width = m.frontend.frame_dim
        m.frontend = WaveformFrontend(sample_rate=m.frontend.sample_rate, feature_grad_mult=m.frontend.feature_grad_mult,
                                      conv_layers=((width, 10, 5),) + ((width, 3, 2),) * 4 + ((width, 2, 2),) * 2)
        notes.append(f"preset {name!r} has a {preset(name).model.frontend.kind} front end, which transformers "
                     f"lacks; both models use a {width}-channel waveform conv stack instead")
    if m.context.layer_drop > 0:
        m.context = dataclasses.replace(m.context, layer_drop=0.0)
        notes.append("layer drop set to 0 for both models (equal work per step)")
    return m, notes


def hf_config(m: ModelConfig):
    """transformers ``Wav2Vec2Config`` with the same architecture, dropouts and masking as ``m``."""
    from transformers import Wav2Vec2Config

    fe, cx, q, mk = m.frontend, m.context, m.quantizer, m.masking
    return Wav2Vec2Config(
        conv_dim=[c for c, _, _ in fe.conv_layers],
        conv_kernel=[k for _, k, _ in fe.conv_layers],
        conv_stride=[s for _, _, s in fe.conv_layers],
        num_feat_extract_layers=len(fe.conv_layers),
        conv_bias=fe.conv_bias,
        feat_extract_norm="group" if fe.norm_mode == "default" else "layer",
        feat_extract_activation="gelu",
        hidden_size=cx.embed_dim,
        num_hidden_layers=cx.num_layers,
        num_attention_heads=cx.num_heads,
        intermediate_size=cx.ffn_dim,
        hidden_act="gelu",
        do_stable_layer_norm=cx.layer_norm_first,
        hidden_dropout=cx.dropout,
        attention_dropout=cx.attention_dropout,
        activation_dropout=cx.activation_dropout,
        feat_proj_dropout=cx.dropout_input,
        feat_quantizer_dropout=cx.dropout_features,
        layerdrop=cx.layer_drop,
        num_conv_pos_embeddings=cx.pos_conv_kernel,
        num_conv_pos_embedding_groups=cx.pos_conv_groups,
        num_codevector_groups=q.groups,
        num_codevectors_per_group=q.entries,
        codevector_dim=q.dim,
        proj_codevector_dim=m.final_dim,
        num_negatives=mk.num_negatives,
        contrastive_logits_temperature=m.loss.logit_temp,
        diversity_loss_weight=m.loss.diversity_weight,
        apply_spec_augment=True,
        mask_time_prob=mk.mask_prob,
        mask_time_length=mk.mask_length,
        mask_time_min_masks=mk.min_masks,
        mask_feature_prob=0.0,
    )


# ------------------------------------------------------------------------------------------ inputs


def synthetic_batch(batch: int, seconds: float, seed: int = 0) -> torch.Tensor:
    """(batch, samples) speech-like noise: a few harmonic tones under a syllable-rate envelope plus
    white noise, normalised to unit variance per utterance."""
    g = torch.Generator().manual_seed(seed)
    n = int(round(seconds * SAMPLE_RATE))
    t = torch.arange(n, dtype=torch.float64) / SAMPLE_RATE
    out = torch.empty(batch, n)
    for b in range(batch):
        f0 = 90 + 150 * torch.rand((), generator=g, dtype=torch.float64)
        x = sum(torch.sin(2 * math.pi * f0 * h * t + 6.28 * torch.rand((), generator=g, dtype=torch.float64)) / h
                for h in range(1, 6))
        env = 0.5 + 0.5 * torch.sin(2 * math.pi * 4.0 * t + 6.28 * torch.rand((), generator=g, dtype=torch.float64))
        x = x * env + 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
        out[b] = ((x - x.mean()) / x.std()).float()
    return out


def gumbel_temperature(step: int) -> float:
    """The Gumbel temperature schedule of transformers' pretraining example (2 -> 0.5, x0.999995 per update)."""
    return max(2.0 * 0.999995**step, 0.5)


def hf_masks(model: torch.nn.Module, batch: int, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """What transformers' pretraining example computes on the host for every batch of ``batch`` x
    ``samples`` unpadded audio: the (B, F) bool span mask (``_compute_mask_indices`` with the config's
    ``mask_time_prob``, ``mask_time_length`` and ``mask_time_min_masks``) and the (B, F, K) distractor
    indices drawn from the masked frames (``_sample_negative_indices``)."""
    from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices, _sample_negative_indices

    cfg = model.config
    shape = (batch, int(model._get_feat_extract_output_lengths(samples)))
    mask = _compute_mask_indices(shape, cfg.mask_time_prob, cfg.mask_time_length, min_masks=cfg.mask_time_min_masks)
    return mask, _sample_negative_indices(shape, cfg.num_negatives, mask_time_indices=mask)
