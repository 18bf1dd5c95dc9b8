"""Self-supervised objectives: what a pretraining model predicts at its masked frames, and the loss.

:class:`~wavssl.models.SSLModel` runs the shared encoder (front end -> frames -> span masking ->
context Transformer) and hands the frames, the context vectors and the masks to its
:class:`Objective`. wav2vec 2.0's (Gumbel product quantizer, contrastive loss against distractors,
diversity and feature-penalty terms) is :class:`Wav2Vec2Objective`; another objective — HuBERT's
prediction of given cluster ids (``targets``), BEST-RQ's random-projection codes — is a new class
here with the same three methods, not a change to the model, the trainer or the tasks:

- ``parts()``: its trainable modules by name; the model registers them as its own children, so
  their parameters are in the model's state dict under those names (wav2vec 2.0's are
  ``dropout_features``, ``quantizer``, ``project_q``, ``final_proj``, as fairseq and every wavssl
  checkpoint name them);
- ``set_num_updates(n)``: schedules by update count (the Gumbel temperature);
- ``__call__(frames, context, masks, targets)`` -> an :class:`ObjectiveOutput`: the loss, what it
  is averaged over (its weight in the trainer) and the metrics to log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from torch import Tensor, nn

from .config import ModelConfig
from .losses import ContrastiveLoss, contrastive_logits, wav2vec2_loss
from .modules.masking import MaskedFrames
from .modules.quantizer import GumbelQuantizer, QuantizerOutput

if TYPE_CHECKING:  # models imports this module to build the default objective
    from .models import EncoderFrames


class ObjectiveOutput(Protocol):
    """What an objective returns for a batch."""

    @property
    def loss(self) -> Tensor:
        """0-dim tensor to minimise (averaged over :attr:`weight` items)."""

    @property
    def weight(self) -> Tensor:
        """0-dim count the loss is averaged over (masked frames): the trainer weights batches by it."""

    def metrics(self) -> dict[str, Tensor]:
        """Named 0-dim values to log (device tensors: reading them is left to log intervals)."""


class Objective(Protocol):
    """A pretraining objective over the encoder's outputs (see the module docstring)."""

    def parts(self) -> dict[str, nn.Module]:
        """Its trainable modules, by the name the model registers each under."""

    def set_num_updates(self, num_updates: int) -> None:
        """Called by the trainer before each update."""

    def __call__(self, frames: EncoderFrames, context: Tensor, masks: MaskedFrames,
                 targets: Tensor | None = None) -> ObjectiveOutput:
        """frames: the front end's (B, F, D) outputs; context: (B, F, E) last hidden states of the
        masked input; masks: the span mask and distractors; targets: optional (B, F) per-frame labels
        from the batch (objectives that predict given labels)."""


class Wav2Vec2Objective:
    """wav2vec 2.0: at each masked frame, tell the quantised true frame from K distractors.

    The context vector (through ``final_proj``) is compared by cosine similarity / kappa with the
    Gumbel-quantised, projected (``project_q``) unmasked frame and the distractors the masks name;
    loss = InfoNCE + alpha * codebook diversity + beta * feature penalty (``wav2vec2_loss``).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        q = cfg.quantizer
        self.loss_cfg = cfg.loss
        self.dropout_features = nn.Dropout(cfg.context.dropout_features)
        self.quantizer = GumbelQuantizer(cfg.frontend.frame_dim, q.groups, q.entries, q.dim, max_temp=q.max_temp,
                                         min_temp=q.min_temp, temp_decay=q.temp_decay)
        self.project_q = nn.Linear(q.dim, cfg.final_dim)
        self.final_proj = nn.Linear(cfg.context.embed_dim, cfg.final_dim)

    def parts(self) -> dict[str, nn.Module]:
        return {"dropout_features": self.dropout_features, "quantizer": self.quantizer,
                "project_q": self.project_q, "final_proj": self.final_proj}

    def set_num_updates(self, num_updates: int) -> None:
        """Anneals the Gumbel temperature."""
        self.quantizer.set_num_updates(num_updates)

    def scores(self, frames: EncoderFrames, context: Tensor, masks: MaskedFrames) -> tuple[Tensor, QuantizerOutput]:
        """(N, 1 + K) logits of the N masked frames (the true quantised frame first, then the K
        distractors) and the quantizer's output for the true frames."""
        predicted = self.final_proj(select_frames(context, masks.index))  # (N, final_dim)
        q = self.quantizer(select_frames(self.dropout_features(frames.normed), masks.index))
        true = self.project_q(q.quantized)  # (N, final_dim)
        logits = contrastive_logits(predicted, true, masks.negatives, self.loss_cfg.logit_temp,
                                    target_ids=q.code_ids, block=masks.per_row)
        return logits, q

    def __call__(self, frames: EncoderFrames, context: Tensor, masks: MaskedFrames,
                 targets: Tensor | None = None) -> ContrastiveLoss:
        """The wav2vec 2.0 loss of a batch (``targets`` unused: the quantizer makes its own)."""
        valid = (~frames.padding_mask).float()
        feature_penalty = (frames.raw.float().pow(2).mean(-1) * valid).sum() / valid.sum().clamp(min=1.0)
        logits, q = self.scores(frames, context, masks)
        return wav2vec2_loss(
            logits, prob_perplexity=q.prob_perplexity, code_perplexity=q.code_perplexity,
            group_code_perplexity=q.group_code_perplexity,
            num_codes=self.quantizer.groups * self.quantizer.entries, feature_penalty=feature_penalty,
            diversity_weight=self.loss_cfg.diversity_weight,
            feature_penalty_weight=self.loss_cfg.feature_penalty_weight,
            temperature=self.quantizer.temperature,
        )


def select_frames(x: Tensor, index: Tensor) -> Tensor:
    """Frames at flat positions: x (B, F, D), index (N,) of ``b * F + t`` -> (N, D)."""
    return x.reshape(-1, x.shape[-1]).index_select(0, index)
