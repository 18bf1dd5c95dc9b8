"""The "What pretraining learned" tab: the wav2vec 2.0 game played on one clip (PyTorch).

Everything comes from the model's own code, composed the way :meth:`wavssl.models.SSLModel.forward`
composes it: the span mask and distractors from :class:`wavssl.models.MaskSampler` (the config's
masking), the masked context from ``encoder.contextualise``, the logits and the Gumbel quantizer's
targets (eval mode: argmax codes) from the wav2vec 2.0 objective's ``scores``
(:class:`wavssl.objectives.Wav2Vec2Objective`); accuracy is :func:`wavssl.losses.contrastive_accuracy`.
Imported only when torch is installed and a pretraining run is served.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from wavssl.losses import contrastive_accuracy
from wavssl.models import MaskSampler, SSLModel, frame_shift_samples
from wavssl.objectives import Wav2Vec2Objective

MAX_SIMILARITY_PANELS = 6
"""Frame self-similarity matrices drawn: the front end's frames and up to this many layers in all."""


@dataclass
class SSLView:
    """What the pretraining objective sees and does on one clip (F frames, N masked, K distractors)."""

    features: np.ndarray
    """(F, D) normalised front-end frames (the quantizer's input)."""
    frame_shift: float
    """Seconds per frame."""
    mask: np.ndarray
    """(F,) bool, True at masked frames."""
    masked: np.ndarray
    """(N,) frame index of every masked frame."""
    logits: np.ndarray
    """(N, 1 + K) cosine similarity / kappa of the context with the true target (column 0) and its
    K distractors (-inf where a distractor is the very same codevector)."""
    correct: np.ndarray
    """(N,) bool: the true target scores strictly highest."""
    accuracy: float
    """Fraction of masked frames played right (the training log's contrastive accuracy, on this clip)."""
    codes: np.ndarray
    """(F, G) codebook entry of every frame in each of the G groups (argmax)."""
    entries: int
    """V: entries per codebook group."""
    code_perplexity: float
    """Perplexity of this clip's code histogram, summed over groups (at most G x V)."""
    layer_names: list[str]
    similarity: list[np.ndarray]
    """(F, F) cosine similarity of every pair of frames, per layer of ``layer_names``."""
    cross_layer: np.ndarray
    """(L, L) mean over frames of the cosine similarity of a frame's vectors in two layers."""

    @property
    def distractors(self) -> int:
        return self.logits.shape[1] - 1

    @property
    def rank(self) -> np.ndarray:
        """(N,) how many candidates score at least as high as the true target (1 = picked)."""
        return (self.logits[:, 1:] >= self.logits[:, :1]).sum(1) + 1

    def distinct_codes(self) -> int:
        """Distinct codevectors (combinations over groups) used by the clip's frames."""
        return len({tuple(c) for c in self.codes.tolist()})


def _cosine(x: torch.Tensor) -> np.ndarray:
    """(F, E) -> (F, F) cosine similarities."""
    n = F.normalize(x.float(), dim=-1, eps=1e-8)
    return (n @ n.T).numpy()


@torch.inference_mode()
def play(model: SSLModel, wave: np.ndarray, seed: int = 0) -> SSLView:
    """Mask the clip, let the model pick each masked frame's target among its distractors, and
    measure codebook use and layer similarity.

    Args:
        model: a pretraining model (``wavssl.load(run)``), eval mode.
        wave: (T,) float32 samples at the model's rate.
        seed: the mask and distractor draw (same seed, same draw).
    """
    model.eval()
    objective = model.objective
    assert isinstance(objective, Wav2Vec2Objective)  # the view shows wav2vec 2.0's quantizer and scores
    wav = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))[None]  # (1, T)
    lengths = torch.tensor([wav.shape[1]])
    fr = model.encoder.frames(wav, lengths)
    masks = MaskSampler(model.cfg)(lengths, wav.shape[1], seed)
    _, ctx = model.encoder.contextualise(fr, masks.mask)
    logits, q = objective.scores(fr, ctx.last_hidden_state, masks)
    best_other = logits[:, 1:].max(dim=1).values if logits.shape[1] > 1 else torch.full_like(logits[:, 0], -torch.inf)
    frames = fr.normed[0]  # (F, D)
    every = objective.quantizer(frames)  # all frames: codes and perplexity of the clip
    clean = model.encode(wav, lengths)  # unmasked: every layer's output
    layers = [frames, *(h[0] for h in clean.layer_outputs)]
    names = ["front end", *(f"layer {i + 1}" for i in range(len(clean.layer_outputs)))]
    pick = np.unique(np.linspace(0, len(layers) - 1, min(MAX_SIMILARITY_PANELS, len(layers))).round().astype(int))
    normed = [F.normalize(h.float(), dim=-1, eps=1e-8) for h in layers[1:]]
    cross = np.array([[float((a * b).sum(-1).mean()) for b in normed] for a in normed])
    return SSLView(
        features=frames.float().numpy(),
        frame_shift=frame_shift_samples(model.encoder.frontend) / model.cfg.frontend.sample_rate,
        mask=masks.mask[0].numpy(),
        masked=(masks.index % fr.normed.shape[1]).numpy(),
        logits=logits.float().numpy(),
        correct=(logits[:, 0] > best_other).numpy(),
        accuracy=float(contrastive_accuracy(logits)),
        codes=every.codes.numpy(),
        entries=objective.quantizer.entries,
        code_perplexity=float(every.code_perplexity),
        layer_names=[names[i] for i in pick],
        similarity=[_cosine(layers[i]) for i in pick],
        cross_layer=cross,
    )
