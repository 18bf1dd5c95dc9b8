"""GPU pretraining speed and memory: wavssl ``SSLModel`` against transformers' ``Wav2Vec2ForPreTraining``.

Both models are built from the same wavssl preset (BASE by default; transformers' ``Wav2Vec2Config``
translated from it, identical parameter counts) and trained one after the other in this process,
on the same device, the same synthetic batches (equal-length rows, no audio files), with bf16
autocast and wavssl's own training loop (``wavssl.train.trainer.Trainer``: fused AdamW, the preset's
LR schedule, gradient-norm computation, non-finite skip). ``--compile`` and
``--activation-checkpointing`` are applied to wavssl by the trainer (``apply_speedups``) and to
transformers by the same regional ``layer.compile(dynamic=True)`` of its Transformer layers and its
own activation checkpointing (``activation_checkpointing_enable``, ``gradient_checkpointing_enable``
before transformers 5).

Host-side work a data loader does is left out of the timings: generating the audio; for
transformers, ``_compute_mask_indices`` / ``_sample_negative_indices`` as its pretraining example
computes them per batch; for wavssl, where it has ``wavssl.models.MaskSampler``, the span masks and
distractors its ``PretrainTask`` draws in the loader (``--wavssl-masks``; without it the model draws
them inside ``forward``, timed). Copying a batch to the device is inside the step (the trainer's
tasks do it).

One timed update is everything the trainer does between two updates. The device is synchronised
before the first and after the last timed update, not between them (the trainer does not either):
the mean update time is that wall time over the number of updates; the median comes from CUDA events
at the update boundaries (host times on a CPU). The peak memory is ``torch.cuda.max_memory_allocated``
over the timed updates (model, gradients, optimizer state and activations; only one model is resident
at a time).

    python benchmarks/gpu_pretrain.py --device cuda --preset base --compile
    python benchmarks/gpu_pretrain.py --device cpu --preset tiny --steps 2 --warmup 1 --batch-seconds 2 --utterance-seconds 1

Appends one JSON line to ``benchmarks/results/gpu_pretrain.jsonl`` (``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import math
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._env import cpu_flags, cpu_name, git_commit, load_average  # noqa: E402
from benchmarks._wav2vec2 import SAMPLE_RATE, gumbel_temperature, hf_config, hf_masks, model_config, synthetic_batch  # noqa: E402

from wavssl.config import Config, preset  # noqa: E402
from wavssl.models import build_model  # noqa: E402
from wavssl.train.trainer import StepOutput, Trainer  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "gpu_pretrain.jsonl"
IMPLS = ("wavssl", "transformers")
TARGET_RATIO = 2.0
TARGET_AUDIO_S_PER_S = 1500.0

UNMATCHED = [
    "feature penalty: wavssl adds feature_penalty_weight x mean squared front-end output to its loss; "
    "transformers' Wav2Vec2ForPreTraining has no such term",
    "feature_grad_mult: wavssl scales the gradient into the conv front end (0.1 in BASE); transformers has "
    "no such scale (full gradient)",
    "span masks: wavssl's sampler (fairseq semantics, require_same_masks: every row keeps the same "
    "number of masked frames); transformers' _compute_mask_indices (same p, M and min_masks; counts may "
    "differ per row)",
    "where masks and distractors are drawn: transformers' on the host, outside the timings (their copy "
    "to the device is timed); wavssl's on the host too with --wavssl-masks host (wavssl.models.MaskSampler, "
    "as its PretrainTask does), or inside forward on the device, timed, with --wavssl-masks device",
    "quantizer input: wavssl quantizes only the masked frames, transformers every frame (each "
    "implementation's own design, not a setting)",
    "Gumbel temperature: the same schedule (2 -> 0.5, x0.999995 per update), wavssl through "
    "set_num_updates, transformers through set_gumbel_temperature",
    "attention: wavssl's SDPA always gets a boolean padding mask from the lengths; transformers is "
    "called without attention_mask (as its docs say for group-norm models) with its default "
    "attention implementation",
]


# ------------------------------------------------------------------------------------------ batches


@dataclass
class HostBatch:
    """What a data loader hands the trainer: host tensors (pinned for CUDA)."""

    wav: Tensor
    """(B, T) float waveforms, equal lengths."""
    lengths: Tensor
    """(B,) samples."""
    mask: Tensor | None = None
    """(B, F) bool span mask (transformers only)."""
    negatives: Tensor | None = None
    """(B, F, K) long distractor indices (transformers only)."""
    masks: Any = None
    """wavssl's span mask and distractors drawn on the host (``--wavssl-masks host``), else None."""

    @property
    def seconds(self) -> float:
        return float(self.lengths.sum()) / SAMPLE_RATE


def batch_shapes(batch_seconds: float, utterance_seconds: list[float]) -> list[tuple[int, int]]:
    """(rows, samples) of each batch shape: as many utterances of each length as fit in the budget
    (fairseq's ``max_tokens``: rows x length <= budget); a length above the budget is cut to it."""
    budget = int(round(batch_seconds * SAMPLE_RATE))
    shapes = []
    for s in utterance_seconds:
        n = min(int(round(s * SAMPLE_RATE)), budget)
        shapes.append((max(1, budget // n), n))
    return shapes


def wavssl_mask_sampler(cfg: Config) -> Callable[[Tensor, int, int], Any]:
    """wavssl's host-side mask sampler (``wavssl.models.MaskSampler``: the data pipeline draws each
    batch's span mask and distractors, the model gets them as ``masks=``), where this wavssl has one."""
    import wavssl.models

    sampler = getattr(wavssl.models, "MaskSampler", None)
    if sampler is None:
        raise RuntimeError("--wavssl-masks host: this wavssl has no wavssl.models.MaskSampler")
    return sampler(cfg.model)


def host_batches(impl: str, model: nn.Module, waves: list[Tensor], count: int, *, pin: bool,
                 mask_sampler: Callable[[Tensor, int, int], Any] | None = None, seed: int = 0) -> list[HostBatch]:
    """``count`` batches cycling over the shapes of ``waves``; for transformers each with fresh masks
    and distractors, as its pretraining example draws them per batch; for wavssl with host-side masks
    from ``mask_sampler`` when given."""
    out = []
    for i in range(count):
        wav = waves[i % len(waves)]
        b = HostBatch(wav, torch.full((wav.shape[0],), wav.shape[1], dtype=torch.long))
        if impl == "transformers":
            mask, negatives = hf_masks(model, wav.shape[0], wav.shape[1])
            b.mask = torch.from_numpy(mask)
            b.negatives = torch.from_numpy(negatives).long()
        elif mask_sampler is not None:
            b.masks = mask_sampler(b.lengths, wav.shape[1], seed + i)
        if pin:
            b = HostBatch(*(t.pin_memory() if t is not None else None
                            for t in (b.wav, b.lengths, b.mask, b.negatives, b.masks)))
        out.append(b)
    return out


# ------------------------------------------------------------------------------------------ the task


class BenchTask:
    """The trainer's ``Task`` over prepared batches; marks the time of every update boundary.

    ``on_update`` (called by the trainer before each update) records the time, so update k took
    ``marks[k + 1] - marks[k]``. The timed updates ``start`` .. ``start + steps - 1`` are not
    interrupted: the device is synchronised only at their two ends (and around every warm-up update),
    so a step that never waits for the device keeps overlapping the host's work with the device's, as
    in training. On CUDA each boundary also records an event, whose intervals give the per-update
    times inside that region. At update ``start`` the peak-memory counters are reset.
    """

    def __init__(self, impl: str, batches: list[HostBatch], device: torch.device, start: int, steps: int) -> None:
        self.impl, self._batches, self.device = impl, batches, device
        self.start, self.steps = start, steps
        self.marks: list[float] = []
        self.events: list[Any] = []
        self.losses: list[Tensor] = []
        self.memory_base = 0

    def batches_per_epoch(self) -> int:
        return len(self._batches)

    def batches(self, epoch: int, start: int) -> Iterator[HostBatch]:
        yield from self._batches[start:]

    def on_update(self, model: nn.Module, num_updates: int) -> None:
        if not self.start < num_updates < self.start + self.steps:
            synchronize(self.device)
        if num_updates == self.start:
            self.memory_base = reset_peak_memory(self.device)
        self.marks.append(time.perf_counter())
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.events.append(event)
        if self.impl == "wavssl":
            model.set_num_updates(num_updates)  # type: ignore[operator]
        else:
            model.set_gumbel_temperature(gumbel_temperature(num_updates))  # type: ignore[operator]

    def update_seconds(self) -> list[float]:
        """Seconds of every update whose end was marked (call after the device finished): host time
        between the marks, except CUDA event time inside the unsynchronised timed region."""
        times = [b - a for a, b in zip(self.marks, self.marks[1:])]
        if self.events:
            for k in range(self.start, min(self.start + self.steps, len(self.events) - 1)):
                times[k] = self.events[k].elapsed_time(self.events[k + 1]) / 1000.0
        return times

    def timed_wall_seconds(self) -> float:
        """Host time from the start to the end of the timed updates (the device synchronised at both)."""
        return self.marks[self.start + self.steps] - self.marks[self.start]

    def step(self, model: nn.Module, batch: HostBatch, device: torch.device) -> StepOutput:
        wav = batch.wav.to(device, non_blocking=True)
        if self.impl == "wavssl":  # as wavssl.train.pretraining.PretrainTask.step
            lengths = batch.lengths.to(device, non_blocking=True)
            if batch.masks is None:
                out = model(wav, lengths)
            else:
                out = model(wav, lengths, masks=batch.masks.to(device, non_blocking=True))
            metrics = {k: getattr(out, k) for k in ("contrastive", "diversity", "feature_penalty", "accuracy",
                                                    "prob_perplexity", "code_perplexity")}
            loss, weight = out.loss, out.num_masked
        else:  # as transformers' pretraining example: summed loss / masked frames
            assert batch.mask is not None and batch.negatives is not None
            mask = batch.mask.to(device, non_blocking=True)
            negatives = batch.negatives.to(device, non_blocking=True)
            out = model(wav, mask_time_indices=mask, sampled_negative_indices=negatives)
            weight = mask.sum()
            loss = out.loss / weight
            metrics = {"contrastive": out.contrastive_loss.detach() / weight, "diversity": out.diversity_loss.detach() / weight,
                       "code_perplexity": out.codevector_perplexity.detach()}
        self.losses.append(loss.detach())
        return StepOutput(loss=loss, metrics=metrics, weight=weight, seconds=batch.seconds)


# ------------------------------------------------------------------------------------------ device


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status_kib(key: str) -> int | None:
    try:
        m = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def reset_peak_memory(device: torch.device) -> int:
    """Reset the peak counter; returns the memory in use now (bytes). CUDA: allocated memory. CPU: the
    process's resident set (its peak reset through /proc/self/clear_refs; -1 where that fails)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return -1
    rss = _proc_status_kib("VmRSS")
    return -1 if rss is None else rss * 1024


def peak_memory(device: torch.device) -> int | None:
    """Peak since the last reset (bytes): CUDA ``max_memory_allocated``; CPU peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    hwm = _proc_status_kib("VmHWM")
    return None if hwm is None else hwm * 1024


def resident_bytes(device: torch.device) -> int | None:
    """Memory in use now: CUDA allocated; CPU resident set."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    rss = _proc_status_kib("VmRSS")
    return None if rss is None else rss * 1024


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)) or "out of memory" in str(exc).lower()


# ------------------------------------------------------------------------------------------ one run


def build(impl: str, cfg: Config, seed: int) -> nn.Module:
    """The model of ``impl`` for ``cfg.model`` (same seed for both); transformers' gets the speed-ups
    that ``apply_speedups`` gives wavssl's (the trainer applies those to wavssl's itself)."""
    torch.manual_seed(seed)
    if impl == "wavssl":
        return build_model(cfg.model)
    from transformers import Wav2Vec2ForPreTraining

    model = Wav2Vec2ForPreTraining(hf_config(cfg.model))
    if cfg.train.activation_checkpointing:  # activation_checkpointing_enable from transformers 5.x on
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.train.compile:
        for layer in model.wav2vec2.encoder.layers:
            layer.compile(dynamic=True)
    return model


def run_impl(impl: str, cfg: Config, waves: list[Tensor], args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Build, warm up and time one implementation through wavssl's trainer; the result's ``status`` is
    ``ok``, ``oom`` or ``error``."""
    free_memory(device)
    before = resident_bytes(device)
    task = trainer = model = sampler = None
    try:
        model = build(impl, cfg, args.seed)
        params = sum(p.numel() for p in model.parameters())
        updates = args.warmup + args.steps + 1  # the last update only closes the last timed interval
        t0 = time.perf_counter()
        sampler = wavssl_mask_sampler(cfg) if impl == "wavssl" and args.wavssl_masks == "host" else None
        batches = host_batches(impl, model, waves, updates, pin=device.type == "cuda", mask_sampler=sampler,
                               seed=args.seed)
        prep_s = time.perf_counter() - t0
        task = BenchTask(impl, batches, device, start=args.warmup, steps=args.steps)
        with tempfile.TemporaryDirectory(prefix=f"gpu_pretrain_{impl}_") as run_dir:
            trainer = Trainer(model, task, cfg, run_dir, device=device, progress=False)
            trainer.checkpoint = lambda: None  # type: ignore[method-assign]  # nothing to keep
            state = trainer.train()
        synchronize(device)
        peak = peak_memory(device)
        reserved = torch.cuda.max_memory_reserved(device) if device.type == "cuda" else None
        times = task.update_seconds()
        warm, timed = times[: args.warmup], times[args.warmup: args.warmup + args.steps]
        wall = task.timed_wall_seconds()
        seconds = [batches[i].seconds for i in range(args.warmup, args.warmup + args.steps)]
        # one batch shape: audio per update / median update time; several: total audio / total time
        speed = seconds[0] / statistics.median(timed) if len(set(seconds)) == 1 else sum(seconds) / wall
        losses = [float(x) for x in torch.stack(task.losses).float().cpu()]
        cpu_base = device.type == "cpu" and before is not None
        return {
            "status": "ok",
            "params": params,
            "attention": "sdpa" if impl == "wavssl" else getattr(model.config, "_attn_implementation", None),
            "masks": ("host" if sampler is not None else "device") if impl == "wavssl" else "host",
            "host_prep_s": round(prep_s, 3),
            "warmup_s": [round(t, 4) for t in warm],
            "step_times_s": [round(t, 5) for t in timed],
            "median_step_s": round(statistics.median(timed), 5),
            "mean_step_s": round(wall / args.steps, 5),
            "timed_wall_s": round(wall, 4),
            "audio_s_per_s": round(speed, 2),
            "audio_s_per_s_mean": round(sum(seconds) / wall, 2),
            "peak_memory_bytes": None if peak is None else (peak - before if cpu_base else peak),
            "peak_memory_reserved_bytes": reserved,
            "memory_at_reset_bytes": task.memory_base,
            "losses": [round(x, 4) if math.isfinite(x) else str(x) for x in losses],
            "losses_finite": all(math.isfinite(x) for x in losses),
            "nonfinite_skipped": state.nonfinite_total,
        }
    except Exception as exc:  # noqa: BLE001 -- one implementation failing must not lose the other's result
        status = "oom" if is_oom(exc) else "error"
        print(f"{impl}: {status}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", file=sys.stderr)
        if status == "error":
            traceback.print_exc()
        return {"status": status, "error": f"{type(exc).__name__}: {exc}"[:2000]}
    finally:
        del task, trainer, model
        if cfg.train.compile:
            torch._dynamo.reset()
        free_memory(device)


# ------------------------------------------------------------------------------------------ report


def fmt_bytes(n: int | None) -> str:
    return "n/a" if n is None or n < 0 else f"{n / 2**30:.2f} GiB"


def targets(results: dict[str, dict], device_name: str, device: torch.device, preset_name: str) -> dict[str, dict]:
    """The issue's targets with this run's values; ``pass`` is None where a target does not apply (the
    targets are for GPUs; the absolute one for BASE on an H100) or a value is missing."""
    ours, peer = results.get("wavssl", {}), results.get("transformers", {})
    both = ours.get("status") == "ok" and peer.get("status") == "ok"
    gpu = device.type == "cuda"
    h100_base = gpu and "H100" in device_name and preset_name == "base"
    out: dict[str, dict] = {}
    ratio = ours["audio_s_per_s"] / peer["audio_s_per_s"] if both else None
    out["speed_ratio"] = {"target": f"wavssl >= {TARGET_RATIO:g}x transformers' audio-s/s",
                          "value": None if ratio is None else round(ratio, 3),
                          "pass": None if ratio is None or not gpu else ratio >= TARGET_RATIO, "applies": gpu}
    speed = ours.get("audio_s_per_s") if ours.get("status") == "ok" else None
    out["audio_s_per_s"] = {"target": f"wavssl >= {TARGET_AUDIO_S_PER_S:g} audio-s/s on one H100", "value": speed,
                            "pass": (speed >= TARGET_AUDIO_S_PER_S) if (h100_base and speed is not None) else None,
                            "applies": h100_base}
    mem_ok = both and (ours.get("peak_memory_bytes") or -1) > 0 and (peer.get("peak_memory_bytes") or -1) > 0
    mem = ours["peak_memory_bytes"] / peer["peak_memory_bytes"] if mem_ok else None
    if not mem_ok and ours.get("status") == "ok" and peer.get("status") == "oom":
        mem = 0.0  # the peer did not fit at all
    out["peak_memory"] = {"target": "wavssl peak memory <= transformers'", "value": None if mem is None else round(mem, 3),
                          "pass": None if mem is None or not gpu else mem <= 1.0, "applies": gpu}
    return out


def print_table(record: dict) -> None:
    r, res = record, record["results"]
    shapes = ", ".join(f"{b} x {s / SAMPLE_RATE:g} s" for b, s in r["batch_shapes"])
    print(f"\ngpu_pretrain: preset {r['preset']} on {r['device_name']} ({r['device']}); {r['precision']}; "
          f"compile {'on' if r['compile'] else 'off'}; activation checkpointing "
          f"{'on' if r['activation_checkpointing'] else 'off'}")
    print(f"wavssl's span masks and distractors drawn on the {r['wavssl_masks']}; transformers' on the host "
          "(outside the timings)")
    print(f"batch {shapes} (mean {r['audio_seconds_per_step']:.1f} s of audio per update); "
          f"{r['steps']} timed updates after {r['warmup']} warm-up; torch {r['torch']}, transformers {r['transformers']}")
    mem = "peak mem" if r["device"] == "cuda" else "peak RSS+"
    head = f"{'impl':<14}{'params':>13}{'median s/upd':>14}{'mean s/upd':>12}{'audio-s/s':>11}{mem:>12}  loss first -> last"
    print("\n" + head)
    for impl in IMPLS:
        x = res.get(impl)
        if x is None:
            continue
        if x["status"] != "ok":
            print(f"{impl:<14}{x['status'].upper():>13}  {x.get('error', '')[:80]}")
            continue
        losses = x["losses"][r["warmup"]:] or x["losses"]
        print(f"{impl:<14}{x['params']:>13,}{x['median_step_s']:>14.4f}{x['mean_step_s']:>12.4f}"
              f"{x['audio_s_per_s']:>11.1f}{fmt_bytes(x['peak_memory_bytes']):>12}  {losses[0]} -> {losses[-1]}")
    t = r["targets"]
    if t["speed_ratio"]["value"] is not None:
        mem = t["peak_memory"]["value"]
        print(f"ratio wavssl / transformers: {t['speed_ratio']['value']:.2f}x audio-s/s, "
              + ("n/a" if mem is None else f"{mem:.2f}x") + " peak memory")

    def verdict(v: dict) -> str:
        return "n/a" if v["pass"] is None else ("PASS" if v["pass"] else "FAIL")

    print(f"\n{'target':<46}{'value':>10}  verdict")
    for key, v in t.items():
        value = "n/a" if v["value"] is None else (f"{v['value']:.2f}x" if key != "audio_s_per_s" else f"{v['value']:.1f}")
        note = "" if v["applies"] else ("  (GPU target)" if key != "audio_s_per_s" else "  (--preset base on an H100)")
        print(f"{v['target']:<46}{value:>10}  {verdict(v)}{note}")
    for impl, x in res.items():
        if x.get("status") == "ok" and not x["losses_finite"]:
            print(f"warning: {impl}'s loss was not finite at some update ({x['nonfinite_skipped']} updates skipped)")


# ------------------------------------------------------------------------------------------ main


def parse_seconds(text: str) -> list[float]:
    values = [float(v) for v in text.split(",") if v.strip()]
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive seconds, comma-separated: {text!r}")
    return values


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="cuda (default when available) or cpu")
    ap.add_argument("--preset", choices=["base", "large", "small", "tiny"], default="base",
                    help="wavssl preset whose architecture both models get (tiny: a waveform conv stack of its width)")
    ap.add_argument("--batch-seconds", type=float, default=87.5,
                    help="audio budget per update and device (fairseq BASE: max_tokens 1.4M samples = 87.5 s)")
    ap.add_argument("--utterance-seconds", type=parse_seconds, default=[15.625],
                    help="utterance length, or comma-separated lengths: one batch shape each, cycled update by "
                         "update (default 15.625 = fairseq's 250k-sample crop, i.e. 5 utterances per update)")
    ap.add_argument("--steps", type=int, default=20, help="timed updates per implementation")
    ap.add_argument("--warmup", type=int, default=5, help="untimed updates first (covers compilation)")
    ap.add_argument("--compile", action="store_true", help="regional torch.compile of the Transformer layers (both)")
    ap.add_argument("--activation-checkpointing", action="store_true", help="recompute layer activations (both)")
    ap.add_argument("--precision", choices=["bf16", "fp32"], default="bf16", help="bf16 autocast (both) or fp32")
    ap.add_argument("--wavssl-masks", choices=["auto", "device", "host"], default="auto",
                    help="device: model(wav, lengths) draws wavssl's span mask and distractors inside forward; "
                         "host: drawn with wavssl.models.MaskSampler as data-loader work, as wavssl's "
                         "PretrainTask does where it exists; auto: host where MaskSampler exists, else device")
    ap.add_argument("--only", choices=IMPLS, help="run one implementation only")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (CPU runs; default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS, help="JSON-lines file the result is appended to")
    ap.add_argument("--no-write", action="store_true", help="do not append to the results file")
    ap.add_argument("--commit", help="commit to record when this copy is no git checkout (default: from git)")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")
    if args.wavssl_masks == "auto":
        import wavssl.models

        args.wavssl_masks = "host" if hasattr(wavssl.models, "MaskSampler") else "device"
    shapes_wanted = len(args.utterance_seconds)
    if args.warmup < shapes_wanted:  # every batch shape is seen (and compiled) before timing
        print(f"note: --warmup raised to {shapes_wanted}, one update per batch shape")
        args.warmup = shapes_wanted

    load_start = load_average()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            ap.error("--device cuda: no CUDA device")
        device = torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)
        torch.cuda.set_device(device)
        device_name = torch.cuda.get_device_name(device)
    else:
        torch.set_flush_denormal(True)  # the trainer sets it on CPU anyway; set before either model runs
        warnings.filterwarnings("ignore", message="The value of the smallest subnormal")  # numpy, after that
        device_name = cpu_name()
    import transformers

    transformers.logging.set_verbosity_error()

    m, notes = model_config(args.preset)
    cfg = preset(args.preset)
    cfg.model = m
    cfg.train.precision = args.precision
    cfg.train.compile = args.compile
    cfg.train.activation_checkpointing = args.activation_checkpointing
    cfg.train.tensorboard = False
    cfg.train.log_every = cfg.train.checkpoint_every = 10**9  # logged once, at the end; never checkpointed
    cfg.train.checkpoint_every_seconds = 0.0
    cfg.optim.accumulate = 1
    cfg.optim.max_updates = args.warmup + args.steps + 1

    shapes = batch_shapes(args.batch_seconds, args.utterance_seconds)
    waves = [synthetic_batch(rows, samples / SAMPLE_RATE, seed=args.seed + i) for i, (rows, samples) in enumerate(shapes)]
    order = [args.only] if args.only else list(IMPLS)
    results: dict[str, dict] = {}
    for impl in order:
        print(f"{impl}: building, {args.warmup} warm-up + {args.steps} timed updates ...", flush=True)
        results[impl] = run_impl(impl, cfg, waves, args, device)
    load_end = load_average()

    timed_shapes = [shapes[i % len(shapes)] for i in range(args.warmup, args.warmup + args.steps)]
    record: dict[str, Any] = {
        "benchmark": "gpu_pretrain",
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": args.commit or git_commit("wavssl", "benchmarks/gpu_pretrain.py", "benchmarks/_wav2vec2.py"),
        "preset": args.preset,
        "device": device.type,
        "device_name": device_name,
        "gpus": 1 if device.type == "cuda" else 0,
        "precision": "bf16 autocast" if args.precision == "bf16" else "fp32",
        "compile": args.compile,
        "activation_checkpointing": args.activation_checkpointing,
        "optimizer": "torch.optim.AdamW(fused=True) via wavssl.train.trainer.Trainer",
        "batch_seconds": args.batch_seconds,
        "batch_shapes": [list(s) for s in shapes],
        "audio_seconds_per_step": statistics.fmean(b * s / SAMPLE_RATE for b, s in timed_shapes),
        "steps": args.steps,
        "warmup": args.warmup,
        "order": order,
        "wavssl_masks": args.wavssl_masks,
        "notes": notes,
        "unmatched": UNMATCHED,
        "results": results,
        "targets": targets(results, device_name, device, args.preset),
        "load_average": {"start": load_start, "end": load_end},
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu": cpu_name(), "cpu_flags": cpu_flags(),
        "cpu_count": os.cpu_count(),
    }
    print_table(record)
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"appended to {args.out}")
    return record


if __name__ == "__main__":
    main()
