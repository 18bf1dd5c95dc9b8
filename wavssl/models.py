"""Models assembled from the modules: the shared encoder, the SSL (pretraining) model, the CTC
recognizer and the sequence classifier.

``Encoder`` = front end -> LayerNorm -> projection -> (mask embedding) -> context Transformer.
It is the same class in pretraining and fine-tuning, for speech and for sensor series (only the front
end differs); task heads sit on top of it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from wavssl_onnx import Hypothesis, Vocabulary
from wavssl_onnx.decoding import Decoding, Greedy

from .config import ClassifyConfig, ContextConfig, CTCConfig, MaskingConfig, ModelConfig
from .modules.context import ContextEncoder, ContextOutput
from .modules.frontend import FrontEnd, build_frontend, frame_lengths
from .modules.masking import MaskedFrames, channel_mask, mask_frames, padding_mask, span_mask
from .objectives import Objective, ObjectiveOutput, Wav2Vec2Objective


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
class EncoderFrames:
    """The front end's frames of a batch, before and after the feature LayerNorm."""

    raw: Tensor  # (B, F, D) front-end output before LayerNorm
    normed: Tensor  # (B, F, D)
    lengths: Tensor  # (B,)
    padding_mask: Tensor  # (B, F)
    unpadded: bool = False  # known on the host: no row has padding (lengths were None)


class Encoder(nn.Module):
    """Front end + feature LayerNorm/projection + learned mask embedding + context Transformer."""

    def __init__(self, frontend: FrontEnd, frame_dim: int, context: ContextEncoder, embed_dim: int, *,
                 dropout_input: float = 0.0) -> None:
        super().__init__()
        self.frontend = frontend
        self.feature_norm = nn.LayerNorm(frame_dim)
        self.feature_proj = nn.Linear(frame_dim, embed_dim)
        self.dropout_input = nn.Dropout(dropout_input)
        self.mask_emb = nn.Parameter(torch.empty(embed_dim).uniform_())
        self.context = context

    def frames(self, wav: Tensor, lengths: Tensor | None) -> EncoderFrames:
        """wav: (B, T) [or (B, C, T) for multichannel front ends]; lengths: (B,) samples."""
        unpadded = lengths is None
        if lengths is None:
            lengths = torch.full((wav.shape[0],), wav.shape[-1], dtype=torch.long, device=wav.device)
        out = self.frontend(wav, lengths)
        pad = padding_mask(out.lengths, out.features.shape[1])
        return EncoderFrames(out.features, self.feature_norm(out.features), out.lengths, pad, unpadded)

    def contextualise(self, fr: EncoderFrames, mask: Tensor | None = None,
                      channels: Tensor | None = None) -> tuple[Tensor, ContextOutput]:
        """Project normalised frames, replace ``mask`` (B, F) frames by the mask embedding, zero the
        ``channels`` (B, E) feature channels (fine-tuning augmentation), run the context."""
        x = self.dropout_input(self.feature_proj(fr.normed))
        if mask is not None:
            x = torch.where(mask.unsqueeze(-1), self.mask_emb.to(x.dtype), x)
        if channels is not None:
            x = x.masked_fill(channels.unsqueeze(1), 0.0)
        # without padding the context gets no mask at all, so SDPA may pick its flash kernel
        return x, self.context(x, None if fr.unpadded else fr.padding_mask)

    def forward(self, wav: Tensor, lengths: Tensor | None = None) -> EncoderOutput:
        """wav: (B, T) [or (B, C, T) sensor series]; lengths: (B,) valid samples (None = all) -> EncoderOutput."""
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
    """Pretraining model: the shared :class:`Encoder` + a self-supervised :class:`~wavssl.objectives.Objective`
    (default: wav2vec 2.0's Gumbel quantizer, projections and contrastive loss), whose modules are
    registered as this model's children under the objective's names."""

    def __init__(self, cfg: ModelConfig, objective: Objective | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = build_encoder(cfg)
        self.objective = Wav2Vec2Objective(cfg) if objective is None else objective
        for name, module in self.objective.parts().items():
            self.add_module(name, module)

    @property
    def masking(self) -> MaskingConfig:
        return self.cfg.masking

    def set_num_updates(self, num_updates: int) -> None:
        """Called by the trainer before each update (the objective's schedules, e.g. the Gumbel temperature)."""
        self.objective.set_num_updates(num_updates)

    def encode(self, wav: Tensor, lengths: Tensor | None = None) -> EncoderOutput:
        """Frame features and every layer's output, no masking. wav: (B, T) or sensor (B, C, T); lengths: (B,)."""
        return self.encoder(wav, lengths)

    def forward(self, wav: Tensor, lengths: Tensor | None = None, masks: MaskedFrames | None = None,
                targets: Tensor | None = None) -> ObjectiveOutput:
        """The pretraining objective on a batch.

        Args:
            wav: (B, T) waveforms or (B, C, T) sensor series. lengths: (B,) valid samples (None = all).
            masks: the batch's span mask and distractors, drawn on the host by :class:`MaskSampler`
                (the data pipeline does); then the step never synchronises with the host. When None
                they are drawn here, on the device, with the config's masking (synchronises).
            targets: optional (B, F) per-frame labels for objectives that predict given labels.
        Returns:
            the objective's output (wav2vec 2.0: :class:`~wavssl.losses.ContrastiveLoss`).
        """
        mk = self.cfg.masking
        fr = self.encoder.frames(wav, lengths)
        if masks is None:
            masks = mask_frames(fr.lengths, fr.normed.shape[1], mk.mask_prob, mk.mask_length, mk.num_negatives,
                                min_masks=mk.min_masks, require_same_masks=mk.require_same_masks,
                                cross_sample_negatives=mk.cross_sample_negatives)
        _, ctx = self.encoder.contextualise(fr, masks.mask)
        return self.objective(fr, ctx.last_hidden_state, masks, targets)


@dataclass(frozen=True)
class MaskSampler:
    """Draws a pretraining batch's :class:`~wavssl.modules.masking.MaskedFrames` on the host.

    Called with the batch's (B,) valid sample counts (CPU), its padded length T and the batch's seed
    (a pure function of (train.seed, epoch, batch position)); frame counts come from the front end's
    output lengths (:func:`~wavssl.modules.frontend.frame_lengths`). The masks are a pure function of
    those, so a resumed run draws the same ones. Picklable: DataLoader workers call it while the
    device runs earlier batches.
    """

    cfg: ModelConfig

    def __call__(self, lengths: Tensor, num_samples: int, seed: int) -> MaskedFrames:
        """lengths: (B,) samples; num_samples: T -> MaskedFrames over F = frames(T), on the CPU."""
        fe, mk = self.cfg.frontend, self.cfg.masking
        frames = frame_lengths(fe, lengths.cpu())
        num_frames = int(frame_lengths(fe, torch.tensor([num_samples]))[0])
        generator = torch.Generator().manual_seed(_mask_seed(seed))
        return mask_frames(frames, num_frames, mk.mask_prob, mk.mask_length, mk.num_negatives,
                           min_masks=mk.min_masks, require_same_masks=mk.require_same_masks,
                           cross_sample_negatives=mk.cross_sample_negatives, generator=generator)


def _mask_seed(seed: int) -> int:
    """A seed for the masks derived from a batch's seed: a stream of its own, unrelated to the torch RNG
    the trainer seeds with the batch seed (dropout, Gumbel noise)."""
    return int(np.random.SeedSequence([seed, 0x6D61736B]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def build_model(cfg: ModelConfig) -> SSLModel:
    """The pretraining model a ModelConfig describes."""
    return SSLModel(cfg)


def frame_shift_samples(frontend: FrontEnd) -> int:
    """Input samples per output frame of a front end (320 for wav2vec2's conv stack)."""
    n = 1 << 20
    return round(n / int(frontend.output_lengths(torch.tensor([n]))[0]))


def min_input_samples(frontend: FrontEnd) -> int:
    """Fewest input samples for which the front end makes one frame."""
    hi = 1
    while int(frontend.output_lengths(torch.tensor([hi]))[0]) < 1:
        hi *= 2
    lo = hi // 2
    while lo + 1 < hi:  # output_lengths(lo) < 1 <= output_lengths(hi)
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if int(frontend.output_lengths(torch.tensor([mid]))[0]) >= 1 else (mid, hi)
    return hi



# ------------------------------------------------------------------------------------ recognizer


@dataclass
class CTCOutput:
    """What :class:`CTCModel` returns."""

    logits: Tensor
    """(B, F, V) unnormalised scores over the vocabulary (blank = 0)."""
    lengths: Tensor
    """(B,) valid frames."""
    padding_mask: Tensor
    """(B, F) bool, True at padding frames."""

    def log_probs(self) -> Tensor:
        """(B, F, V) fp32 log-softmax."""
        return torch.log_softmax(self.logits.float(), dim=-1)


class CTCModel(nn.Module):
    """Speech recognizer: the shared :class:`Encoder` + dropout + linear layer over characters, CTC.

    Args:
        encoder: freshly built, or taken from a pretrained :class:`SSLModel`.
        embed_dim: its width E. vocab_size: V (blank = 0).
        cfg: fine-tuning settings: time/channel masking and layer drop (training only), final dropout,
            freezing of the front end.

    ``vocab`` (a :class:`wavssl_onnx.Vocabulary`) is attached when the model is built for a vocabulary
    or loaded from a run (``vocab.json``); :meth:`transcribe` needs it. ``decoding`` is how
    :meth:`transcribe` turns log-probabilities into text (``wavssl_onnx.Greedy()`` by default, or a
    ``BeamSearch(beam, lm, lm_weight, word_bonus)``), as the ONNX recognizers hold theirs.
    """

    def __init__(self, encoder: Encoder, embed_dim: int, vocab_size: int, cfg: CTCConfig) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(cfg.final_dropout)
        self.head = nn.Linear(embed_dim, vocab_size)
        self.cfg = cfg
        self.encoder.context.layer_drop = cfg.layer_drop
        if cfg.freeze_feature_encoder:
            self.encoder.frontend.requires_grad_(False)
        self.encoder_frozen = False
        self.vocab: Vocabulary | None = None
        self.decoding: Decoding = Greedy()
        self.sample_rate = 16000
        self.normalize_audio = False
        """Waveforms are standardised per utterance before the front end (``data.normalize`` of the run)."""

    def set_encoder_frozen(self, frozen: bool) -> None:
        """While frozen, the encoder runs without gradients (head-only updates; masking still applies)."""
        self.encoder_frozen = frozen

    @property
    def frame_shift(self) -> float:
        """Seconds between output frames."""
        return frame_shift_samples(self.encoder.frontend) / self.sample_rate

    def forward(self, wav: Tensor, lengths: Tensor | None = None) -> CTCOutput:
        """wav: (B, T) waveforms; lengths: (B,) valid samples (None = all) -> CTCOutput.

        In training mode, spans of frames are replaced by the mask embedding and spans of feature
        channels zeroed (``cfg``); in eval mode nothing is random and the graph exports to ONNX.
        """
        c = self.cfg
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.encoder_frozen):
            with torch.set_grad_enabled(torch.is_grad_enabled() and not c.freeze_feature_encoder):
                fr = self.encoder.frames(wav, lengths)
            mask = channels = None
            if self.training and c.mask_prob > 0:
                mask = span_mask(fr.lengths, fr.normed.shape[1], c.mask_prob, c.mask_length, min_masks=2,
                                 require_same_masks=False)
            if self.training and c.channel_prob > 0:
                channels = channel_mask(wav.shape[0], self.head.in_features, c.channel_prob, c.channel_length,
                                        device=wav.device)
            _, ctx = self.encoder.contextualise(fr, mask, channels)
        logits = self.head(self.dropout(ctx.last_hidden_state))
        return CTCOutput(logits, fr.lengths, fr.padding_mask)

    def encode(self, wav: Tensor, lengths: Tensor | None = None) -> EncoderOutput:
        """Frame features and every layer's output (no masking). wav: (B, T); lengths: (B,)."""
        return self.encoder(wav, lengths)

    def transcribe(self, inputs: Sequence[str | os.PathLike[str] | np.ndarray], *, sample_rate: int = 16000,
                   decoding: Decoding | None = None, max_batch_samples: int = 1_600_000) -> list[Hypothesis]:
        """Transcripts with word times of audio files or arrays at ``sample_rate``, by ``decoding``
        (default: :attr:`decoding`); see :func:`wavssl.recognition.transcribe`."""
        # audio I/O (soundfile, soxr) loads only to transcribe: the models themselves run without it
        # (GPU images have neither; tests/test_benchmarks.py runs the GPU benchmark with both blocked)
        from .recognition import transcribe

        return transcribe(self, inputs, sample_rate=sample_rate, decoding=decoding or self.decoding,
                          max_batch_samples=max_batch_samples)


def build_recognizer(cfg: ModelConfig, ctc: CTCConfig, vocab_size: int, encoder: Encoder | None = None) -> CTCModel:
    """A CTCModel on ``encoder`` (a fresh one from ``cfg`` when None)."""
    model = CTCModel(encoder if encoder is not None else build_encoder(cfg), cfg.context.embed_dim, vocab_size, ctc)
    model.sample_rate = cfg.frontend.sample_rate
    return model


# ------------------------------------------------------------------------------------ classifier


@dataclass
class ClassifierOutput:
    """What :class:`SequenceClassifier` returns."""

    logits: Tensor
    """(B, K) unnormalised class scores."""
    pooled: Tensor
    """(B, P) the pooled vector: E features (2E for ``stats`` pooling), plus the log-duration with
    ``use_duration``; the head standardises it and reads it."""


def masked_mean(x: Tensor, padding_mask: Tensor) -> Tensor:
    """Mean over valid frames: x (B, F, E), padding_mask (B, F) True at padding -> (B, E)."""
    keep = (~padding_mask).unsqueeze(-1).to(x.dtype)
    return (x * keep).sum(1) / keep.sum(1).clamp(min=1.0)


def segment_means(x: Tensor, padding_mask: Tensor, segments: int) -> Tensor:
    """Means over ``segments`` equal, consecutive parts of each row's valid frames, in order:
    x (B, F, E), padding_mask (B, F) -> (B, segments * E). Frame t of a row with n valid frames
    belongs to part floor(segments * t / n); a part with no frame (n < segments) gives zeros."""
    valid = (~padding_mask).to(x.dtype)
    n = valid.sum(1, keepdim=True).clamp(min=1.0)  # (B, 1)
    part = torch.floor(segments * torch.arange(x.shape[1], device=x.device, dtype=x.dtype)[None, :] / n)  # (B, F)
    onehot = (part.unsqueeze(-1) == torch.arange(segments, device=x.device, dtype=x.dtype)).to(x.dtype)
    weights = onehot * valid.unsqueeze(-1)  # (B, F, S)
    sums = torch.einsum("bfs,bfe->bse", weights, x)
    return (sums / weights.sum(1).clamp(min=1.0).unsqueeze(-1)).flatten(1)


class AttentionPool(nn.Module):
    """Softmax-weighted mean over valid frames; a learned linear score per frame."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, x: Tensor, padding_mask: Tensor) -> Tensor:
        """x (B, F, E), padding_mask (B, F) -> (B, E)."""
        scores = self.score(x).squeeze(-1).float().masked_fill(padding_mask, float("-inf"))
        weights = torch.softmax(scores, dim=1).nan_to_num(0.0).to(x.dtype)  # all-padding rows -> 0
        return torch.einsum("bf,bfe->be", weights, x)


class MeanPool(nn.Module):
    """:func:`masked_mean` as a module (no parameters)."""

    def forward(self, x: Tensor, padding_mask: Tensor) -> Tensor:
        """x (B, F, E), padding_mask (B, F) -> (B, E)."""
        return masked_mean(x, padding_mask)


class StatsPool(nn.Module):
    """Mean and standard deviation over valid frames, concatenated (x-vector statistics pooling)."""

    def forward(self, x: Tensor, padding_mask: Tensor) -> Tensor:
        """x (B, F, E), padding_mask (B, F) -> (B, 2E)."""
        mean = masked_mean(x, padding_mask)
        var = masked_mean((x - mean.unsqueeze(1)) ** 2, padding_mask)
        return torch.cat([mean, torch.sqrt(var + 1e-6)], dim=1)


POOLS: dict[str, type[nn.Module]] = {"mean": MeanPool, "attention": AttentionPool, "stats": StatsPool}


class SequenceClassifier(nn.Module):
    """The shared :class:`Encoder` + pooling over valid frames + dropout + linear head.

    Args:
        encoder: the encoder (freshly built, or taken from a pretrained :class:`SSLModel`).
        embed_dim: its width E. num_classes: K.
        pooling: ``mean``, ``attention`` or ``stats`` (mean and standard deviation).
        layer: context layer whose output is pooled: -1 the last, 0 the projected front-end frames,
            i in 1..L the output of layer i.
        all_layers: pool the projected frames and every layer's output concatenated (``layer`` ignored).
        segments: also the means of that many consecutive equal parts of the valid frames
            (:func:`segment_means`); 0 = off.
        dropout: on the pooled vector.
        use_duration: append log(valid frames) to the pooled vector (pooling alone is blind to how
            long a series is, which often tells classes apart).
        mask_prob, mask_length: in training (encoder not frozen), replace spans of ``mask_length``
            frames covering about ``mask_prob`` of the frames by the (pretrained) mask embedding, as
            wav2vec 2.0 fine-tuning does; 0 disables.

    The pooled vector is standardised feature by feature (batch norm without affine parameters:
    batch statistics in training, running ones in eval) before dropout and the linear head, so
    the head sees unit-scale features whichever layer and pooling feed it.

    With the encoder frozen (:meth:`set_encoder_frozen`; linear probing) it runs in eval mode under
    ``no_grad`` whatever the classifier's mode, so its features are deterministic and can be cached:
    :meth:`represent` gives them, :meth:`head` classifies them; ``forward`` chains the two.
    """

    def __init__(self, encoder: Encoder, embed_dim: int, num_classes: int, *, pooling: str = "mean",
                 layer: int = -1, all_layers: bool = False, segments: int = 0, dropout: float = 0.1,
                 use_duration: bool = False, mask_prob: float = 0.0, mask_length: int = 1) -> None:
        super().__init__()
        if pooling not in POOLS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {sorted(POOLS)}")
        self.encoder = encoder
        self.all_layers = all_layers
        self.state_dim = embed_dim * (len(encoder.context.layers) + 1 if all_layers else 1)
        """Width of the frame states :meth:`represent` returns."""
        self.pool: nn.Module = AttentionPool(self.state_dim) if pooling == "attention" else POOLS[pooling]()
        self.segments = segments
        width = self.state_dim * ((2 if pooling == "stats" else 1) + segments) + int(use_duration)
        self.norm = nn.BatchNorm1d(width, affine=False)
        self.dropout = nn.Dropout(dropout)
        self.use_duration = use_duration
        self.classifier = nn.Linear(width, num_classes)
        self.layer = layer
        self.mask_prob, self.mask_length = mask_prob, mask_length
        self.num_classes = num_classes
        self.class_names = [str(i) for i in range(num_classes)]
        """Name of every output class (set from ``labels.json`` when loaded from a run)."""
        self.encoder_frozen = False

    def set_encoder_frozen(self, frozen: bool) -> None:
        """Freeze (eval mode, no gradient) or unfreeze the encoder."""
        self.encoder_frozen = frozen
        self.train(self.training)

    def train(self, mode: bool = True) -> "SequenceClassifier":
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self

    def represent(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x: (B, T) or (B, C, T); lengths: (B,) -> frame states (B, F, state_dim) of the chosen layer
        (or of all, concatenated) and the (B, F) padding mask."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.encoder_frozen):
            fr = self.encoder.frames(x, lengths)
            mask = None
            if self.training and not self.encoder_frozen and self.mask_prob > 0:
                mask = span_mask(fr.lengths, fr.normed.shape[1], self.mask_prob, self.mask_length,
                                 require_same_masks=False)
            projected, ctx = self.encoder.contextualise(fr, mask)
            states = self.select_states(projected, ctx.layer_outputs, ctx.last_hidden_state)
        return states, fr.padding_mask

    def select_states(self, projected: Tensor, layer_outputs: tuple[Tensor, ...] | list[Tensor],
                      last: Tensor) -> Tensor:
        """The frame states the head pools, (B, F, state_dim): every layer's output concatenated
        (``all_layers``) or the chosen ``layer``'s (0 = ``projected``, -1 = ``last``)."""
        if self.all_layers:
            return torch.cat([projected, *layer_outputs], dim=-1)
        if self.layer == -1:
            return last
        return projected if self.layer == 0 else layer_outputs[self.layer - 1]

    def pooled(self, states: Tensor, padding_mask: Tensor) -> Tensor:
        """(B, F, state_dim) states -> (B, D) pooled vector the head standardises and classifies."""
        pooled = self.pool(states, padding_mask)
        if self.segments:
            pooled = torch.cat([pooled, segment_means(states, padding_mask, self.segments)], dim=1)
        if self.use_duration:
            frames = (~padding_mask).sum(1, keepdim=True).clamp(min=1).to(pooled.dtype)
            pooled = torch.cat([pooled, torch.log(frames)], dim=1)
        return pooled

    def head(self, states: Tensor, padding_mask: Tensor) -> ClassifierOutput:
        """Pool (B, F, state_dim) states over valid frames and classify -> ClassifierOutput."""
        pooled = self.pooled(states, padding_mask)
        return ClassifierOutput(self.classifier(self.dropout(self.norm(pooled))), pooled)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> ClassifierOutput:
        """x: (B, C, T) sensor series or (B, T) audio; lengths: (B,) valid samples -> ClassifierOutput."""
        return self.head(*self.represent(x, lengths))


def build_classifier(cfg: ModelConfig, classify: ClassifyConfig, num_classes: int,
                     encoder: Encoder | None = None) -> SequenceClassifier:
    """A SequenceClassifier on ``encoder`` (a fresh one from ``cfg`` when None); frozen for a linear probe."""
    model = SequenceClassifier(encoder if encoder is not None else build_encoder(cfg), cfg.context.embed_dim,
                               num_classes, pooling=classify.pooling, layer=classify.layer,
                               all_layers=classify.all_layers, segments=classify.segments,
                               dropout=classify.head_dropout, use_duration=classify.use_duration,
                               mask_prob=classify.mask_prob, mask_length=cfg.masking.mask_length)
    if classify.linear_probe:
        model.encoder.requires_grad_(False)
        model.set_encoder_frozen(True)
    return model
