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
    group_code_perplexity: Tensor
    """(G,) perplexity of each group's hard code histogram."""
    num_masked: Tensor
    """Number of masked frames the loss is averaged over."""
    temperature: float
    """Gumbel temperature in force."""

    @property
    def weight(self) -> Tensor:
        """What the loss is averaged over (the masked frames): the trainer weights batches by it."""
        return self.num_masked

    def metrics(self) -> dict[str, Tensor]:
        """What a pretraining step logs: the loss terms, the accuracy, the perplexities (summed and
        per codebook group as ``code_perplexity_<g>``) and the temperature; 0-dim tensors, read at
        log intervals only."""
        names = ("contrastive", "diversity", "feature_penalty", "accuracy", "prob_perplexity", "code_perplexity")
        out = {k: getattr(self, k) for k in names}
        out.update({f"code_perplexity_{g}": p for g, p in enumerate(self.group_code_perplexity.unbind())})
        out["temperature"] = torch.full((), float(self.temperature))
        return out


FULL_SIMILARITY_MAX_ROWS = 4096
"""Above this many masked frames, :func:`contrastive_logits` without ``block`` gathers
the distractors instead of computing the (N, N) similarity matrix."""


def contrastive_logits(context: Tensor, targets: Tensor, negatives: Tensor, logit_temp: float, *,
                       target_ids: Tensor, block: int = 0) -> Tensor:
    """Cosine-similarity logits of the positive (column 0) and K distractors given as row indices
    into ``targets``.

    Equal to ``cos(context, [targets; targets[negatives]]) / logit_temp`` up to float rounding,
    without building the (N, K, D) distractor tensor (nor its gradient): the cosine
    similarities of every context vector with the targets it can be compared with come from one
    matrix product of the L2-normalised vectors, and the K distractor logits are gathered from it.

    Args:
        context: (N, D) context vectors at masked frames.
        targets: (N, D) their true quantised targets.
        negatives: (N, K) long, row indices into ``targets`` (:func:`~wavssl.modules.masking.sample_negatives`).
        target_ids: (N,) long, equal for two rows exactly when their targets are the same codevector
            (:attr:`~wavssl.modules.quantizer.QuantizerOutput.code_ids`).
        block: if > 0, rows come in consecutive blocks of ``block`` (one per utterance, equal masked
            counts) and every row's distractors lie in its own block; only the (N / block) diagonal
            (block, block) similarity blocks are computed. 0 for no such structure.
    Returns:
        (N, 1 + K) logits / logit_temp; distractors equal to the positive get -inf.
    """
    n = context.shape[0]
    c = F.normalize(context.float(), dim=-1, eps=1e-8)  # what cosine_similarity divides by
    t = F.normalize(targets.float(), dim=-1, eps=1e-8)
    positive = (c * t).sum(-1, keepdim=True)
    if block > 0:
        sim = torch.bmm(c.view(n // block, block, -1), t.view(n // block, block, -1).transpose(1, 2))
        first = torch.div(torch.arange(n, device=c.device), block, rounding_mode="floor") * block
        negative = sim.view(n, block).gather(1, negatives - first[:, None])
    elif n <= FULL_SIMILARITY_MAX_ROWS:
        negative = (c @ t.T).gather(1, negatives)
    else:
        negative = torch.einsum("nd,nkd->nk", c, t[negatives])
    same = target_ids[negatives] == target_ids[:, None]  # a codevector collision: the distractor is the positive
    return torch.cat([positive, negative.masked_fill(same, float("-inf"))], dim=1) / logit_temp


def contrastive_accuracy(logits: Tensor) -> Tensor:
    """Fraction of rows whose column 0 is the unique maximum (ties count as wrong)."""
    if logits.shape[0] == 0:
        return logits.new_zeros(())
    best = logits[:, 1:].max(dim=1).values
    return (logits[:, 0] > best).float().mean()


def wav2vec2_loss(logits: Tensor, *, prob_perplexity: Tensor, code_perplexity: Tensor,
                  num_codes: int, feature_penalty: Tensor, diversity_weight: float,
                  feature_penalty_weight: float, temperature: float,
                  group_code_perplexity: Tensor | None = None) -> ContrastiveLoss:
    """Combine the terms. logits: (N, 1 + K) from :func:`contrastive_logits`; num_codes = G * V;
    group_code_perplexity: (G,) (default: ``code_perplexity`` as a single group)."""
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    contrastive = F.cross_entropy(logits, target) if logits.shape[0] else logits.sum() * 0.0
    diversity = (num_codes - prob_perplexity) / num_codes
    total = contrastive + diversity_weight * diversity + feature_penalty_weight * feature_penalty
    return ContrastiveLoss(
        loss=total, contrastive=contrastive.detach(), diversity=diversity.detach(),
        feature_penalty=feature_penalty.detach(), accuracy=contrastive_accuracy(logits.detach()),
        prob_perplexity=prob_perplexity.detach(), code_perplexity=code_perplexity.detach(),
        group_code_perplexity=(code_perplexity if group_code_perplexity is None else group_code_perplexity)
        .detach().reshape(-1),
        num_masked=torch.full((), logits.shape[0], device=logits.device), temperature=temperature,
    )
