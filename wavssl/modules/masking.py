"""Pure, vectorised mask and sampling functions (torch, on the tensors' device; no per-utterance loops).

Span masking follows fairseq's semantics: an utterance of L valid frames gets
``max(min_masks, int(mask_prob * L / span + u))`` spans (u ~ U[0, 1) for probabilistic rounding),
their starts drawn without replacement from ``[0, L - span]``; spans may overlap, so with
``mask_prob = 0.65`` and ``span = 10`` about 49% of frames end masked.

Where it runs: pretraining draws a batch's :class:`MaskedFrames` (:func:`mask_frames`) on the host,
on CPU tensors in the data pipeline, and ships them to the device with the batch, so the training
step never waits for the device to tell the host how many frames are masked. The same functions on
device tensors (a model called without masks) are correct but synchronise: picking the top
``counts.max()`` positions and listing the masked frames need their count on the host.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor


def padding_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """(B,) lengths -> (B, max_len) bool, True at padding."""
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]


def _choose(scores: Tensor, counts: Tensor) -> Tensor:
    """Pick, per row, the ``counts[b]`` positions with the highest scores.

    scores: (B, F) with -inf at ineligible positions; counts: (B,) -> (B, F) bool.
    Random scores make this sampling without replacement.
    """
    k = int(counts.max()) if counts.numel() else 0
    chosen = torch.zeros_like(scores, dtype=torch.bool)
    if k == 0:
        return chosen
    top = scores.topk(min(k, scores.shape[1]), dim=1).indices
    keep = torch.arange(top.shape[1], device=scores.device)[None, :] < counts[:, None]
    return chosen.scatter_(1, top, keep)


def span_mask(lengths: Tensor, num_frames: int, mask_prob: float, span: int, *, min_masks: int = 0,
              require_same_masks: bool = True, generator: torch.Generator | None = None) -> Tensor:
    """Random span mask over valid frames.

    Args:
        lengths: (B,) valid frames per utterance.
        num_frames: F, padded length.
        mask_prob, span, min_masks: see module docstring.
        require_same_masks: drop masked frames at random so every row has as many masked frames as the
            row with the fewest (lets distractor sampling treat rows alike; fairseq's default).
    Returns:
        (B, F) bool, True at masked frames; never True at padding.
    """
    device = lengths.device
    b = lengths.shape[0]
    lengths = lengths.clamp(max=num_frames)
    u = torch.rand(b, device=device, generator=generator)
    num_spans = (mask_prob * lengths.float() / span + u).long().clamp(min=min_masks)
    starts_avail = (lengths - span + 1).clamp(min=0)
    num_spans = torch.minimum(num_spans, starts_avail)
    pos = torch.arange(num_frames, device=device)[None, :]
    scores = torch.rand(b, num_frames, device=device, generator=generator)
    scores = scores.masked_fill(pos >= starts_avail[:, None], float("-inf"))
    starts = _choose(scores, num_spans)
    # dilate every start over the next `span` frames
    spans = F.max_pool1d(F.pad(starts.float().unsqueeze(1), (span - 1, 0)), span, stride=1).squeeze(1) > 0
    spans &= pos < lengths[:, None]
    if require_same_masks and b > 1:
        counts = spans.sum(1)
        target = counts.min().expand(b)
        keep_scores = torch.rand(b, num_frames, device=device, generator=generator).masked_fill(~spans, float("-inf"))
        spans = _choose(keep_scores, target)
    return spans


def channel_mask(batch: int, channels: int, mask_prob: float, span: int, *,
                 device: torch.device | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Span mask over feature channels (fine-tuning augmentation): (B, C) bool, True = zeroed."""
    lengths = torch.full((batch,), channels, device=device)
    return span_mask(lengths, channels, mask_prob, span, require_same_masks=False, generator=generator)


def sample_negatives(mask: Tensor, num_negatives: int, *, generator: torch.Generator | None = None) -> Tensor:
    """Distractor indices for every masked frame, drawn uniformly from the *other* masked frames of the
    same utterance.

    Args:
        mask: (B, F) bool span mask; N = mask.sum() masked frames, flattened in row-major order.
    Returns:
        (N, K) long indices into the N flattened masked frames. A row's distractors never include
        the frame itself; an utterance with a single masked frame can only point at itself (the loss
        discards distractors identical to the positive).
    """
    counts = mask.sum(1)  # (B,)
    offsets = torch.cumsum(counts, 0) - counts  # first flat index of each row
    row = torch.repeat_interleave(torch.arange(mask.shape[0], device=mask.device), counts)  # (N,)
    own = torch.arange(row.shape[0], device=mask.device) - offsets[row]  # index within its row
    n_other = (counts[row] - 1).clamp(min=1)  # choices excluding itself
    r = torch.rand(row.shape[0], num_negatives, device=mask.device, generator=generator)
    pick = (r * n_other[:, None]).long().clamp(max=(n_other - 1)[:, None])
    pick = pick + (pick >= own[:, None]).long() * (counts[row] > 1).long()[:, None]
    return offsets[row][:, None] + pick


@dataclass
class MaskedFrames:
    """A batch's span mask and distractors: everything the contrastive loss indexes with.

    Fixed shapes once built, so a training step gathers with them (``index_select``) instead of
    boolean indexing, which would make the host wait for the device to count masked frames.
    """

    mask: Tensor
    """(B, F) bool, True at masked frames (never at padding)."""
    index: Tensor
    """(N,) long, flat position ``b * F + t`` of every masked frame, row-major (row by row, ascending)."""
    negatives: Tensor
    """(N, K [+ K']) long, for each masked frame K distractors as positions in ``index``
    (:func:`sample_negatives`), then K' from the whole batch (``cross_sample_negatives``)."""
    per_row: int
    """M when every row has the same M > 0 masked frames (``require_same_masks``; then N = B * M and
    ``index`` viewed as (B, M) lists each row's frames), else 0."""

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "MaskedFrames":
        """The same masks on ``device``."""
        return replace(self, mask=self.mask.to(device, non_blocking=non_blocking),
                       index=self.index.to(device, non_blocking=non_blocking),
                       negatives=self.negatives.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "MaskedFrames":
        """Copy in pinned host memory (asynchronous copies to the GPU)."""
        return replace(self, mask=self.mask.pin_memory(), index=self.index.pin_memory(),
                       negatives=self.negatives.pin_memory())


def mask_frames(lengths: Tensor, num_frames: int, mask_prob: float, span: int, num_negatives: int, *,
                min_masks: int = 0, require_same_masks: bool = True, cross_sample_negatives: int = 0,
                generator: torch.Generator | None = None) -> MaskedFrames:
    """:func:`span_mask` and :func:`sample_negatives` for a batch, with the masked frames listed.

    Args:
        lengths: (B,) valid frames per utterance. num_frames: F, padded length.
        mask_prob, span, min_masks, require_same_masks: as :func:`span_mask`.
        num_negatives: K distractors per masked frame from its own utterance.
        cross_sample_negatives: K' more from any utterance of the batch (then ``per_row`` is 0: the
            distractors leave the row blocks).
        generator: source of randomness (the global RNG of ``lengths``' device when None); the result
            is a pure function of the arguments and the generator's state.
    Returns:
        MaskedFrames on ``lengths``' device. Meant for CPU tensors; on a GPU it synchronises.
    """
    mask = span_mask(lengths, num_frames, mask_prob, span, min_masks=min_masks,
                     require_same_masks=require_same_masks, generator=generator)
    counts = mask.sum(1)
    per_row = int(counts[0]) if counts.numel() and bool((counts == counts[0]).all()) else 0
    negatives = sample_negatives(mask, num_negatives, generator=generator)
    if cross_sample_negatives > 0:  # the batch's masked frames as one row: any frame but itself
        every = torch.ones(1, negatives.shape[0], dtype=torch.bool, device=mask.device)
        cross = sample_negatives(every, cross_sample_negatives, generator=generator)
        negatives, per_row = torch.cat([negatives, cross], dim=1), 0
    return MaskedFrames(mask=mask, index=mask.flatten().nonzero().squeeze(1), negatives=negatives, per_row=per_row)
