"""Is my pretraining run healthy? Ranges a healthy wav2vec 2.0 run stays in, and a monitor that warns
(once per condition) when a run leaves them.

The monitor reads the records the trainer already writes to ``RUN/train_log.jsonl`` (one per
``train.log_every`` updates, averaged over that window; see :mod:`wavssl.train.trainer`), so it adds no
work to a training step and no host synchronisation. The pretraining tasks feed it after each log
interval (:meth:`RunHealth.after_update`); ``python -m wavssl.train.health RUN`` checks a finished (or
running) run's log the same way.

Conditions, each judged on ``patience`` logged windows in a row (windows before ``warmup_updates``
are not judged, except masking and non-finite steps):

- **collapse**: a codebook group's code perplexity (``code_perplexity_<g>``: exp of the entropy of the
  hard code histogram of the batch) below ``max(collapse_floor, collapse_fraction * V)`` — the
  quantizer uses a handful of its V entries, the targets carry almost nothing;
- **chance**: contrastive accuracy below ``chance_factor / (1 + K)`` (K distractors per masked frame)
  — the model cannot tell the true target from distractors;
- **gradient**: gradient norm above ``grad_ratio`` x the median of the previous ``grad_history``
  windows;
- **nonfinite**: non-finite steps (skipped by the trainer) in every one of the windows;
- **plateau**: the mean loss of the latest ``plateau_fraction * max_updates`` updates is not at least
  ``plateau_tolerance`` (relative) below the mean of the same span before it;
- **masking**: the fraction of frames masked outside ``masked_range`` (inputs too short for the mask
  spans, or a masking config that leaves almost nothing or almost everything to predict).

The thresholds were checked against real healthy runs (``recipes/README.md``, "Is my run healthy?",
and ``tests/test_health.py``): none fires on them.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["HealthMonitor", "HealthRules", "RunHealth", "check_log", "main"]

GUIDE = "recipes/README.md, 'Is my run healthy?'"
"""Where the warnings point for what to do."""

ADVICE = {
    "collapse": "raise model.loss.diversity_weight, lower optim.lr, or check the input is not silence or one "
                "repeated sound",
    "chance": "lower optim.lr, lengthen optim.warmup_updates, or check the data and model.masking",
    "gradient": "lower optim.lr or optim.clip_norm, or lengthen optim.warmup_updates",
    "nonfinite": "lower optim.lr, check the data for NaN/inf, or train in fp32 (train.precision)",
    "plateau": "if it is early, lower optim.lr; if collapse or chance warned too, fix that first; late in a "
               "long run, more updates will not help",
    "masking": "check model.masking (mask_prob, mask_length) against the input lengths in frames",
}
"""What to try, per condition (one line; the recipe README says more)."""


@dataclass(frozen=True)
class HealthRules:
    """The ranges a healthy pretraining run stays in (see the module docstring for each condition)."""

    warmup_updates: int = 0
    """Windows that end at or before this update are not judged (the LR warm-up: codes and accuracy
    are still settling)."""
    patience: int = 3
    """Logged windows in a row a condition must hold before it is reported."""
    collapse_fraction: float = 0.04
    """Per-group code perplexity below this fraction of the V entries (or ``collapse_floor``,
    whichever is higher) is a collapsed codebook. Healthy: ``tiny`` 7-11 of 64 (0.11-0.17 V)."""
    collapse_floor: float = 2.0
    """Lowest collapse threshold, for small codebooks (a perplexity of 2 = two codes in use)."""
    chance_factor: float = 1.5
    """Contrastive accuracy below ``chance_factor / (1 + K)`` is at chance."""
    grad_ratio: float = 10.0
    """A gradient norm above this multiple of its running median is a spike."""
    grad_history: int = 20
    """Windows in the running median of the gradient norm (at least 5 before it is judged)."""
    plateau_fraction: float = 0.2
    """Span of the loss comparison, as a fraction of the run's ``max_updates`` (at least 5 windows)."""
    plateau_tolerance: float = 0.01
    """Relative decrease of the mean loss over that span below which the loss has stalled."""
    masked_range: tuple[float, float] = (0.05, 0.9)
    """Healthy fraction of frames masked (wav2vec 2.0 BASE masks about 0.49, ``tiny`` about 0.38)."""


@dataclass
class _Objective:
    """Facts of the run the rules need."""

    entries: int
    """V, entries per codebook group."""
    negatives: int
    """K, distractors per masked frame (in-utterance + cross-sample)."""
    max_updates: int
    log_every: int


@dataclass
class HealthMonitor:
    """Judges a stream of logged records; reports each condition once (a one-line notice).

    ``observe(record)`` takes one record of ``train_log.jsonl`` (keys ``update``, ``loss``,
    ``accuracy``, ``code_perplexity_<g>``, ``grad_norm``, ``masked_fraction``, ``nonfinite_total``;
    missing keys skip their rules; records without ``loss``, e.g. validation ones, are ignored) and
    returns the warnings it raised. ``fired`` maps each reported condition to its message.
    """

    rules: HealthRules
    objective: _Objective
    report: Callable[[str], None] | None = None
    fired: dict[str, str] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    _streak: dict[str, int] = field(default_factory=dict)

    @classmethod
    def for_config(cls, cfg: Any, rules: HealthRules | None = None,
                   report: Callable[[str], None] | None = None) -> HealthMonitor:
        """A monitor for a pretraining :class:`~wavssl.config.Config` (codebook size, distractors, warm-up)."""
        m = cfg.model
        rules = rules or HealthRules(warmup_updates=cfg.optim.warmup_updates)
        return cls(rules, _Objective(entries=m.quantizer.entries,
                                     negatives=m.masking.num_negatives + m.masking.cross_sample_negatives,
                                     max_updates=cfg.optim.max_updates, log_every=max(cfg.train.log_every, 1)),
                   report)

    # ------------------------------------------------------------------------------- thresholds

    @property
    def collapse_threshold(self) -> float:
        r = self.rules
        return max(r.collapse_floor, r.collapse_fraction * self.objective.entries)

    @property
    def chance_accuracy(self) -> float:
        return 1.0 / (1 + self.objective.negatives)

    @property
    def plateau_windows(self) -> int:
        """Logged windows in each half of the loss comparison."""
        o = self.objective
        return max(5, round(self.rules.plateau_fraction * o.max_updates / o.log_every))

    # ----------------------------------------------------------------------------------- rules

    def observe(self, record: dict[str, float]) -> list[str]:
        """Judge one logged record; returns the warnings raised by it (each condition only once)."""
        if "loss" not in record:
            return []
        update = int(record.get("update", len(self.history) + 1))
        warm = update > self.rules.warmup_updates
        out: list[str] = []
        for name, what in self._conditions(record, update, warm):
            hold = what is not None
            self._streak[name] = self._streak.get(name, 0) + 1 if hold else 0
            if hold and self._streak[name] >= self.rules.patience and name not in self.fired:
                line = (f"health: {what} for {self.rules.patience} logged windows in a row (update {update}); "
                        f"{ADVICE[name]} (see {GUIDE})")
                self.fired[name] = line
                out.append(line)
                if self.report is not None:
                    self.report(line)
        self.history.append(record)
        return out

    def _conditions(self, r: dict[str, float], update: int, warm: bool) -> list[tuple[str, str | None]]:
        """(condition, what is wrong when it holds in this record else None) for every condition."""
        rules, conditions = self.rules, []
        groups = sorted((k for k in r if k.startswith("code_perplexity_") and k[16:].isdigit()),
                        key=lambda k: int(k[16:]))
        low = [(k[16:], r[k]) for k in groups if warm and math.isfinite(r[k]) and r[k] < self.collapse_threshold]
        conditions.append(("collapse", None if not low else (
            "codebook collapse: code perplexity " + ", ".join(f"{p:.1f} in group {g}" for g, p in low)
            + f" of {self.objective.entries} entries (below {self.collapse_threshold:.1f})")))
        acc = r.get("accuracy")
        at_chance = warm and acc is not None and acc < rules.chance_factor * self.chance_accuracy
        conditions.append(("chance", None if not at_chance else (
            f"contrastive accuracy {acc:.3f} stuck at chance (1/(1+{self.objective.negatives}) = "
            f"{self.chance_accuracy:.3f})")))
        conditions.append(("gradient", self._gradient(r, warm)))
        conditions.append(("nonfinite", self._nonfinite(r)))
        conditions.append(("plateau", self._plateau(r, warm)))
        frac = r.get("masked_fraction")
        lo, hi = rules.masked_range
        off = frac is not None and not lo <= frac <= hi
        conditions.append(("masking", None if not off else (
            f"masked fraction {frac:.3f} outside {lo:.2f}-{hi:.2f}")))
        return conditions

    def _gradient(self, r: dict[str, float], warm: bool) -> str | None:
        norm = r.get("grad_norm")
        past = [h["grad_norm"] for h in self.history[-self.rules.grad_history:]
                if "grad_norm" in h and math.isfinite(h["grad_norm"])]
        if not warm or norm is None or len(past) < 5:
            return None
        median = statistics.median(past)
        if math.isfinite(norm) and norm <= self.rules.grad_ratio * median:
            return None
        return f"gradient norm {norm:.3g} over {self.rules.grad_ratio:g} x its running median {median:.3g}"

    def _nonfinite(self, r: dict[str, float]) -> str | None:
        total = r.get("nonfinite_total")
        before = self.history[-1].get("nonfinite_total", 0.0) if self.history else 0.0
        loss_bad = not math.isfinite(r["loss"])
        if not loss_bad and (total is None or total <= before):
            return None
        return f"non-finite loss or gradients (steps skipped: {total:.0f} so far)"

    def _plateau(self, r: dict[str, float], warm: bool) -> str | None:
        n = self.plateau_windows
        losses = [h["loss"] for h in self.history if h.get("update", 0) > self.rules.warmup_updates] + [r["loss"]]
        if not warm or len(losses) < 2 * n:
            return None
        recent, before = statistics.fmean(losses[-n:]), statistics.fmean(losses[-2 * n:-n])
        if recent < (1 - self.rules.plateau_tolerance) * before:
            return None
        span = n * self.objective.log_every
        return (f"loss not decreasing: mean {recent:.3f} over the last {span} updates against {before:.3f} over "
                f"the {span} before")


# ---------------------------------------------------------------------------------- run dirs


def read_records(path: str | Path, offset: int = 0) -> tuple[list[dict[str, float]], int]:
    """Complete JSON lines of a training log from byte ``offset`` on, and the offset after the last
    complete line (a line still being written is left for the next call)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    records = []
    for line in data[:end].splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # a torn line from a killed writer: not a metric record
    return records, offset + end


def notice(run_dir: Path) -> Callable[[str], None]:
    """Report a line the way the trainer reports notices: ``[wavssl] ...`` on stdout and in ``RUN/events.log``."""
    def report(message: str) -> None:
        print(f"[wavssl] {message}", flush=True)
        with open(run_dir / "events.log", "a") as f:
            f.write(message + "\n")
    return report


class RunHealth:
    """A :class:`HealthMonitor` following a run directory's ``train_log.jsonl`` (what the pretraining
    tasks hold; a no-op when ``run_dir`` is None, e.g. on ranks other than 0). Records already in the
    log (a resumed run) are replayed silently, so only new conditions are reported."""

    def __init__(self, cfg: Any, run_dir: str | Path | None, rules: HealthRules | None = None) -> None:
        from .trainer import LOG_FILE

        self.log_every = max(cfg.train.log_every, 1)
        self.path = Path(run_dir) / LOG_FILE if run_dir is not None else None
        self.monitor = HealthMonitor.for_config(cfg, rules)
        self._offset = 0
        if self.path is not None:
            self.follow()
            self.monitor.report = notice(self.path.parent)

    def follow(self) -> list[str]:
        """Judge the records logged since the last call; returns the warnings raised."""
        if self.path is None:
            return []
        records, self._offset = read_records(self.path, self._offset)
        return [w for r in records for w in self.monitor.observe(r)]

    def after_update(self, num_updates: int) -> None:
        """Called by a task before each update: reads the log when a window has just been logged."""
        if self.path is not None and num_updates > 0 and num_updates % self.log_every == 0:
            self.follow()


def check_log(path: str | Path, cfg: Any, rules: HealthRules | None = None) -> HealthMonitor:
    """Judge every record of a training log (``train_log.jsonl``) for a run configured by ``cfg``."""
    monitor = HealthMonitor.for_config(cfg, rules)
    for record in read_records(path)[0]:
        monitor.observe(record)
    return monitor


def main(argv: list[str] | None = None) -> int:
    """``python -m wavssl.train.health RUN``: the warnings a run's log raises (exit 1 when any)."""
    p = argparse.ArgumentParser(prog="python -m wavssl.train.health", description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="pretraining run directory (config.json + train_log.jsonl)")
    a = p.parse_args(argv)
    from ..config import load_json
    from .trainer import LOG_FILE

    for name in ("config.json", LOG_FILE):
        if not (a.run / name).is_file():
            print(f"{a.run / name}: not found (not a pretraining run directory?)", file=sys.stderr)
            return 2
    monitor = check_log(a.run / LOG_FILE, load_json(a.run / "config.json"))
    for line in monitor.fired.values():
        print(line)
    if not monitor.fired:
        print(f"{a.run}: healthy over {len(monitor.history)} logged windows (no condition held)")
    return 1 if monitor.fired else 0


if __name__ == "__main__":
    raise SystemExit(main())
