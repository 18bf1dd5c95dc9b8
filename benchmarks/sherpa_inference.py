"""CPU inference speed of the same BASE recognizer graph in wavssl-onnx (Python over ONNX Runtime)
and in sherpa-onnx (C++ over its bundled ONNX Runtime).

The BASE recognizer of ``benchmarks/cpu_inference.py`` (random weights, seed 0, 32 tokens) is exported
once with ``wavssl export --int8``; ``wavssl.export_sherpa.export_sherpa_onnx`` converts that model
directory, so sherpa-onnx runs the same graph node for node (fp32 and int8), with only ``lengths``
computed from the input shape. In one process, on the same 10 s clip of generated speech:

- **wavssl-onnx**: ``wavssl_onnx.OfflineRecognizer.transcribe([clip])`` (reads nothing from disk; greedy
  decoding included), at its default passive thread waiting and, with 2 threads, also with
  ONNX Runtime's spinning (``spin=True``), which is what sherpa-onnx's session uses;
- **sherpa-onnx**: ``OfflineRecognizer.from_omnilingual_asr_ctc`` (create a stream, accept the
  waveform, decode; sherpa-onnx standardises the input itself and decodes greedily);
- **transformers onnx** (the peer of ``cpu_inference.py``, in the same run so its lead stays
  measured): transformers' ``Wav2Vec2ForCTC`` (same architecture, random weights) exported with
  ``torch.onnx.export(dynamo=True)``, MatMul weights int8 by ``quantize_dynamic``, run by the same
  ONNX Runtime session options as wavssl-onnx (logits only, no decoding).

At 1 and 2 intra-op threads; after one warm-up each, engines alternate run by run (order reversed
every round). Reported per engine: real-time factor (median of seconds per audio second) and CPU
seconds per audio second (this process's CPU time: sherpa-onnx's C++ threads count too), and the
ratio wavssl-onnx / sherpa-onnx of both (1.05 = wavssl 5 % slower), and wavssl-onnx / transformers onnx.

    python benchmarks/sherpa_inference.py                  # 10 s clip, 1 and 2 threads, 9 runs
    python benchmarks/sherpa_inference.py --work DIR       # keep (and reuse) the exported models

Appends one JSON line to ``benchmarks/results/sherpa_inference.jsonl``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._env import append_result, cpu_flags, cpu_name, git_commit, load_average  # noqa: E402
from benchmarks.cpu_inference import speech_clip, time_all, transformers_model, transformers_onnx, wavssl_model_dir  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "sherpa_inference.jsonl"
PAIRS = (("wavssl-onnx fp32", "sherpa-onnx fp32"), ("wavssl-onnx int8", "sherpa-onnx int8"),
         ("wavssl-onnx fp32 spin", "sherpa-onnx fp32"), ("wavssl-onnx int8 spin", "sherpa-onnx int8"),
         ("wavssl-onnx fp32", "transformers onnx fp32"), ("wavssl-onnx int8", "transformers onnx int8"))
"""(wavssl-onnx engine, the peer engine it is compared with)."""


def sherpa_dir(model_dir: Path, work: Path, log: Callable[[str], None]) -> Path:
    """The sherpa-onnx conversion of the wavssl model directory (reused when present)."""
    from wavssl.export_sherpa import TOKENS_FILE, export_sherpa_onnx

    out = work / "sherpa_base"
    if not (out / TOKENS_FILE).is_file() or not (out / "model.int8.onnx").is_file():
        log("[bench] converting the wavssl model directory for sherpa-onnx ...")
        export_sherpa_onnx(model_dir, out, int8=True, log=log)
    return out


def engines(model_dir: Path, sherpa: Path, peer: tuple[Path, Path], clip: np.ndarray,
            threads: int) -> dict[str, Callable[[], object]]:
    """name -> callable that processes the clip once (the text, for the two runtimes of our graph)."""
    import sherpa_onnx
    from wavssl_onnx import OfflineRecognizer
    from wavssl_onnx.session import cpu_session

    def wavssl(int8: bool, spin: bool) -> Callable[[], str]:
        rec = OfflineRecognizer.from_dir(model_dir, threads=threads, spin=spin, int8=int8)
        return lambda: rec.transcribe([clip])[0].text

    def sherpa_engine(int8: bool) -> Callable[[], str]:
        rec = sherpa_onnx.OfflineRecognizer.from_omnilingual_asr_ctc(
            model=str(sherpa / ("model.int8.onnx" if int8 else "model.onnx")), tokens=str(sherpa / "tokens.txt"),
            num_threads=threads)

        def run() -> str:
            stream = rec.create_stream()
            stream.accept_waveform(16000, clip)
            rec.decode_stream(stream)
            return " ".join(stream.result.text.split())
        return run

    def peer_session(path: Path) -> Callable[[], object]:
        session = cpu_session(path, threads, False)
        feed = {"input_values": clip[None]}
        return lambda: session.run(None, feed)

    fns: dict[str, Callable[[], object]] = {
        "wavssl-onnx fp32": wavssl(False, False), "wavssl-onnx int8": wavssl(True, False),
        "sherpa-onnx fp32": sherpa_engine(False), "sherpa-onnx int8": sherpa_engine(True),
        "transformers onnx fp32": peer_session(peer[0]), "transformers onnx int8": peer_session(peer[1])}
    if threads > 1:  # one thread has no workers to spin
        fns |= {"wavssl-onnx fp32 spin": wavssl(False, True), "wavssl-onnx int8 spin": wavssl(True, True)}
    return fns


def table(record: dict) -> str:
    lines = [f"{'threads':>7s} {'engine':24s} {'RTF':>8s} {'CPU s/s':>8s}"]
    for t, res in record["by_threads"].items():
        for name in res["rtf"]:
            lines.append(f"{t:>7s} {name:24s} {res['rtf'][name]:8.4f} {res['cpu_seconds_per_audio_second'][name]:8.4f}")
        for pair, r in res["ratios"].items():
            lines.append(f"{t:>7s}   {pair}: wall {r['rtf']:.3f}x, CPU {r['cpu']:.3f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="clip length")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="intra-op thread counts")
    ap.add_argument("--runs", type=int, default=9, help="timed runs per engine (after one warm-up)")
    ap.add_argument("--work", type=Path, help="folder for the exported models (kept and reused; default: temporary)")
    ap.add_argument("--no-write", action="store_true", help=f"do not append to {RESULTS.relative_to(ROOT)}")
    a = ap.parse_args(argv)
    tmp = None
    if a.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="wavssl_sherpa_inference_")
        a.work = Path(tmp.name)
    a.work.mkdir(parents=True, exist_ok=True)
    log = lambda s: print(s, flush=True)  # noqa: E731
    load_start = load_average()
    clip, clip_kind = speech_clip(a.seconds, a.work)
    model_dir, export_meta = wavssl_model_dir(a.work, log)
    sherpa = sherpa_dir(model_dir, a.work, log)
    peer = transformers_onnx(transformers_model(a.work), a.work, log)
    by_threads: dict[str, dict] = {}
    for threads in a.threads:
        fns = engines(model_dir, sherpa, peer, clip, threads)
        texts = {k: fn() for k, fn in fns.items() if not k.startswith("transformers")}
        log(f"[bench] {threads} thread(s): timing {len(fns)} engines x {a.runs} runs on a {a.seconds:g} s clip ...")
        wall, cpu = time_all(fns, a.runs, a.seconds)
        rtf = {k: round(statistics.median(v), 4) for k, v in wall.items()}
        cpu_med = {k: round(statistics.median(v), 4) for k, v in cpu.items()}
        ratios = {f"{w} / {s}": {"rtf": round(rtf[w] / rtf[s], 3), "cpu": round(cpu_med[w] / cpu_med[s], 3)}
                  for w, s in PAIRS if w in fns}
        by_threads[str(threads)] = {
            "rtf": rtf, "cpu_seconds_per_audio_second": cpu_med, "ratios": ratios,
            "rtf_runs": {k: [round(x, 4) for x in v] for k, v in wall.items()},
            "same_text": {"fp32": texts["wavssl-onnx fp32"] == texts["sherpa-onnx fp32"],
                          "int8": texts["wavssl-onnx int8"] == texts["sherpa-onnx int8"]},
        }
    record = {
        "benchmark": "sherpa_inference", "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit("wavssl", "export"), "clip_seconds": a.seconds, "clip": clip_kind, "runs": a.runs,
        "model": "wav2vec2 BASE CTC, random weights (benchmarks/cpu_inference.py), the same graph in both runtimes; "
                 "peer: transformers Wav2Vec2ForCTC exported to ONNX",
        "by_threads": by_threads, "wavssl_export": export_meta,
        "load_average": {"start": load_start, "end": load_average()},
        "versions": _versions(), "cpu": cpu_name(), "cpu_flags": cpu_flags(), "cpu_count": os.cpu_count(),
    }
    print(table(record))
    if not a.no_write:
        append_result(RESULTS, record)
        print(f"[bench] appended to {RESULTS.relative_to(ROOT)}")
    if tmp is not None:
        tmp.cleanup()
    return record


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    import onnxruntime

    return {"onnxruntime (wavssl-onnx)": onnxruntime.__version__, "sherpa-onnx": version("sherpa-onnx"),
            "python": platform.python_version()}


if __name__ == "__main__":
    main()
