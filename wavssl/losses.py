"""wav2vec 2.0 objective: InfoNCE over cosine similarity / kappa, codebook diversity, feature penalty."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class ContrastiveLoss:
    """All terms of the pretraining loss (scalars, 0-dim tensors)."""

    loss: Tensor
    """Total: contrastive + alpha * diversity + beta * feature_penalty."""
    contrastive: Tensor
    """Mean InfoNCE over masked frames."""
    diversity: Tensor
    """(G*V - prob_perplexity) / (G*V): 0 when every codebook entry is used equally."""
    feature_penalty: Tensor
    """Mean squared front-end output."""
    accuracy: Tensor
    """Fraction of masked frames whose true target scores strictly highest."""
    prob_perplexity: Tensor
    """Perplexity of the averaged soft code distribution (summed over groups)."""
    code_perplexity: Tensor
    """Perplexity of the hard code histogram (summed over groups)."""
    num_masked: Tensor
    """Number of masked frames the loss is averaged over."""
    temperature: float
    """Gumbel temperature in force."""


def contrastive_logits(context: Tensor, targets: Tensor, negatives: Tensor, logit_temp: float) -> Tensor:
    """Cosine-similarity logits of the positive (column 0) and K distractors.

    Args:
        context: (N, D) context vectors at masked frames.
        targets: (N, D) their true quantised targets.
        negatives: (N, K, D) distractor targets.
    Returns:
        (N, 1 + K) logits / logit_temp; distractors equal to the positive get -inf.
    """
    candidates = torch.cat([targets.unsqueeze(1), negatives], dim=1).float()  # (N, 1+K, D)
    logits = F.cosine_similarity(context.float().unsqueeze(1), candidates, dim=-1) / logit_temp
    same = (negatives == targets.unsqueeze(1)).all(-1)  # (N, K)
    return torch.cat([logits[:, :1], logits[:, 1:].masked_fill(same, float("-inf"))], dim=1)


def contrastive_accuracy(logits: Tensor) -> Tensor:
    """Fraction of rows whose column 0 is the unique maximum (ties count as wrong)."""
    if logits.shape[0] == 0:
        return logits.new_zeros(())
    best = logits[:, 1:].max(dim=1).values
    return (logits[:, 0] > best).float().mean()


def wav2vec2_loss(logits: Tensor, *, prob_perplexity: Tensor, code_perplexity: Tensor,
                  num_codes: int, feature_penalty: Tensor, diversity_weight: float,
                  feature_penalty_weight: float, temperature: float) -> ContrastiveLoss:
    """Combine the terms. logits: (N, 1 + K) from :func:`contrastive_logits`; num_codes = G * V."""
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    contrastive = F.cross_entropy(logits, target) if logits.shape[0] else logits.sum() * 0.0
    diversity = (num_codes - prob_perplexity) / num_codes
    total = contrastive + diversity_weight * diversity + feature_penalty_weight * feature_penalty
    return ContrastiveLoss(
        loss=total, contrastive=contrastive.detach(), diversity=diversity.detach(),
        feature_penalty=feature_penalty.detach(), accuracy=contrastive_accuracy(logits.detach()),
        prob_perplexity=prob_perplexity.detach(), code_perplexity=code_perplexity.detach(),
        num_masked=torch.tensor(logits.shape[0], device=logits.device), temperature=temperature,
    )
