"""Gumbel product quantizer: G codebooks of V entries; one entry per group is picked and the
picked codevectors are concatenated."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class QuantizerOutput:
    """Output of :class:`GumbelQuantizer`."""

    quantized: Tensor
    """(N, dim) concatenated codevectors."""
    codes: Tensor
    """(N, G) index of the chosen entry in each group."""
    code_ids: Tensor
    """(N,) the G codes as one integer (mixed radix V): two frames have the same id exactly when
    they got the same codevector (compared without reading anything back to the host)."""
    prob_perplexity: Tensor
    """() sum over groups of the perplexity of the batch-averaged softmax (drives the diversity loss)."""
    code_perplexity: Tensor
    """() sum over groups of the perplexity of the hard code histogram."""
    group_code_perplexity: Tensor
    """(G,) perplexity of each group's hard code histogram (``code_perplexity`` is their sum)."""


def _perplexity(probs: Tensor) -> Tensor:
    """probs: (G, V) distributions -> () sum of exp(entropy) over groups."""
    return _group_perplexity(probs).sum()


def _group_perplexity(probs: Tensor) -> Tensor:
    """probs: (G, V) distributions -> (G,) exp(entropy) of each."""
    return torch.exp(-(probs * torch.log(probs + 1e-7)).sum(-1))


class GumbelQuantizer(nn.Module):
    """Straight-through hard Gumbel-softmax in training, argmax in eval.

    Args:
        in_dim: size of the input features.
        groups: G. entries: V. dim: total codevector size (dim // G per group).
    The temperature is set by the trainer through :meth:`set_num_updates`.
    """

    def __init__(self, in_dim: int, groups: int, entries: int, dim: int, *, max_temp: float = 2.0,
                 min_temp: float = 0.5, temp_decay: float = 0.999995) -> None:
        super().__init__()
        self.groups, self.entries = groups, entries
        self.codevectors = nn.Parameter(torch.empty(1, groups * entries, dim // groups).uniform_())
        self.weight_proj = nn.Linear(in_dim, groups * entries)
        nn.init.normal_(self.weight_proj.weight, mean=0.0, std=1.0)
        nn.init.zeros_(self.weight_proj.bias)
        self.max_temp, self.min_temp, self.temp_decay = max_temp, min_temp, temp_decay
        self.temperature = max_temp

    def set_num_updates(self, num_updates: int) -> None:
        """Anneal: temperature = max(max_temp * temp_decay ** num_updates, min_temp)."""
        self.temperature = max(self.max_temp * self.temp_decay**num_updates, self.min_temp)

    def forward(self, x: Tensor) -> QuantizerOutput:
        """x: (N, in_dim) features of the frames to quantise (padding already removed)."""
        n = x.shape[0]
        logits = self.weight_proj(x).float().view(n, self.groups, self.entries)
        codes = logits.argmax(-1)
        # one-hot without F.one_hot, which reads the codes back to validate them on CPU
        hard = torch.zeros_like(logits).scatter_(-1, codes.unsqueeze(-1), 1.0)
        probs = torch.softmax(logits, dim=-1)
        if self.training:
            onehot = F.gumbel_softmax(logits, tau=self.temperature, hard=True, dim=-1)
            codes = onehot.argmax(-1)
        else:
            onehot = hard
        cv = self.codevectors.view(self.groups, self.entries, -1)
        quantized = torch.einsum("ngv,gvd->ngd", onehot.to(cv.dtype), cv).reshape(n, -1)
        radix = self.entries ** torch.arange(self.groups, device=codes.device)
        group_code_perplexity = _group_perplexity(hard.mean(0))
        return QuantizerOutput(
            quantized=quantized,
            codes=codes,
            code_ids=(codes * radix).sum(-1),
            prob_perplexity=_perplexity(probs.mean(0)),
            code_perplexity=group_code_perplexity.sum(),
            group_code_perplexity=group_code_perplexity,
        )
