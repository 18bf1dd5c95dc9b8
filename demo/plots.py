"""Figures of the demo (matplotlib, built as ``Figure`` objects: no pyplot state shared between the
server's threads)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from wavssl_onnx import Vocabulary, WordTime

    from .ssl_view import SSLView

WIDTH = 11.0
"""Figure width in inches."""
MAX_WORD_LABELS = 80
"""Above this many words the posteriorgram marks words without writing them."""
MAX_LABEL_CHARS = 14
"""Longer words are cut in the posteriorgram's labels."""


def posteriorgram(log_probs: np.ndarray, vocab: Vocabulary, frame_shift: float, words: Sequence[WordTime] = (),
                  title: str = "") -> Figure:
    """Token probabilities over time: (F, V) log-probs as a tokens x time image, the blank row on top
    (labelled), each recognised word shaded on the time axis and written above it.

    Tokens are drawn in vocabulary order (blank, <unk>, the word delimiter ``|``, the characters).
    """
    probs = np.exp(log_probs.astype(np.float64)).T  # (V, F)
    num_tokens, num_frames = probs.shape
    labels = [t if t != vocab.word_delimiter else "| (space)" for t in vocab.tokens]
    height = min(9.0, 2.0 + 0.16 * num_tokens)
    fig = Figure(figsize=(WIDTH, height), layout="constrained")
    ax = fig.add_subplot()
    end = num_frames * frame_shift
    ax.imshow(probs, aspect="auto", origin="upper", interpolation="nearest", cmap="magma", vmin=0.0, vmax=1.0,
              extent=(0.0, end, num_tokens - 0.5, -0.5))
    ax.set_yticks(range(num_tokens), labels, fontsize=7)
    blank = vocab.blank_id
    ax.get_yticklabels()[blank].set_color("tab:blue")
    ax.get_yticklabels()[blank].set_fontweight("bold")
    ax.axhline(blank + 0.5, color="tab:blue", lw=0.8)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("token")
    crowded = len(words) > 20 or any(len(w.word) > 12 for w in words)
    for i, w in enumerate(words):
        ax.axvspan(w.start, w.end, ymin=0.0, ymax=0.02, color="tab:cyan" if i % 2 else "tab:green")
        ax.axvline(w.start, color="white", lw=0.4, alpha=0.5)
        if len(words) <= MAX_WORD_LABELS:
            label = w.word if len(w.word) <= MAX_LABEL_CHARS else w.word[: MAX_LABEL_CHARS - 1] + "…"
            ax.text((w.start + w.end) / 2, -0.7, label, ha="left" if crowded else "center", va="bottom", fontsize=7,
                    rotation=45 if crowded else 0, rotation_mode="anchor", clip_on=False)
    ax.set_xlim(0.0, end)
    ax.set_title(title or f"posteriorgram: {num_frames} frames x {num_tokens} tokens (blank row on top)", fontsize=9,
                 pad=(40 if crowded else 14) if words else 6)
    return fig


def channels(series: np.ndarray, sample_rate: float, title: str = "") -> Figure:
    """A (C, T) series, one line per channel (up to 12 channels drawn; NaN = gaps)."""
    shown = series[:12]
    fig = Figure(figsize=(WIDTH, 3.2), layout="constrained")
    ax = fig.add_subplot()
    t = np.arange(series.shape[1]) / sample_rate
    for c, row in enumerate(shown):
        ax.plot(t, row, lw=1.0, label=f"channel {c}")
    ax.set_xlabel("time (s)" if sample_rate != 1 else "time step")
    ax.set_title(title or f"{series.shape[0]} channel(s) x {series.shape[1]} steps", fontsize=9)
    if 1 < len(shown) <= 12:
        ax.legend(fontsize=7, ncol=min(6, len(shown)), loc="upper right")
    return fig


def contrastive_game(view: SSLView) -> Figure:
    """Top: the clip's frames with the span mask over them, and each masked frame marked by whether the
    model picked its true target. Bottom: the true target's logit against the best distractor's."""
    fig = Figure(figsize=(WIDTH, 5.4), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    num_frames = len(view.mask)
    end = num_frames * view.frame_shift
    top.imshow(view.features.T, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest",
               extent=(0.0, end, 0, view.features.shape[1]))
    starts = view.masked * view.frame_shift
    for s in starts:
        top.axvspan(s, s + view.frame_shift, color="white", alpha=0.35, lw=0)
    y = np.full(len(starts), view.features.shape[1] * 1.04)
    mid = starts + view.frame_shift / 2
    top.scatter(mid[view.correct], y[view.correct], marker="o", s=10, color="tab:green", clip_on=False)
    top.scatter(mid[~view.correct], y[~view.correct], marker="x", s=12, color="tab:red", clip_on=False)
    top.set_ylabel("feature")
    top.set_title(f"front-end frames; white = masked ({int(view.mask.sum())} of {num_frames}); "
                  f"green o = true target picked among {view.distractors} distractors, red x = missed", fontsize=9)
    true = view.logits[:, 0]
    others = view.logits[:, 1:]
    best = np.where(np.isfinite(others), others, -np.inf).max(1) if others.shape[1] else np.full_like(true, np.nan)
    bottom.vlines(mid, np.minimum(true, best), np.maximum(true, best), color="0.7", lw=0.6)
    bottom.scatter(mid, true, s=8, color="tab:green", label="true target")
    bottom.scatter(mid, best, s=8, color="tab:red", marker="x", label="best distractor")
    bottom.set_xlabel("time (s)")
    bottom.set_ylabel("cosine / kappa")
    bottom.set_xlim(0.0, end)
    bottom.legend(fontsize=7, loc="lower right")
    return fig


def codebook_usage(view: SSLView) -> Figure:
    """How often the clip's frames use each codebook entry, one row per group."""
    groups = view.codes.shape[1]
    counts = np.zeros((groups, view.entries))
    for g in range(groups):
        counts[g] = np.bincount(view.codes[:, g], minlength=view.entries)
    fig = Figure(figsize=(WIDTH, 1.2 + 0.6 * groups), layout="constrained")
    ax = fig.add_subplot()
    cmap = ListedColormap(np.vstack([[1, 1, 1, 1], colormaps["Blues"](np.linspace(0.3, 1, 255))]))
    im = ax.imshow(counts, aspect="auto", cmap=cmap, interpolation="nearest")
    ax.set_yticks(range(groups), [f"group {g + 1}" for g in range(groups)])
    ax.set_xlabel(f"codebook entry (of {view.entries})")
    used = (counts > 0).sum(1)
    ax.set_title(f"codes used by this clip's {len(view.codes)} frames: {', '.join(map(str, used))} entries per group, "
                 f"{view.distinct_codes()} distinct codevectors; perplexity {view.code_perplexity:.1f} of "
                 f"{groups * view.entries} possible", fontsize=9)
    fig.colorbar(im, ax=ax, label="frames", fraction=0.03)
    return fig


def layer_similarity(view: SSLView) -> Figure:
    """Cosine similarity of every pair of frames, per layer, and how alike the layers are frame by frame."""
    panels = len(view.similarity)
    fig = Figure(figsize=(WIDTH, 2.6), layout="constrained")
    axes = fig.subplots(1, panels + 1)
    end = len(view.mask) * view.frame_shift
    for ax, name, sim in zip(axes, view.layer_names, view.similarity):
        ax.imshow(sim, cmap="RdBu_r", vmin=-1, vmax=1, origin="lower", extent=(0, end, 0, end))
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
    ax = axes[-1]
    n = len(view.cross_layer)
    im = ax.imshow(view.cross_layer, cmap="RdBu_r", vmin=-1, vmax=1, origin="lower")
    ax.set_xticks(range(n), [str(i + 1) for i in range(n)], fontsize=6)
    ax.set_yticks(range(n), [str(i + 1) for i in range(n)], fontsize=6)
    ax.set_title("layer vs layer\n(same frame)", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.05)
    fig.suptitle("frame-by-frame cosine similarity (time x time, seconds) in each layer", fontsize=9)
    return fig
