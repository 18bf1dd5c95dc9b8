"""``wavssl-onnx``: transcribe audio or classify series with an exported model, on a CPU, without PyTorch.

    wavssl-onnx transcribe MODEL_DIR a.wav b.flac ... [--int8] [--threads N] [--beam N --lm LM] [--json]
    wavssl-onnx stream MODEL_DIR a.wav [--chunk-seconds 2 --context-seconds 1] [--realtime] [--endpoint-silence 1.2] [--json]
    wavssl-onnx evaluate MODEL_DIR test.tsv [--int8] [--language ru] [--json]      # WER and CER
    wavssl-onnx classify MODEL_DIR series.npy more.csv ... [--int8] [--threads N] [--json]
    wavssl-onnx info MODEL_DIR

Exit status: 0 when every input came out, 1 when some input failed (each failure is reported and
the others still come out), 2 when the model directory or the arguments are unusable.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from typing import TYPE_CHECKING

from .manifest import read_manifest
from .model_dir import ModelDirError, load_model_info

if TYPE_CHECKING:
    from .decoding import Decoding


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", type=Path, help="directory written by `wavssl export`")
    p.add_argument("--int8", action="store_true", help="run model.int8.onnx (faster; written by export --int8)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: one per physical core)")
    p.add_argument("--spin", action="store_true", help="busy-waiting worker threads (ONNX Runtime's default; "
                   "faster only on an otherwise idle machine)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")


def add_decoding_args(p: argparse.ArgumentParser) -> None:
    """The decoding options of every transcribing command (``wavssl`` and ``wavssl-onnx``)."""
    p.add_argument("--beam", type=int, default=1, help="prefix beam width (1: greedy, unless --lm)")
    p.add_argument("--lm", type=Path, help="n-gram LM: a text file (one sentence per line) or a saved LM .json")
    p.add_argument("--lm-order", type=int, default=4, help="n-gram order when estimating --lm from text")
    p.add_argument("--lm-level", choices=["char", "word"], default="char", help="LM units when estimating from text")
    p.add_argument("--lm-weight", type=float, default=0.5, help="weight of the LM log-probability")
    p.add_argument("--word-bonus", type=float, default=0.0, help="added to a hypothesis' score per word")


def decoding_from_args(a: argparse.Namespace, language: str) -> Decoding:
    """The decoding method that :func:`add_decoding_args`'s options ask for (the LM of ``--lm``
    estimated or loaded for ``language``)."""
    from .decoding import choose_decoding
    from .lm import load_lm

    lm = None if a.lm is None else load_lm(a.lm, language=language, order=a.lm_order, level=a.lm_level)
    return choose_decoding(a.beam, lm, a.lm_weight, a.word_bonus)


def _cmd_transcribe(a: argparse.Namespace) -> int:
    from .recognizer import OfflineRecognizer

    rec = OfflineRecognizer.from_dir(a.model_dir, threads=a.threads, int8=a.int8, spin=a.spin, chunk_seconds=a.chunk_seconds,
                                     context_seconds=a.context_seconds, max_batch_seconds=a.batch_seconds)
    rec.decoding = decoding_from_args(a, rec.info.language)
    start = time.perf_counter()
    results = rec.run([str(p) for p in a.audio])
    elapsed = time.perf_counter() - start
    failed = 0
    for r in results:
        if r.error is not None:
            failed += 1
            print(f"wavssl-onnx transcribe: error: {r.error}", file=sys.stderr)
            if a.json:
                print(json.dumps(r.to_dict(), ensure_ascii=False), flush=True)
        elif a.json:
            print(json.dumps(r.to_dict(), ensure_ascii=False), flush=True)
        else:
            assert r.hypothesis is not None  # no error: a hypothesis
            print(f"{r.source}\t{r.hypothesis.text}", flush=True)
    audio = sum(r.duration for r in results if r.ok)
    if a.verbose and audio > 0:
        print(f"wavssl-onnx: {audio:.1f} s of audio in {elapsed:.2f} s (RTF {elapsed / audio:.3f})", file=sys.stderr)
    return 1 if failed else 0


def _cmd_stream(a: argparse.Namespace) -> int:
    from .audio import AudioError, stream_audio
    from .recognizer import OnlineRecognizer, Result
    from .streaming import EndpointRules

    rec = OnlineRecognizer.from_dir(a.model_dir, threads=a.threads, int8=a.int8, spin=a.spin,
                                    chunk_seconds=a.chunk_seconds, context_seconds=a.context_seconds)
    rec.decoding = decoding_from_args(a, rec.info.language)
    rules = EndpointRules(a.endpoint_silence * 2, a.endpoint_silence) if a.endpoint_silence else None
    failed = 0
    for path in a.audio:
        stream, shown, start = rec.create_stream(), "", time.perf_counter()
        try:
            for block in stream_audio(path, rec.sample_rate, block_seconds=a.block_ms / 1000):
                if a.realtime:  # pace the file like a live source
                    time.sleep(max(0.0, (stream.samples + len(block)) / rec.sample_rate - (time.perf_counter() - start)))
                stream.accept_waveform(rec.sample_rate, block)
                hyp = rec.decode(stream)
                text, t = hyp.text, stream.samples / rec.sample_rate
                if rules is not None and rec.is_endpoint(stream, rules):
                    if text:  # one utterance done: its text with word times, then a fresh one
                        print(json.dumps({"path": str(path), "audio_seconds": round(t, 3), "utterance": text,
                                          "words": [w.to_dict() for w in hyp.words]}, ensure_ascii=False)
                              if a.json else f"{path}\t{t:7.2f}s\tutterance\t{text}", flush=True)
                    rec.reset(stream)
                    shown = ""
                    continue
                if text == shown:
                    continue
                shown = text
                print(json.dumps({"path": str(path), "audio_seconds": round(t, 3), "partial": shown},
                                 ensure_ascii=False) if a.json else f"{path}\t{t:7.2f}s\t{shown}", flush=True)
            stream.input_finished()
            final = rec.decode(stream)
        except AudioError as e:
            failed += 1
            print(f"wavssl-onnx stream: error: {e}", file=sys.stderr)
            continue
        result = Result(str(path), final, duration=stream.samples / rec.sample_rate)
        print(json.dumps({**result.to_dict(), "final": True}, ensure_ascii=False) if a.json
              else f"{path}\tfinal\t{final.text}", flush=True)
    return 1 if failed else 0


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from .metrics import cer, wer
    from .recognizer import OfflineRecognizer
    from .text import normalize_text

    rec = OfflineRecognizer.from_dir(a.model_dir, threads=a.threads, int8=a.int8, spin=a.spin)
    language = a.language if a.language is not None else rec.info.language
    rows = [(r.path, normalize_text(r.text, language or None)) for r in read_manifest(a.manifest, text=True)]
    rows = [(p, t) for p, t in rows if p and t]
    start = time.perf_counter()
    rec.decoding = decoding_from_args(a, language)
    results = rec.run([p for p, _ in rows])
    elapsed = time.perf_counter() - start
    refs, hyps = [], []
    for (_, ref), r in zip(rows, results):
        if r.error is not None:
            print(f"wavssl-onnx evaluate: skipped: {r.error}", file=sys.stderr)
            continue
        assert r.hypothesis is not None  # no error: a hypothesis
        refs.append(ref)
        hyps.append(r.hypothesis.text)
    w, c = wer(refs, hyps), cer(refs, hyps)
    audio = sum(r.duration for r in results if r.ok)
    summary = {"model_dir": str(a.model_dir), "manifest": str(a.manifest), "int8": a.int8, "wer": w.rate,
               "cer": c.rate, "utterances": len(refs), "words": w.ref_units, "skipped": len(rows) - len(refs),
               "rtf": elapsed / audio if audio else None}
    if a.json:
        print(json.dumps(summary))
    else:
        print(f"WER {100 * w.rate:.2f}%  CER {100 * c.rate:.2f}%  ({len(refs)} utterances, {w.ref_units} words, "
              f"{summary['skipped']} skipped, RTF {summary['rtf'] or 0:.3f})")
    return 0


def _cmd_classify(a: argparse.Namespace) -> int:
    from .classifier import Classifier

    clf = Classifier.from_dir(a.model_dir, threads=a.threads, int8=a.int8, spin=a.spin)
    failed = 0
    for r in clf.run(a.series):
        if r.error is not None:
            failed += 1
            print(f"wavssl-onnx classify: error: {r.error}", file=sys.stderr)
            if a.json:
                print(json.dumps(r.to_dict(clf.class_names), ensure_ascii=False), flush=True)
        elif a.json:
            print(json.dumps(r.to_dict(clf.class_names), ensure_ascii=False), flush=True)
        else:
            assert r.probabilities is not None
            top = sorted(zip(clf.class_names, r.probabilities), key=lambda t: -t[1])[: a.top]
            print(f"{r.source}\t{r.label}\t" + "  ".join(f"{n}:{p:.4f}" for n, p in top), flush=True)
    return 1 if failed else 0


def _cmd_info(a: argparse.Namespace) -> int:
    from .cpu import cpu_flags, int8_kernel, int8_saturation_risk

    info = load_model_info(a.model_dir)
    out = info.to_dict()
    if "int8" in info.files:
        flags = cpu_flags()
        limit = (info.export.get("int8") or {}).get("weight_limit")
        out["this_cpu"] = {"flags": flags, "int8_kernel": int8_kernel(flags),
                           "int8_saturation_risk": int8_saturation_risk(limit, flags)}
    print(json.dumps(out, ensure_ascii=False, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wavssl-onnx", description="CPU inference for exported wavssl models "
                                     "(ONNX Runtime, no PyTorch).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("transcribe", help="transcribe audio files with an exported recognizer")
    _model_args(p)
    p.add_argument("audio", type=Path, nargs="+", help="audio files (anything libsndfile reads; any rate, any "
                   "channels)")
    add_decoding_args(p)
    p.add_argument("--chunk-seconds", type=float, default=30.0, help="long files: seconds kept per window")
    p.add_argument("--context-seconds", type=float, default=4.0, help="long files: context each side of a window")
    p.add_argument("--batch-seconds", type=float, default=60.0, help="padded audio per batch of short files")
    p.add_argument("-v", "--verbose", action="store_true", help="print the real-time factor to stderr")
    p.set_defaults(func=_cmd_transcribe)

    p = sub.add_parser("stream", help="recognise audio files as if they arrived live: partial transcripts while "
                       "the audio plays, then the final one")
    _model_args(p)
    p.add_argument("audio", type=Path, nargs="+", help="audio files (anything libsndfile reads)")
    add_decoding_args(p)
    p.add_argument("--chunk-seconds", type=float, default=2.0, help="offline models: seconds recognised per "
                   "window (a model exported with --streaming runs by its own chunks)")
    p.add_argument("--context-seconds", type=float, default=1.0, help="offline models: context each side of a "
                   "window; text lags the audio by at most chunk + context")
    p.add_argument("--block-ms", type=float, default=100.0, help="audio pushed at a time")
    p.add_argument("--realtime", action="store_true", help="pace the file at real time, like a microphone")
    p.add_argument("--endpoint-silence", type=float, default=0.0, metavar="S",
                   help="cut the stream into utterances: one ends after S seconds of silence following text (2S "
                        "with no text, or 20 s in all); each is printed as it ends (0: off)")
    p.set_defaults(func=_cmd_stream)

    p = sub.add_parser("evaluate", help="WER and CER of an exported recognizer on a manifest (path and text columns)")
    _model_args(p)
    p.add_argument("manifest", type=Path, help="TSV with a header naming path and text columns")
    p.add_argument("--language", help="transcript normalisation (default: the model's)")
    add_decoding_args(p)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("classify", help="class probabilities of series files with an exported classifier")
    _model_args(p)
    p.add_argument("series", type=Path, nargs="+", help=".npy ((C, T) or (N, C, T)), .npz, .ts, or .csv/.tsv (rows = "
                   "time steps, columns = channels; a time column is interpolated onto the model's rate)")
    p.add_argument("--top", type=int, default=5, help="classes shown per series (text output)")
    p.set_defaults(func=_cmd_classify)

    p = sub.add_parser("info", help="print a model directory's description (wavssl.json)")
    p.add_argument("model_dir", type=Path)
    p.set_defaults(func=_cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ModelDirError, FileNotFoundError, ValueError) as e:
        print(f"wavssl-onnx {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
