"""Models assembled from the modules: the shared speech encoder and the SSL (pretraining) model.

``Encoder`` = front end -> LayerNorm -> projection -> (mask embedding) -> context Transformer.
It is the same class in pretraining and fine-tuning; task heads sit on top of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .config import ContextConfig, MaskingConfig, ModelConfig
from .losses import ContrastiveLoss, contrastive_logits, wav2vec2_loss
from .modules.context import ContextEncoder, ContextOutput
from .modules.frontend import build_frontend
from .modules.masking import padding_mask, sample_negatives, span_mask
from .modules.quantizer import GumbelQuantizer


@dataclass
class EncoderOutput:
    """What :meth:`SSLModel.encode` returns."""

    features: Tensor
    """(B, F, D) front-end frames after LayerNorm (the quantizer's input)."""
    layer_outputs: tuple[Tensor, ...]
    """Every Transformer layer's output, (B, F, E) each."""
    last_hidden_state: Tensor
    """(B, F, E) final context vectors."""
    padding_mask: Tensor
    """(B, F) bool, True at padding frames."""
    lengths: Tensor
    """(B,) valid frames."""


@dataclass
class _Frontend:
    raw: Tensor  # (B, F, D) front-end output before LayerNorm
    normed: Tensor  # (B, F, D)
    lengths: Tensor  # (B,)
    padding_mask: Tensor  # (B, F)


class Encoder(nn.Module):
    """Front end + feature LayerNorm/projection + learned mask embedding + context Transformer."""

    def __init__(self, frontend: nn.Module, frame_dim: int, context: ContextEncoder, embed_dim: int, *,
                 dropout_input: float = 0.0) -> None:
        super().__init__()
        self.frontend = frontend
        self.feature_norm = nn.LayerNorm(frame_dim)
        self.feature_proj = nn.Linear(frame_dim, embed_dim)
        self.dropout_input = nn.Dropout(dropout_input)
        self.mask_emb = nn.Parameter(torch.empty(embed_dim).uniform_())
        self.context = context

    def frames(self, wav: Tensor, lengths: Tensor | None) -> _Frontend:
        """wav: (B, T) [or (B, C, T) for multichannel front ends]; lengths: (B,) samples."""
        if lengths is None:
            lengths = torch.full((wav.shape[0],), wav.shape[-1], dtype=torch.long, device=wav.device)
        out = self.frontend(wav, lengths)
        pad = padding_mask(out.lengths, out.features.shape[1])
        return _Frontend(out.features, self.feature_norm(out.features), out.lengths, pad)

    def contextualise(self, fr: _Frontend, mask: Tensor | None = None) -> tuple[Tensor, ContextOutput]:
        """Project normalised frames, replace ``mask`` (B, F) frames by the mask embedding, run the context."""
        x = self.dropout_input(self.feature_proj(fr.normed))
        if mask is not None:
            x = torch.where(mask.unsqueeze(-1), self.mask_emb.to(x.dtype), x)
        return x, self.context(x, fr.padding_mask)

    def forward(self, wav: Tensor, lengths: Tensor | None = None) -> EncoderOutput:
        """wav: (B, T); lengths: (B,) valid samples (None = all) -> EncoderOutput."""
        fr = self.frames(wav, lengths)
        _, ctx = self.contextualise(fr)
        return EncoderOutput(fr.normed, ctx.layer_outputs, ctx.last_hidden_state, fr.padding_mask, fr.lengths)



def build_context(cfg: ContextConfig) -> ContextEncoder:
    """ContextEncoder from its config."""
    return ContextEncoder(
        cfg.embed_dim, cfg.num_layers, cfg.num_heads, cfg.ffn_dim, layer_norm_first=cfg.layer_norm_first,
        dropout=cfg.dropout, attention_dropout=cfg.attention_dropout, activation_dropout=cfg.activation_dropout,
        layer_drop=cfg.layer_drop, pos_conv_kernel=cfg.pos_conv_kernel, pos_conv_groups=cfg.pos_conv_groups,
        pos_conv_weight_norm=cfg.pos_conv_weight_norm, pos_conv_lookahead=cfg.pos_conv_lookahead,
        attention_chunk=cfg.attention_chunk, attention_left_chunks=cfg.attention_left_chunks,
    )


def build_encoder(cfg: ModelConfig) -> Encoder:
    """The shared encoder (front end + context) a ModelConfig describes."""
    return Encoder(build_frontend(cfg.frontend), cfg.frontend.frame_dim, build_context(cfg.context),
                   cfg.context.embed_dim, dropout_input=cfg.context.dropout_input)


class SSLModel(nn.Module):
    """wav2vec 2.0 pretraining model: encoder + Gumbel quantizer + projections + contrastive loss."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        q = cfg.quantizer
        self.encoder = build_encoder(cfg)
        self.dropout_features = nn.Dropout(cfg.context.dropout_features)
        self.quantizer = GumbelQuantizer(cfg.frontend.frame_dim, q.groups, q.entries, q.dim, max_temp=q.max_temp,
                                         min_temp=q.min_temp, temp_decay=q.temp_decay)
        self.project_q = nn.Linear(q.dim, cfg.final_dim)
        self.final_proj = nn.Linear(cfg.context.embed_dim, cfg.final_dim)

    @property
    def masking(self) -> MaskingConfig:
        return self.cfg.masking

    def set_num_updates(self, num_updates: int) -> None:
        """Called by the trainer before each update (anneals the Gumbel temperature)."""
        self.quantizer.set_num_updates(num_updates)

    def encode(self, wav: Tensor, lengths: Tensor | None = None) -> EncoderOutput:
        """Frame features and every layer's output, no masking. wav: (B, T); lengths: (B,)."""
        return self.encoder(wav, lengths)

    def forward(self, wav: Tensor, lengths: Tensor | None = None, mask: Tensor | None = None) -> ContrastiveLoss:
        """The pretraining objective on a batch.

        Args:
            wav: (B, T) waveforms. lengths: (B,) valid samples (None = all).
            mask: optional (B, F) bool span mask; sampled with the config's masking when None.
        """
        mk, ls = self.cfg.masking, self.cfg.loss
        fr = self.encoder.frames(wav, lengths)
        valid = ~fr.padding_mask
        feature_penalty = fr.raw.float().pow(2).mean(-1).masked_select(valid).mean()
        if mask is None:
            mask = span_mask(fr.lengths, fr.normed.shape[1], mk.mask_prob, mk.mask_length,
                             min_masks=mk.min_masks, require_same_masks=mk.require_same_masks)
        _, ctx = self.encoder.contextualise(fr, mask)
        context = self.final_proj(ctx.last_hidden_state[mask])  # (N, final_dim)
        q = self.quantizer(self.dropout_features(fr.normed)[mask])
        targets = self.project_q(q.quantized)  # (N, final_dim)
        negatives = sample_negatives(mask, mk.num_negatives)  # (N, K) rows of targets
        logits = contrastive_logits(context, targets, negatives, ls.logit_temp,
                                                 block=_equal_row_count(mask))
        return wav2vec2_loss(
            logits, prob_perplexity=q.prob_perplexity, code_perplexity=q.code_perplexity,
            num_codes=self.quantizer.groups * self.quantizer.entries, feature_penalty=feature_penalty,
            diversity_weight=ls.diversity_weight, feature_penalty_weight=ls.feature_penalty_weight,
            temperature=self.quantizer.temperature,
        )


def _equal_row_count(mask: Tensor) -> int:
    """Masked frames per row when every row has the same non-zero count (``require_same_masks``), else 0."""
    counts = mask.sum(1)
    m = int(counts.max()) if counts.numel() else 0
    return m if m > 0 and bool((counts == m).all()) else 0


def build_model(cfg: ModelConfig) -> SSLModel:
    """The pretraining model a ModelConfig describes."""
    return SSLModel(cfg)
