"""CPU pretraining speed: wavssl ``SSLModel`` against transformers' ``Wav2Vec2ForPreTraining``.

Both models are built from the same architecture numbers, trained in the same process on the same
synthetic batch, in fp32 and training mode; one step is forward + backward + AdamW update (same
optimizer settings for both). The transformers side prepares every step the way its pretraining
example does: ``_compute_mask_indices`` with the config's ``mask_time_prob``/``mask_time_length`` on
the feature-frame shape, ``_sample_negative_indices`` from that mask, both passed to ``forward`` as
``mask_time_indices`` / ``sampled_negative_indices``; the summed loss is divided by the number of
masked frames. wavssl samples its span mask and distractors on the device inside ``forward``.

After a warm-up, the two models alternate step by step (the order flips every round) so machine noise
hits both alike; the figure reported is the median over steps of audio seconds trained per second.

    python benchmarks/pretrain_cpu.py                       # small5m config, 4 x 4 s, 2 threads
    python benchmarks/pretrain_cpu.py --config small --steps 6
    python benchmarks/pretrain_cpu.py --profile             # + per-phase breakdown, top ops

Appends one JSON line to ``benchmarks/results/pretrain_cpu.jsonl``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._env import cpu_flags, cpu_name, git_commit, load_average  # noqa: E402

from benchmarks._wav2vec2 import gumbel_temperature, hf_config, model_config, synthetic_batch  # noqa: E402

from wavssl.config import ModelConfig  # noqa: E402
from wavssl.models import build_model  # noqa: E402
from wavssl.modules.cpu_training import use_cpu_training_paths  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "pretrain_cpu.jsonl"


# ------------------------------------------------------------------------------------------ runners


def make_optimizer(model: torch.nn.Module, impl: str) -> torch.optim.Optimizer:
    kw = {"foreach": impl == "foreach", "fused": impl == "fused"} if impl != "default" else {}
    return torch.optim.AdamW(model.parameters(), lr=5e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01, **kw)


class Runner:
    """One model + its optimizer; ``step(wav)`` does one full training update."""

    name: str

    def __init__(self, model: torch.nn.Module, optim_impl: str) -> None:
        self.model = model.train()
        self.optimizer = make_optimizer(model, optim_impl)
        self.num_updates = 0
        self.last_loss = float("nan")

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def loss(self, wav: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def step(self, wav: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(wav)
        loss.backward()
        self.optimizer.step()
        self.num_updates += 1
        self.last_loss = float(loss.detach())


class WavsslRunner(Runner):
    name = "wavssl"

    def loss(self, wav: torch.Tensor) -> torch.Tensor:
        self.model.set_num_updates(self.num_updates)
        lengths = torch.full((wav.shape[0],), wav.shape[1], dtype=torch.long)  # as the trainer passes them
        return self.model(wav, lengths).loss


class HFRunner(Runner):
    name = "transformers"

    def __init__(self, model: torch.nn.Module, optim_impl: str) -> None:
        super().__init__(model, optim_impl)
        from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices, _sample_negative_indices

        self._mask, self._negatives = _compute_mask_indices, _sample_negative_indices

    def loss(self, wav: torch.Tensor) -> torch.Tensor:
        cfg = self.model.config
        self.model.set_gumbel_temperature(gumbel_temperature(self.num_updates))
        frames = int(self.model._get_feat_extract_output_lengths(wav.shape[-1]))
        shape = (wav.shape[0], frames)
        mask = self._mask(shape, cfg.mask_time_prob, cfg.mask_time_length)
        negatives = self._negatives(shape, cfg.num_negatives, mask_time_indices=mask)
        mask_t = torch.tensor(mask, dtype=torch.long, device=wav.device)
        negatives_t = torch.tensor(negatives, dtype=torch.long, device=wav.device)
        out = self.model(wav, mask_time_indices=mask_t, sampled_negative_indices=negatives_t)
        return out.loss / mask_t.sum()


def build_runners(m: ModelConfig, optim_impl: str, seed: int) -> list[Runner]:
    from transformers import Wav2Vec2ForPreTraining

    torch.manual_seed(seed)
    ours = WavsslRunner(build_model(m), optim_impl)
    use_cpu_training_paths(ours.model)  # as wavssl's Trainer does on a CPU
    torch.manual_seed(seed)
    peer = HFRunner(Wav2Vec2ForPreTraining(hf_config(m)), optim_impl)
    return [ours, peer]


# ------------------------------------------------------------------------------------------ profile


def components(r: Runner) -> dict[str, torch.nn.Module]:
    """The modules whose forward time the phase breakdown reports, per model."""
    if isinstance(r, WavsslRunner):
        enc = r.model.encoder
        return {"frontend": enc.frontend, "context": enc.context, "quantizer": r.model.quantizer}
    w2v = r.model.wav2vec2
    return {"frontend": w2v.feature_extractor, "context": w2v.encoder, "quantizer": r.model.quantizer}


def phase_breakdown(runners: list[Runner], wav: torch.Tensor, steps: int = 3) -> dict[str, dict[str, float]]:
    """Median ms per step of each forward component (forward hooks), the rest of the forward
    (masking, projections, loss), the backward and the optimizer step; models interleaved."""
    times: dict[str, dict[str, list[float]]] = {r.name: {} for r in runners}
    for r in runners:
        for name, mod in components(r).items():
            def pre(_m, _i, r=r, name=name):
                times[r.name].setdefault("_start", []).append(time.perf_counter())

            def post(_m, _i, _o, r=r, name=name):
                times[r.name].setdefault(f"fwd {name}", []).append(time.perf_counter() - times[r.name]["_start"].pop())

            handles = [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
            r.__dict__.setdefault("_hooks", []).extend(handles)
    for i in range(steps):
        for r in (runners if i % 2 == 0 else runners[::-1]):
            r.optimizer.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            loss = r.loss(wav)
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            r.optimizer.step()
            t3 = time.perf_counter()
            r.num_updates += 1
            t = times[r.name]
            parts = sum(t[f"fwd {n}"][-1] for n in components(r))
            for key, value in (("fwd rest (masking, projections, loss)", t1 - t0 - parts), ("backward", t2 - t1),
                               ("optimizer", t3 - t2), ("total", t3 - t0)):
                t.setdefault(key, []).append(value)
    for r in runners:
        for h in r.__dict__.pop("_hooks"):
            h.remove()
    out = {r.name: {k: round(1e3 * statistics.median(v), 1) for k, v in times[r.name].items() if not k.startswith("_")}
           for r in runners}
    keys = list(out[runners[0].name])
    print(f"\n{'phase, ms/step (median of ' + str(steps) + ')':<40}" + "".join(f"{r.name:>14}" for r in runners))
    for k in keys:
        print(f"{k:<40}" + "".join(f"{out[r.name][k]:>14.0f}" for r in runners))
    return out


def top_ops(runners: list[Runner], wav: torch.Tensor, steps: int = 2, rows: int = 15) -> dict[str, list]:
    """torch.profiler over ``steps`` updates of each model; prints the top ops by self CPU time."""
    from torch.profiler import ProfilerActivity, profile as tprofile

    tables: dict[str, list] = {}
    for r in runners:
        with tprofile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(steps):
                r.step(wav)
        avg = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in avg) or 1
        print(f"\n--- {r.name}: top ops by self CPU time (profiled, {total / 1e3 / steps:.0f} ms/step)")
        rows_out = []
        for e in avg[:rows]:
            ms, share = e.self_cpu_time_total / 1e3 / steps, e.self_cpu_time_total / total
            shapes = ", ".join(str(tuple(x)) for x in e.input_shapes if isinstance(x, list) and x)[:60]
            print(f"  {e.key:<34} {ms:7.1f} ms {100 * share:5.1f}%  {shapes}")
            rows_out.append([e.key, shapes, round(ms, 2), round(share, 4)])
        tables[r.name] = rows_out
    return tables


# ------------------------------------------------------------------------------------------ main


def timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", choices=["small5m", "tiny", "small"], default="small5m")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per model")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per model first")
    ap.add_argument("--batch", type=int, default=4, help="utterances per batch")
    ap.add_argument("--seconds", type=float, default=4.0, help="seconds per utterance")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--optim", choices=["fused", "foreach", "default"], default="fused",
                    help="torch AdamW implementation, the same for both models (fused: the fastest on CPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", action="store_true",
                    help="afterwards, a per-phase breakdown and the top ops of each model")
    ap.add_argument("--no-write", action="store_true", help="do not append to the results file")
    args = ap.parse_args(argv)

    load_start = load_average()  # before this process adds its own load
    torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    m, notes = model_config(args.config)
    runners = build_runners(m, args.optim, args.seed)
    wav = synthetic_batch(args.batch, args.seconds, args.seed)
    audio_seconds = args.batch * args.seconds
    ours, peer = runners
    for note in notes:
        print(f"note: {note}")
    print(f"config {args.config}: params wavssl {ours.num_params:,} / transformers {peer.num_params:,} "
          f"({100 * (ours.num_params / peer.num_params - 1):+.2f}%); batch {args.batch} x {args.seconds:g} s; "
          f"{torch.get_num_threads()} threads; torch {torch.__version__}, transformers {transformers.__version__}")

    for r in runners:
        for _ in range(args.warmup):
            r.step(wav)
    times: dict[str, list[float]] = {r.name: [] for r in runners}
    faults: dict[str, list[int]] = {r.name: [] for r in runners}
    for i in range(args.steps):
        for r in (runners if i % 2 == 0 else runners[::-1]):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            times[r.name].append(timed(lambda r=r: r.step(wav)))
            faults[r.name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    load_end = load_average()

    med = {k: statistics.median(v) for k, v in times.items()}
    speed = {k: audio_seconds / v for k, v in med.items()}
    ratio = speed["wavssl"] / speed["transformers"]
    print(f"\n{'model':<14}{'params':>12}{'median s/step':>15}{'audio-s/s':>11}{'loss':>9}")
    for r in runners:
        print(f"{r.name:<14}{r.num_params:>12,}{med[r.name]:>15.3f}{speed[r.name]:>11.2f}{r.last_loss:>9.3f}")
    print(f"ratio wavssl / transformers: {ratio:.2f}x")
    for r in runners:
        if not math.isfinite(r.last_loss):
            print(f"warning: {r.name}'s loss is not finite after {r.num_updates} updates")
    busy = load_start >= (os.cpu_count() or 1)
    print(f"load average {load_start} at start, {load_end} at end (this run adds ~{args.threads}), "
          f"{os.cpu_count()} CPUs" + ("  -- the machine was busy: expect noisy timings" if busy else ""))

    record = {
        "benchmark": "pretrain_cpu",
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "config": args.config,
        "notes": notes,
        "batch": args.batch,
        "seconds": args.seconds,
        "steps": args.steps,
        "warmup": args.warmup,
        "threads": torch.get_num_threads(),
        "optim": args.optim,
        "dtype": "float32",
        "params": {r.name: r.num_params for r in runners},
        "median_step_s": {k: round(v, 4) for k, v in med.items()},
        "audio_s_per_s": {k: round(v, 3) for k, v in speed.items()},
        "ratio": round(ratio, 3),
        "final_loss": {r.name: (round(r.last_loss, 4) if math.isfinite(r.last_loss) else str(r.last_loss))
                       for r in runners},
        "step_times_s": {k: [round(t, 4) for t in v] for k, v in times.items()},
        "page_faults_per_step": {k: int(statistics.median(v)) for k, v in faults.items()},
        "load_average": {"start": load_start, "end": load_end},
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu": cpu_name(), "cpu_flags": cpu_flags(),
        "cpu_count": os.cpu_count(),
    }
    if args.profile:
        record["profile_phases_ms"] = phase_breakdown(runners, wav)
        record["profile_top_ops"] = top_ops(runners, wav)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"appended to {RESULTS.relative_to(ROOT)}")
    return record


if __name__ == "__main__":
    main()
