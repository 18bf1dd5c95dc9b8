"""Learning-rate schedules as pure functions of the update count (multipliers of the peak LR)."""

from __future__ import annotations

from typing import Callable

from ..config import OptimConfig


def polynomial(step: int, *, warmup: int, total: int, end_scale: float = 0.0, power: float = 1.0) -> float:
    """Linear warm-up from 0 to 1 over ``warmup`` updates, then polynomial decay to ``end_scale`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    remaining = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / remaining, 1.0)
    return end_scale + (1.0 - end_scale) * (1.0 - progress) ** power


def tri_stage(step: int, *, total: int, warmup_frac: float = 0.1, hold_frac: float = 0.4,
              init_scale: float = 0.01, final_scale: float = 0.05) -> float:
    """fairseq's tri-stage schedule: linear warm-up from ``init_scale`` (10%), hold at 1 (40%),
    exponential decay to ``final_scale`` (50%), then stay there."""
    warmup = int(total * warmup_frac)
    hold = int(total * hold_frac)
    decay = max(total - warmup - hold, 1)
    if step < warmup:
        return init_scale + (1.0 - init_scale) * step / max(warmup, 1)
    if step < warmup + hold:
        return 1.0
    progress = min((step - warmup - hold) / decay, 1.0)
    return final_scale**progress


def constant(step: int, *, warmup: int) -> float:
    """Linear warm-up, then constant."""
    return min((step + 1) / warmup, 1.0) if warmup > 0 else 1.0


def lr_multiplier(cfg: OptimConfig) -> Callable[[int], float]:
    """The multiplier function for ``torch.optim.lr_scheduler.LambdaLR`` an OptimConfig describes."""
    if cfg.schedule == "polynomial":
        end = cfg.end_lr / cfg.lr if cfg.lr > 0 else 0.0
        return lambda s: polynomial(s, warmup=cfg.warmup_updates, total=cfg.max_updates, end_scale=end, power=cfg.power)
    if cfg.schedule == "tri_stage":
        return lambda s: tri_stage(s, total=cfg.max_updates)
    return lambda s: constant(s, warmup=cfg.warmup_updates)
