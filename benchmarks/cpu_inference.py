"""CPU inference speed of a BASE-size recognizer: wavssl-onnx against transformers' ``Wav2Vec2ForCTC``.

Both models have the wav2vec 2.0 BASE architecture (7-block conv front end with GroupNorm, 12 x 768
post-LN Transformer, positional conv 128/16; ~94.4M parameters) with random weights and the same
32-token vocabulary. In one process, on the same clip of generated speech, with the same thread count:

- **wavssl-onnx fp32 / int8**: the model exported by ``wavssl export --int8`` (fused contrib ops,
  conv front end as MatMuls, per-channel int8 of every MatMul and Attention weight), run by the
  runtime's :class:`~wavssl_onnx.OfflineRecognizer` (its session options);
- **transformers eager fp32**: ``Wav2Vec2ForCTC`` under ``torch.inference_mode`` with
  ``torch.set_num_threads``;
- **transformers ONNX fp32 / int8**: the same model exported with ``torch.onnx.export(dynamo=True)``
  and, for int8, onnxruntime dynamic quantization of its MatMul weights; run with the same ONNX
  Runtime session (``wavssl_onnx.session.cpu_session``: options and disabled rewrites) as wavssl-onnx.

Idle threads wait passively in every engine (ONNX Runtime without spinning, as wavssl-onnx runs by
default, and ``OMP_WAIT_POLICY=PASSIVE`` for torch); ``--spin`` makes them all busy-wait, which is
faster only on an otherwise idle machine. After one warm-up each, the engines alternate run by run
(order reversed every round) so machine noise hits them alike; reported: the real-time factor (median over runs of seconds per second of
audio), the median CPU seconds per audio second of each engine (this process's CPU time over the run:
a measure of work that other jobs on a shared machine barely disturb, unlike wall time), ratios
against wavssl-onnx by both, file sizes, and the peak RSS of a fresh process that loads only
that engine and transcribes the clip once (the wavssl-onnx ones with ``import torch`` blocked).

    python benchmarks/cpu_inference.py                        # 10 s clip, 2 threads, 7 runs each
    python benchmarks/cpu_inference.py --runs 11 --spin       # ONNX Runtime's busy-waiting threads
    python benchmarks/cpu_inference.py --work DIR             # keep (and reuse) the exported models

Appends one JSON line to ``benchmarks/results/cpu_inference.jsonl``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import statistics
import string
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._env import cpu_flags, cpu_name, git_commit, load_average  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "cpu_inference.jsonl"
RATE = 16000
ENGINES = ("wavssl-onnx int8", "wavssl-onnx fp32", "transformers onnx int8", "transformers onnx fp32",
           "transformers eager fp32")


# ------------------------------------------------------------------------------------ inputs


def speech_clip(seconds: float, work: Path) -> tuple[np.ndarray, str]:
    """``seconds`` of generated English speech (espeak-ng/flite utterances back to back), or a
    chirp with noise where no synthesizer is installed. Returns the clip and what it is."""
    import soundfile as sf

    try:
        from wavssl.data.synth import synthesize_corpus

        corpus = work / "speech"
        if not corpus.is_dir():
            synthesize_corpus(corpus, num_utterances=8, seed=0)
        pieces = [sf.read(str(p), dtype="float32")[0] for p in sorted(corpus.glob("*.wav"))]
        clip = np.concatenate(pieces * (1 + int(seconds * RATE) // sum(map(len, pieces))))[: int(seconds * RATE)]
        return clip.astype(np.float32), "generated speech (wavssl synth-corpus)"
    except Exception as e:
        t = np.arange(int(seconds * RATE)) / RATE
        rng = np.random.default_rng(0)
        clip = 0.3 * np.sin(2 * np.pi * (200 + 300 * np.sin(np.pi * t)) * t) + 0.05 * rng.standard_normal(t.size)
        return clip.astype(np.float32), f"chirp + noise (no synthesizer: {type(e).__name__})"


def vocab_tokens() -> list[str]:
    return ["<blank>", "<unk>", "|", *string.ascii_lowercase, "'", "-", "."]  # 32 tokens


# ------------------------------------------------------------------------------------ models


def wavssl_model_dir(work: Path, log: Callable[[str], None]) -> tuple[Path, dict]:
    """The BASE recognizer (random weights, seed 0) exported with int8; reused when present."""
    import torch
    from wavssl_onnx import Vocabulary

    from wavssl import config as C
    from wavssl.export import export
    from wavssl.models import build_recognizer
    from wavssl.train.checkpoint import save_model

    out = work / "wavssl_base_onnx"
    if (out / "wavssl.json").is_file() and (out / "model.int8.onnx").is_file():
        return out, json.loads((out / "wavssl.json").read_text())["export"]
    torch.manual_seed(0)
    cfg = dataclasses.replace(C.base(), task="ctc")
    vocab = Vocabulary(vocab_tokens())
    model = build_recognizer(cfg.model, cfg.ctc, len(vocab))
    run = work / "wavssl_base_run"
    save_model(run, model, cfg)
    vocab.save(run)
    log("[bench] exporting the wavssl BASE recognizer (parity check up to 60 s, int8) ...")
    export(run, out, int8=True, log=log)
    return out, json.loads((out / "wavssl.json").read_text())["export"]


def transformers_model(work: Path):  # -> Wav2Vec2ForCTC
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(Wav2Vec2Config(vocab_size=len(vocab_tokens()))).eval()
    path = work / "transformers_base"
    if not (path / "config.json").is_file():
        model.save_pretrained(path)
    return model


def transformers_onnx(model, work: Path, log: Callable[[str], None]) -> tuple[Path, Path]:
    """The peer exported with the dynamo exporter (dynamic time axis) and MatMul-int8 quantized."""
    import torch

    fp32, int8 = work / "transformers_base.onnx", work / "transformers_base.int8.onnx"
    if not fp32.is_file():
        log("[bench] exporting transformers Wav2Vec2ForCTC to ONNX (dynamo) ...")

        class Logits(torch.nn.Module):
            def __init__(self, m: torch.nn.Module) -> None:
                super().__init__()
                self.m = m

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.m(x).logits

        program = torch.onnx.export(Logits(model).eval(), (torch.randn(1, 32000),), dynamo=True,
                                    input_names=["input_values"], output_names=["logits"],
                                    dynamic_shapes=({1: torch.export.Dim("time", min=800)},), opset_version=18)
        program.save(str(fp32))
    if not int8.is_file():
        import logging

        from onnxruntime.quantization import QuantType, quantize_dynamic

        logging.getLogger().setLevel(logging.ERROR)
        quantize_dynamic(str(fp32), str(int8), op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8,
                         extra_options={"MatMulConstBOnly": True})
    return fp32, int8


# ------------------------------------------------------------------------------------ timing


def engines(work: Path, clip: np.ndarray, threads: int, spin: bool, log: Callable[[str], None]) -> tuple[dict, dict]:
    """name -> zero-argument callable that processes the clip once; and the files behind each."""
    import torch
    from wavssl_onnx import OfflineRecognizer
    from wavssl_onnx.session import cpu_session

    model_dir, export_meta = wavssl_model_dir(work, log)
    peer = transformers_model(work)
    peer_fp32, peer_int8 = transformers_onnx(peer, work, log)
    torch.set_num_threads(threads)
    fp32 = OfflineRecognizer.from_dir(model_dir, threads=threads, spin=spin)
    int8 = OfflineRecognizer.from_dir(model_dir, threads=threads, spin=spin, int8=True)

    def peer_session(path: Path) -> Callable[[], object]:
        session = cpu_session(path, threads, spin)
        feed = {"input_values": clip[None]}
        return lambda: session.run(None, feed)

    x = torch.from_numpy(clip)[None]

    def eager() -> object:
        with torch.inference_mode():
            return torch.log_softmax(peer(x).logits, -1)

    fns = {
        "wavssl-onnx int8": lambda: int8.transcribe([clip]),
        "wavssl-onnx fp32": lambda: fp32.transcribe([clip]),
        "transformers onnx int8": peer_session(peer_int8),
        "transformers onnx fp32": peer_session(peer_fp32),
        "transformers eager fp32": eager,
    }
    files = {
        "wavssl-onnx int8": [model_dir / "model.int8.onnx"], "wavssl-onnx fp32": [model_dir / "model.onnx"],
        "transformers onnx int8": [peer_int8], "transformers onnx fp32": [peer_fp32],
        "transformers eager fp32": [work / "transformers_base" / "model.safetensors"],
    }
    meta = {"export": export_meta, "params": {"transformers": sum(p.numel() for p in peer.parameters())}}
    return {k: fns[k] for k in ENGINES}, {"files": files, **meta}


def time_all(fns: dict[str, Callable[[], object]], runs: int,
             seconds: float) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Alternating runs after one warm-up each -> (name -> real-time factors, name -> CPU seconds of
    the whole process per second of audio). Every engine runs in this process, so the CPU time of a
    run is that engine's work on all its threads; unlike wall time it barely moves when other jobs
    share the machine (idle threads wait passively unless ``--spin``)."""
    for fn in fns.values():
        fn()
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(runs):
        for name in names if r % 2 == 0 else names[::-1]:
            c0, t0 = time.process_time(), time.perf_counter()
            fns[name]()
            wall[name].append((time.perf_counter() - t0) / seconds)
            cpu[name].append((time.process_time() - c0) / seconds)
    return wall, cpu


def peak_rss_mb(engine: str, work: Path, clip_path: Path, threads: int, spin: bool) -> float | None:
    """Peak RSS (MB) of a fresh process that loads only ``engine`` and runs the clip once."""
    head = "import sys, resource, numpy as np, soundfile as sf\n"
    clip = f"clip = sf.read({str(clip_path)!r}, dtype='float32')[0]\n"
    if engine.startswith("wavssl-onnx"):
        body = ("sys.modules['torch'] = None\nfrom wavssl_onnx import OfflineRecognizer\n"
                f"OfflineRecognizer.from_dir({str(work / 'wavssl_base_onnx')!r}, threads={threads}, spin={spin}, "
                f"int8={'int8' in engine}).transcribe([clip])\n")
    elif engine == "transformers eager fp32":
        body = (f"import torch\ntorch.set_num_threads({threads})\nfrom transformers import Wav2Vec2ForCTC\n"
                f"m = Wav2Vec2ForCTC.from_pretrained({str(work / 'transformers_base')!r}).eval()\n"
                "with torch.inference_mode():\n    m(torch.from_numpy(clip)[None])\n")
    else:
        path = work / ("transformers_base.int8.onnx" if "int8" in engine else "transformers_base.onnx")
        body = ("sys.modules['torch'] = None\nfrom wavssl_onnx.session import cpu_session\n"
                f"s = cpu_session({str(path)!r}, {threads}, {spin})\n"
                "s.run(None, {'input_values': clip[None]})\n")
    # the child's own high-water mark: getrusage's ru_maxrss would carry this (large) process's through fork + exec
    code = head + clip + body + textwrap.dedent("""
        hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")]
        print(int(hwm[0].split()[1]) / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT)
    if run.returncode != 0:
        print(f"[bench] peak RSS of {engine} not measured: {run.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return round(float(run.stdout.strip().splitlines()[-1]), 1)


# ------------------------------------------------------------------------------------ report


def table(record: dict) -> str:
    rows = [f"{'engine':26s} {'RTF (median)':>13s} {'x vs wavssl int8':>17s} {'CPU s / audio s':>16s} "
            f"{'file MB':>8s} {'peak RSS MB':>12s}"]
    base = record["rtf"]["wavssl-onnx int8"]
    for name in ENGINES:
        rtf = record["rtf"][name]
        rss = record["peak_rss_mb"].get(name)
        rows.append(f"{name:26s} {rtf:13.4f} {rtf / base:17.2f} {record['cpu_seconds_per_audio_second'][name]:16.4f} "
                    f"{record['file_mb'][name]:8.1f} "
                    f"{'-' if rss is None else f'{rss:.0f}':>12s}")
    r = record["ratios"]
    rows.append(f"wavssl int8 vs the peer's best path ({r['peer_best']}): {r['int8_vs_peer_best']:.2f}x faster; "
                f"wavssl fp32 vs peer ONNX fp32: {r['fp32_vs_peer_onnx_fp32']:.2f}x; "
                f"vs peer eager: {r['fp32_vs_peer_eager']:.2f}x\n"
                f"by CPU time (robust to other load): int8 vs the peer's cheapest {r['cpu_int8_vs_peer_best']:.2f}x, "
                f"fp32 vs peer ONNX fp32 {r['cpu_fp32_vs_peer_onnx_fp32']:.2f}x")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="clip length")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads of every engine")
    ap.add_argument("--runs", type=int, default=7, help="timed runs per engine (after one warm-up)")
    ap.add_argument("--spin", action="store_true", help="busy-waiting threads: ONNX Runtime's (every ONNX engine) and "
                    "OpenMP's OMP_WAIT_POLICY=ACTIVE (torch eager); default: passive waiting for all")
    ap.add_argument("--work", type=Path, help="folder for the exported models (kept and reused; default: temporary)")
    ap.add_argument("--no-rss", action="store_true", help="skip the per-engine peak-RSS subprocesses")
    ap.add_argument("--no-write", action="store_true", help=f"do not append to {RESULTS.relative_to(ROOT)}")
    a = ap.parse_args(argv)
    # the same thread-waiting policy for every engine: ONNX Runtime's spinning (``--spin``) and
    # OpenMP's (torch eager) go together; set before torch loads OpenMP
    os.environ["OMP_WAIT_POLICY"] = "ACTIVE" if a.spin else "PASSIVE"
    tmp = None
    if a.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="wavssl_cpu_inference_")
        a.work = Path(tmp.name)
    a.work.mkdir(parents=True, exist_ok=True)
    log = lambda s: print(s, flush=True)
    load_start = load_average()
    clip, clip_kind = speech_clip(a.seconds, a.work)
    fns, meta = engines(a.work, clip, a.threads, a.spin, log)
    log(f"[bench] timing {len(fns)} engines x {a.runs} runs on a {a.seconds:g} s clip, {a.threads} threads ...")
    rtfs, cpu_runs = time_all(fns, a.runs, a.seconds)
    median = {k: round(statistics.median(v), 4) for k, v in rtfs.items()}
    cpu = {k: round(statistics.median(v), 4) for k, v in cpu_runs.items()}
    rss: dict[str, float | None] = {}
    if not a.no_rss:
        import soundfile as sf

        clip_path = a.work / "clip.wav"
        sf.write(clip_path, clip, RATE, subtype="FLOAT")
        rss = {k: peak_rss_mb(k, a.work, clip_path, a.threads, a.spin) for k in ENGINES}
    peer = {k: median[k] for k in ENGINES if k.startswith("transformers")}
    peer_best = min(peer, key=peer.get)  # type: ignore[arg-type]
    record = {
        "benchmark": "cpu_inference", "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit("wavssl", "export"), "clip_seconds": a.seconds, "clip": clip_kind, "threads": a.threads, "runs": a.runs,
        "ort_spinning": a.spin, "omp_wait_policy": os.environ["OMP_WAIT_POLICY"], "rtf": median, "rtf_runs": {k: [round(x, 4) for x in v] for k, v in rtfs.items()},
        "cpu_seconds_per_audio_second": cpu,
        "ratios": {
            "peer_best": peer_best,
            "cpu_int8_vs_peer_best": round(min(cpu[k] for k in peer) / cpu["wavssl-onnx int8"], 3),
            "cpu_fp32_vs_peer_onnx_fp32": round(cpu["transformers onnx fp32"] / cpu["wavssl-onnx fp32"], 3),
            "int8_vs_peer_best": round(median[peer_best] / median["wavssl-onnx int8"], 3),
            "int8_vs_peer_onnx_int8": round(median["transformers onnx int8"] / median["wavssl-onnx int8"], 3),
            "fp32_vs_peer_onnx_fp32": round(median["transformers onnx fp32"] / median["wavssl-onnx fp32"], 3),
            "fp32_vs_peer_eager": round(median["transformers eager fp32"] / median["wavssl-onnx fp32"], 3),
        },
        "file_mb": {k: round(sum(p.stat().st_size for p in v) / 1e6, 1) for k, v in meta["files"].items()},
        "peak_rss_mb": rss,
        "wavssl_export": meta["export"], "params": meta["params"],
        "load_average": {"start": load_start, "end": load_average()},
        "versions": _versions(), "cpu": cpu_name(), "cpu_flags": cpu_flags(), "cpu_count": os.cpu_count(),
    }
    print(table(record))
    if not a.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"[bench] appended to {RESULTS.relative_to(ROOT)}")
    if tmp is not None:
        tmp.cleanup()
    return record


def _versions() -> dict[str, str]:
    import onnxruntime
    import torch
    import transformers

    return {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


if __name__ == "__main__":
    main()
