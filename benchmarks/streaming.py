"""Streaming speech recognition on a CPU: a chunked-attention recognizer exported with
``wavssl export --streaming`` (every frame computed once, state carried between chunks) against
overlapping windows over a full-attention recognizer (each window's context recomputed).

Each test utterance is pushed into an ``OnlineRecognizer`` stream in ``--block-ms`` blocks and
decoded after every block, as a live application does; then ``input_finished`` and the final decode.
Per engine the script reports the CER of the final transcripts, the compute real-time factor (all
decode calls / audio seconds), the algorithmic latency (most audio a frame waits for before it can
be computed) and the median and 95th-percentile time of one decode call (what compute adds to it).

Engines (ONNX Runtime, ``--threads`` per stream, one stream at a time):

- ``chunked fp32`` / ``chunked int8``: the streaming export of ``--streaming-run`` (a recognizer
  fine-tuned with ``model.context.attention_chunk``);
- ``windows 2+1 s``: ``--offline-run``'s export in 2 s windows with 1 s of context each side (the
  ``wavssl-onnx stream`` default for offline models);
- ``windows <latency-matched>``: the same with windows as short as the chunked model's latency
  (chunk = context = half of it), the peer at equal latency;
- ``chunked fp32 / int8 xN``: ``--streams`` live streams at once, as a server holds them: every
  round each stream gets one chunk of audio and ``decode_streams`` runs the ready chunks of all of
  them as one batched step (the RTF is all rounds' time / all audio; the latency adds the round).

``--arch base`` replaces the two recognizers by one BASE-size network with random weights (per-frame
LayerNorm front end, 16-frame chunks, 4 chunks of left context, positional-conv look-ahead 8),
exported once with chunked attention (streaming) and once with full attention (windows): CER means
nothing there, compute and latency are what a BASE-size streaming model costs.

    python benchmarks/streaming.py                    # the debian_speech CPU recipe's ru_10min recognizers
    python benchmarks/streaming.py --limit 40 --no-write
    python benchmarks/streaming.py --arch base --limit 20
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import ROOT, cpu_flags, cpu_name, git_commit, load_average  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "streaming.jsonl"
RUNS = ROOT / "runs" / "debian_speech_cpu"


def _export(run: Path, out: Path, streaming: bool) -> Path:
    from wavssl.export import export

    if not (out / "wavssl.json").is_file():
        export(run, out, int8=streaming, streaming=streaming, log=lambda s: print(s, flush=True))
    return out


def random_base_runs(work: Path, vocab_from: Path) -> tuple[Path, Path]:
    """A random-weight BASE-size recognizer saved twice: with chunked attention and with full attention."""
    import dataclasses

    import torch
    from wavssl_onnx import Vocabulary

    from wavssl import config as C
    from wavssl.models import build_recognizer
    from wavssl.train.checkpoint import save_model

    vocab = Vocabulary.load(vocab_from)
    cfg = dataclasses.replace(C.base(), task="ctc")
    cfg.model.frontend = dataclasses.replace(cfg.model.frontend, norm_mode="layer_norm", conv_bias=True)
    cfg.model.context = dataclasses.replace(cfg.model.context, attention_chunk=16, attention_left_chunks=4,
                                            pos_conv_lookahead=8)
    torch.manual_seed(0)
    model = build_recognizer(cfg.model, cfg.ctc, len(vocab)).eval()
    runs = []
    for name, chunk in (("base_chunked", 16), ("base_full", 0)):
        run = work / name
        if not (run / "model.safetensors").is_file():
            c = dataclasses.replace(cfg, model=dataclasses.replace(
                cfg.model, context=dataclasses.replace(cfg.model.context, attention_chunk=chunk)))
            save_model(run, model, c)
            vocab.save(run)
        runs.append(run)
    return runs[0], runs[1]


def stream_one(rec, wave: np.ndarray, rate: int, block: int) -> tuple[str, list[float]]:  # type: ignore[no-untyped-def]
    """Push ``wave`` block by block, decoding after each -> (final text, seconds of every decode call)."""
    stream, calls = rec.create_stream(), []
    for start in range(0, len(wave), block):
        stream.accept_waveform(rate, wave[start: start + block])
        t = time.perf_counter()
        rec.decode(stream)
        calls.append(time.perf_counter() - t)
    stream.input_finished()
    t = time.perf_counter()
    text = rec.decode(stream).text
    calls.append(time.perf_counter() - t)
    return text, calls


def stream_many(rec, waves: list[np.ndarray], rate: int, block: int, slots: int) -> tuple[list[str], list[float], float]:  # type: ignore[no-untyped-def]
    """``slots`` live streams at once, as a server holds them: each round every stream gets ``block``
    more samples and ``decode_streams`` runs them all; a finished stream's slot takes the next
    utterance. -> (final texts, seconds of every round, mean streams per batched step)."""
    from wavssl_onnx.streaming import ChunkEngine

    texts = [""] * len(waves)
    queue = iter(range(len(waves)))
    batches: list[int] = []

    def start() -> list | None:
        i = next(queue, None)
        if i is None:
            return None
        stream = rec.create_stream()
        step = stream.engine.step

        def counted(x: np.ndarray, states: dict) -> tuple:
            batches.append(len(x))
            return step(x, states)

        if isinstance(stream.engine, ChunkEngine):
            stream.engine.step = counted
        return [i, stream, 0]

    active = [slot for slot in (start() for _ in range(slots)) if slot is not None]
    rounds = []
    while active:
        for slot in active:
            i, stream, pos = slot
            stream.accept_waveform(rate, waves[i][pos: pos + block])
            slot[2] = pos + block
            if slot[2] >= len(waves[i]):
                stream.input_finished()
        t = time.perf_counter()
        hyps = rec.decode_streams([slot[1] for slot in active])
        rounds.append(time.perf_counter() - t)
        still = []
        for slot, hyp in zip(active, hyps):
            if slot[1].finished:
                texts[slot[0]] = hyp.text
                slot = start()
            if slot is not None:
                still.append(slot)
        active = still
    return texts, rounds, (statistics.mean(batches) if batches else 0.0)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streaming-run", type=Path, default=RUNS / "ft_ru_10min_streaming",
                    help="recognizer fine-tuned with chunked attention")
    ap.add_argument("--offline-run", type=Path, default=RUNS / "ft_ru_10min_pretrained",
                    help="full-attention recognizer (the windowed peer)")
    ap.add_argument("--test", type=Path, default=ROOT / "data" / "debian_speech" / "ru_test.tsv",
                    help="TSV manifest with path and text columns")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads per stream")
    ap.add_argument("--block-ms", type=float, default=100.0, help="audio pushed (and decoded) at a time")
    ap.add_argument("--streams", type=int, default=8, help="live streams decoded together (server rounds of one "
                    "chunk of audio each) in the 'xN' engines; 0: skip them")
    ap.add_argument("--limit", type=int, default=0, help="first N utterances only (0: all)")
    ap.add_argument("--arch", choices=["runs", "base"], default="runs", help="runs: the two fine-tuned recognizers; "
                    "base: a random-weight BASE-size network, chunked and full attention (compute only)")
    ap.add_argument("--work", type=Path, help="folder for the exported models (kept and reused; default: temporary)")
    ap.add_argument("--no-write", action="store_true", help=f"do not append to {RESULTS.relative_to(ROOT)}")
    a = ap.parse_args(argv)
    from wavssl_onnx import OnlineRecognizer, cer, read_audio
    from wavssl_onnx.manifest import read_manifest
    from wavssl_onnx.text import normalize_text

    tmp = None
    if a.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="wavssl_streaming_")
        a.work = Path(tmp.name)
    load_start = load_average()
    if a.arch == "base":
        a.streaming_run, a.offline_run = random_base_runs(a.work, a.streaming_run / "vocab.json")
    chunked_dir = _export(a.streaming_run, a.work / f"{a.arch}_chunked", streaming=True)
    windowed_dir = _export(a.offline_run, a.work / f"{a.arch}_offline", streaming=False)
    chunked = OnlineRecognizer.from_dir(chunked_dir, threads=a.threads)
    match = max(chunked.latency / 2, 0.02)
    engines = {
        "chunked fp32": chunked,
        "chunked int8": OnlineRecognizer.from_dir(chunked_dir, threads=a.threads, int8=True),
        "windows 2+1 s": OnlineRecognizer.from_dir(windowed_dir, threads=a.threads, chunk_seconds=2.0,
                                                   context_seconds=1.0),
        f"windows {match:.2f}+{match:.2f} s": OnlineRecognizer.from_dir(
            windowed_dir, threads=a.threads, chunk_seconds=match, context_seconds=match),
    }
    language = chunked.info.language or None
    rows = [(r.path, normalize_text(r.text, language)) for r in read_manifest(a.test, text=True)]
    rows = [(p, t) for p, t in rows if p and t][: a.limit or None]
    rate = chunked.sample_rate
    waves = [read_audio(p, rate) for p, _ in rows]
    audio_seconds = sum(len(w) for w in waves) / rate
    block = int(a.block_ms / 1000 * rate)
    print(f"[bench] {len(rows)} utterances ({audio_seconds:.0f} s) x {len(engines)} engines, {a.threads} thread(s), "
          f"{a.block_ms:g} ms blocks", flush=True)
    hyps: dict[str, list[str]] = {k: [] for k in engines}
    calls: dict[str, list[float]] = {k: [] for k in engines}
    for i, wave in enumerate(waves):  # engines alternate utterance by utterance, so noise hits all alike
        for name in (list(engines) if i % 2 == 0 else list(engines)[::-1]):
            text, times = stream_one(engines[name], wave, rate, block)
            hyps[name].append(text)
            calls[name] += times
    refs = [t for _, t in rows]
    result = {}
    for name, rec in engines.items():
        c = calls[name]
        result[name] = {
            "cer": round(cer(refs, hyps[name]).rate, 4), "rtf": round(sum(c) / audio_seconds, 4),
            "latency_s": round(rec.latency, 3), "decode_ms_median": round(1000 * statistics.median(c), 2),
            "decode_ms_p95": round(1000 * float(np.percentile(c, 95)), 2),
        }
    if a.streams > 0:  # a server's view: many live streams, one batched step per round
        g = chunked.recognizer.streaming
        chunk_block = g.chunk_frames * g.frame_shift_samples
        for name in ("chunked fp32", "chunked int8"):
            texts, rounds, mean_batch = stream_many(engines[name], waves, rate, chunk_block, a.streams)
            result[f"{name} x{a.streams}"] = {
                "cer": round(cer(refs, texts).rate, 4), "rtf": round(sum(rounds) / audio_seconds, 4),
                "latency_s": round(engines[name].latency + chunk_block / rate, 3),
                "decode_ms_median": round(1000 * statistics.median(rounds), 2),
                "decode_ms_p95": round(1000 * float(np.percentile(rounds, 95)), 2), "mean_batch": round(mean_batch, 2),
            }
    peer = f"windows {match:.2f}+{match:.2f} s"
    record = {
        "benchmark": "streaming", "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit("wavssl", "export"), "test": str(a.test.relative_to(ROOT) if a.test.is_relative_to(ROOT)
                                                              else a.test),
        "arch": a.arch, "utterances": len(rows), "audio_seconds": round(audio_seconds, 1), "threads": a.threads,
        "block_ms": a.block_ms, "streams": a.streams, "engines": result,
        "ratios": {"rtf_windows_2+1_vs_chunked_fp32": round(result["windows 2+1 s"]["rtf"] / result["chunked fp32"]["rtf"], 2),
                   "rtf_latency_matched_windows_vs_chunked_fp32": round(result[peer]["rtf"] / result["chunked fp32"]["rtf"], 2),
                   "latency_windows_2+1_vs_chunked": round(result["windows 2+1 s"]["latency_s"] / chunked.latency, 2)},
        "geometry": chunked.recognizer.streaming.to_dict() if chunked.recognizer.streaming else None,
        "load_average": {"start": load_start, "end": load_average()}, "cpu": cpu_name(), "cpu_flags": cpu_flags(), "cpu_count": os.cpu_count(),
    }
    print(f"{'engine':24s} {'CER':>7s} {'RTF':>7s} {'latency':>8s} {'decode ms (median / p95; xN: per round)':>26s}")
    for name, r in result.items():
        print(f"{name:24s} {100 * r['cer']:6.2f}% {r['rtf']:7.4f} {r['latency_s']:7.2f}s "
              f"{r['decode_ms_median']:12.2f} / {r['decode_ms_p95']:.2f}")
    print("ratios:", json.dumps(record["ratios"]))
    if not a.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        print(f"[bench] appended to {RESULTS.relative_to(ROOT)}")
    if tmp is not None:
        tmp.cleanup()
    return record


if __name__ == "__main__":
    main()
