"""Plot a pretraining run's curves with the ranges a healthy run stays in (wavssl.train.health).

Reads ``RUN/train_log.jsonl`` and ``RUN/config.json`` and writes a PNG of six panels: loss,
contrastive accuracy, code perplexity per codebook group, gradient norm, masked fraction and Gumbel
temperature. Shaded bands are the healthy ranges of :class:`wavssl.train.health.HealthRules` for
this run's configuration (red: where a warning condition lies); the dotted line is the end of the
LR warm-up, before which the codebook and accuracy rules are not judged.

    python recipes/health_plot.py RUN [--out RUN/health.png] [--title TEXT]

The figure in ``docs/healthy_run.png`` is this script on ``wavssl quickstart``'s pretraining run.
Needs matplotlib (``pip install -e '.[demo]'``).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wavssl.config import load_json
from wavssl.train.health import HealthMonitor, read_records
from wavssl.train.trainer import LOG_FILE


def plot(run: Path, out: Path, title: str | None = None) -> Path:
    """Write the health figure of run directory ``run`` to ``out`` (PNG); returns ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name in ("config.json", LOG_FILE):
        if not (run / name).is_file():
            raise FileNotFoundError(f"{run / name}: not found (not a pretraining run directory?)")
    cfg = load_json(run / "config.json")
    monitor = HealthMonitor.for_config(cfg)
    records = [r for r in read_records(run / LOG_FILE)[0] if "loss" in r]
    if not records:
        raise ValueError(f"{run / LOG_FILE}: no training records")
    for r in records:
        monitor.observe(r)
    rules = monitor.rules
    x = [r["update"] for r in records]
    warm = rules.warmup_updates
    fig, axes = plt.subplots(3, 2, figsize=(11, 9), sharex=True)
    bad = {"color": "tab:red", "alpha": 0.12, "lw": 0}
    good = {"color": "tab:green", "alpha": 0.10, "lw": 0}

    def panel(ax, key: str, label: str) -> list[float]:
        ys = [r.get(key, float("nan")) for r in records]
        ax.plot(x, ys, lw=1.4, label=label)
        ax.set_title(label, fontsize=10)
        ax.axvline(warm, color="grey", ls=":", lw=1)
        return ys

    ax = axes[0, 0]
    panel(ax, "loss", "loss (contrastive + diversity + feature penalty)")
    panel(ax, "contrastive", "contrastive (InfoNCE)")
    span = monitor.plateau_windows * monitor.objective.log_every
    ax.set_title(f"loss; plateau: mean of the last {span} updates not {100 * rules.plateau_tolerance:g} % "
                 f"below the {span} before", fontsize=9)
    ax.legend(fontsize=8)

    ax = axes[0, 1]
    panel(ax, "accuracy", "contrastive accuracy")
    line = rules.chance_factor * monitor.chance_accuracy
    ax.axhspan(0, line, **bad)
    ax.axhspan(line, 1, **good)
    ax.set_ylim(0, 1)
    ax.set_title(f"contrastive accuracy; at chance below {line:.3f} "
                 f"({rules.chance_factor:g} / (1 + {monitor.objective.negatives}))", fontsize=9)

    ax = axes[1, 0]
    groups = sorted((k for k in records[-1] if k.startswith("code_perplexity_") and k[16:].isdigit()),
                    key=lambda k: int(k[16:]))
    for g in groups:
        panel(ax, g, f"group {g[16:]}")
    v, floor = monitor.objective.entries, monitor.collapse_threshold
    ax.axhspan(0, floor, **bad)
    ax.axhspan(floor, v, **good)
    ax.set_ylim(0, v * 1.02)
    ax.set_title(f"code perplexity per group (of V = {v}); collapse below {floor:.1f}", fontsize=9)
    ax.legend(fontsize=8)

    ax = axes[1, 1]
    norms = panel(ax, "grad_norm", "gradient norm")
    finite = [n for n in norms if math.isfinite(n) and n > 0]
    median = statistics.median(finite)
    ax.axhspan(median * rules.grad_ratio, max(finite) * rules.grad_ratio * 3, **bad)
    ax.axhspan(min(finite) / 3, median * rules.grad_ratio, **good)
    ax.set_yscale("log")
    ax.set_title(f"gradient norm (before clipping); spike: > {rules.grad_ratio:g} x running median "
                 f"(run median {median:.2g})", fontsize=9)

    ax = axes[2, 0]
    panel(ax, "masked_fraction", "masked fraction")
    lo, hi = rules.masked_range
    ax.axhspan(0, lo, **bad)
    ax.axhspan(hi, 1, **bad)
    ax.axhspan(lo, hi, **good)
    ax.set_ylim(0, 1)
    ax.set_title(f"fraction of frames masked; healthy {lo:g}-{hi:g}", fontsize=9)
    ax.set_xlabel("update")

    ax = axes[2, 1]
    panel(ax, "temperature", "Gumbel temperature")
    ax.set_title("Gumbel temperature (annealed by schedule)", fontsize=9)
    ax.set_xlabel("update")

    verdict = "no health warning" if not monitor.fired else "warnings: " + ", ".join(monitor.fired)
    fig.suptitle(title or f"{run.name}: {len(records)} logged windows, {verdict}", fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="pretraining run directory")
    p.add_argument("--out", type=Path, help="PNG to write (default: RUN/health.png)")
    p.add_argument("--title", help="figure title")
    a = p.parse_args(argv)
    print(plot(a.run, a.out or a.run / "health.png", a.title))


if __name__ == "__main__":
    main()
