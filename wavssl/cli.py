"""``wavssl`` command line: thin subcommands over the library API."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from wavssl_onnx.cli import add_decoding_args, decoding_from_args

from . import config as C


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=sorted(C.PRESETS), help="starting configuration (default: tiny)")
    p.add_argument("--config", type=Path, help="TOML file of overrides applied over the preset")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one field, e.g. --set optim.max_updates=1000 (repeatable)")


def _overridden(cfg: C.Config, toml: Path | None, assignments: list[str]) -> C.Config:
    """``cfg`` with a TOML override file and then ``--set`` assignments applied."""
    if toml:
        cfg = C.merge(cfg, C.load_toml(toml))
    if assignments:
        cfg = C.merge(cfg, C.parse_set(assignments))
    return cfg


def _cmd_pretrain(a: argparse.Namespace) -> int:
    from .train.checkpoint import latest_checkpoint, load_config
    from .train.rundir import check_resume_config
    from .train.pretraining import pretrain
    from .train.trainer import LOG_FILE, last_logged

    if a.resume and latest_checkpoint(a.out) is not None:
        saved = load_config(a.out)
        cfg = _overridden(saved, a.config, a.assignments)  # a run continues with its own config
        if a.preset is not None:
            check_resume_config(a.out, saved, C.resolve(a.preset, a.config, a.assignments), f"--preset {a.preset}")
        check_resume_config(a.out, saved, cfg, "--config/--set")
    else:
        cfg = C.resolve(a.preset or "tiny", a.config, a.assignments)
    state = pretrain(a.data, a.out, cfg.validate(), resume=a.resume, device=a.device, progress=not a.no_progress)
    if os.environ.get("RANK", "0") == "0":
        print(f"[wavssl] done: {state.num_updates} updates in {state.wall_seconds / 60:.1f} min of training, "
              f"{state.nonfinite_total} non-finite steps skipped -> {a.out}")
        last = last_logged(a.out)
        if last:
            shown = {k: last[k] for k in ("loss", "accuracy", "code_perplexity") if k in last}
            print("[wavssl] last logged: " + ", ".join(f"{k} {v:.3f}" for k, v in shown.items())
                  + f" (every logged step in {a.out / LOG_FILE}; model in {a.out / 'model.safetensors'})")
        task = "--task classify --train SERIES" if cfg.model.frontend.kind == "sensor" else "--train train.tsv --valid dev.tsv"
        print(f"[wavssl] next: wavssl finetune {a.out} {task} --out runs/finetuned")
    return 0


def _cmd_finetune(a: argparse.Namespace) -> int:
    from .train.checkpoint import load_config

    cfg = load_config(a.run)
    if cfg.task != "pretrain":
        raise ValueError(f"{a.run}: a {cfg.task!r} run; fine-tune from a pretraining run")
    task = a.task or ("classify" if cfg.model.frontend.kind == "sensor" else "ctc")
    if (task == "classify") != (cfg.model.frontend.kind == "sensor"):
        raise ValueError(f"{a.run}: --task {task} needs a {'sensor' if task == 'classify' else 'speech'} model "
                         f"(this run's front end is {cfg.model.frontend.kind!r})")
    return (_finetune_classifier if task == "classify" else _finetune_recognizer)(a, cfg)


def _finetune_recognizer(a: argparse.Namespace, cfg: C.Config) -> int:
    from .train.asr import finetune

    cfg = _overridden(C.finetune_config(cfg, "ctc"), a.config, a.assignments + [f"train.seed={a.seed}"]).validate()
    result = finetune(None if a.scratch else a.run, a.train, a.out, cfg=cfg, valid=a.valid, resume=a.resume,
                      device=a.device, progress=not a.no_progress)
    st = result.state
    best = f", best valid {cfg.train.best_metric.upper()} {st.best_score:.4f} at update {st.best_update}" \
        if st.best_update >= 0 else ""
    if os.environ.get("RANK", "0") == "0":
        print(f"[wavssl] done: {st.num_updates} updates on {result.train_utterances} utterances "
              f"({result.train_seconds / 60:.1f} min of audio) in {st.wall_seconds / 60:.1f} min{best} -> {a.out}")
    return 0


def _finetune_classifier(a: argparse.Namespace, cfg: C.Config) -> int:
    from .data.sensor import draw_per_class
    from .train.classify import finetune
    from .train.pretraining import load_sensor_data

    sets = list(a.assignments) + [f"train.seed={a.seed}"] + (["classify.linear_probe=true"] if a.linear_probe else [])
    cfg = _overridden(C.finetune_config(cfg, "classify"), a.config, sets).validate()
    train = load_sensor_data(a.train, cfg, labels=a.train_labels)
    if a.k_per_class > 0:
        train = train.subset(draw_per_class(train, a.k_per_class, a.seed))
    valid = load_sensor_data(a.valid, cfg, labels=a.valid_labels) if a.valid is not None else None
    metrics = finetune(a.run, train, a.out, cfg=cfg, valid=valid, scratch=a.scratch, device=a.device,
                       progress=not a.no_progress)
    if metrics is not None:
        print(f"[wavssl] validation: accuracy {metrics.accuracy:.4f}  macro-F1 {metrics.macro_f1:.4f}  "
              f"({metrics.count} recordings)")
    print(f"[wavssl] done -> {a.out}")
    return 0


def _cmd_evaluate(a: argparse.Namespace) -> int:
    import dataclasses
    import json

    from .data.sensor import check_series
    from .models import SequenceClassifier
    from .modules.frontend import SensorEncoder
    from .train.checkpoint import load, load_config
    from .train.classify import score
    from .train.pretraining import load_sensor_data
    from .train.trainer import Distributed, resolve_device

    cfg = load_config(a.run)
    if cfg.task == "ctc":
        return _evaluate_recognizer(a, cfg)
    if cfg.task != "classify":
        raise ValueError(f"{a.run}: a {cfg.task!r} run; evaluate a fine-tuned recognizer or classifier run")
    model = load(a.run, resolve_device(a.device, Distributed()))
    assert isinstance(model, SequenceClassifier) and isinstance(model.encoder.frontend, SensorEncoder)  # a classify run
    data = load_sensor_data(a.data, cfg, labels=a.labels)
    check_series(data, channels=cfg.model.frontend.in_channels, min_length=model.encoder.frontend.receptive_field,
                 expected_by=f"the checkpoint {a.run}")
    metrics = score(model, data, model.class_names, where=str(a.data), device=next(model.parameters()).device)
    if a.json:
        print(json.dumps({"run": str(a.run), "data": str(a.data), **dataclasses.asdict(metrics)}))
    else:
        print(f"accuracy {metrics.accuracy:.4f}  macro-F1 {metrics.macro_f1:.4f}  ({metrics.count} recordings)")
    return 0


def _evaluate_recognizer(a: argparse.Namespace, cfg: C.Config) -> int:
    import json

    from wavssl_onnx.fileio import atomic_write_text

    from .data.text import read_transcribed
    from .models import CTCModel
    from .recognition import evaluate
    from .train.checkpoint import load
    from .train.trainer import Distributed, resolve_device

    a.language = a.language if a.language is not None else cfg.ctc.language
    model = load(a.run, resolve_device(a.device, Distributed()))
    assert isinstance(model, CTCModel)  # a ctc run
    data = read_transcribed(a.data, sample_rate=model.sample_rate, language=a.language)
    ev = evaluate(model, data, decoding=decoding_from_args(a, a.language))
    for where, reason in ev.skipped:
        print(f"wavssl evaluate: skipped {where}: {reason}", file=sys.stderr)
    if a.hypotheses:
        atomic_write_text(a.hypotheses, "path\treference\thypothesis\n" + "".join(
            f"{p}\t{r}\t{h}\n" for p, r, h in zip(ev.paths, ev.references, ev.hypotheses)))
    if a.json:
        print(json.dumps({"run": str(a.run), "data": str(a.data), **ev.summary()}))
    else:
        print(f"WER {100 * ev.wer.rate:.2f}%  CER {100 * ev.cer.rate:.2f}%  ({len(ev.references)} utterances, "
              f"{ev.wer.ref_units} words, {len(ev.skipped)} skipped)")
    return 0


def _cmd_transcribe(a: argparse.Namespace) -> int:
    import dataclasses
    import json

    from .data.audio import AudioError
    from .models import CTCModel
    from .train.checkpoint import load, load_config
    from .train.trainer import Distributed, resolve_device

    cfg = load_config(a.run)
    if cfg.task != "ctc":
        raise ValueError(f"{a.run}: a {cfg.task!r} run; transcribe with a fine-tuned recognizer (wavssl finetune)")
    model = load(a.run, resolve_device(a.device, Distributed()))
    assert isinstance(model, CTCModel)  # a ctc run
    model.decoding, failures = decoding_from_args(a, cfg.ctc.language), 0
    for path in a.audio:  # one file at a time: a bad file is reported and the others still come out
        try:
            hyp = model.transcribe([path])[0]
        except AudioError as e:
            failures += 1
            print(f"wavssl transcribe: error: {e}", file=sys.stderr)
            continue
        if a.json:
            print(json.dumps({"path": str(path), "text": hyp.text,
                              "words": [dataclasses.asdict(w) for w in hyp.words]}, ensure_ascii=False))
        else:
            print(f"{path}\t{hyp.text}")
    return 1 if failures else 0


def _cmd_export(a: argparse.Namespace) -> int:
    if a.format == "transformers":
        from .export_transformers import export_transformers

        onnx_only = [flag for flag, on in (("--int8", a.int8), ("--streaming", a.streaming), ("--portable", a.portable),
                                           ("--check-audio", bool(a.check_audio))) if on]
        if onnx_only:
            raise ValueError(f"{a.run}: {', '.join(onnx_only)} applies to ONNX exports, not --format transformers")
        out = export_transformers(a.run, a.out)
        print(f"[wavssl] wrote a transformers model to {out}")
    elif a.format == "sherpa-onnx":
        from .export_sherpa import export_sherpa_onnx

        if a.streaming:
            raise ValueError(f"{a.run}: --streaming: sherpa-onnx has no online CTC family that takes wavssl's "
                             "chunk-step graph (see export/README.md, 'Deploy with sherpa-onnx')")
        export_sherpa_onnx(a.run, a.out, int8=a.int8, fused=not a.portable, opset=a.opset,
                           check_audio=a.check_audio, atol=a.atol, per_channel=a.per_channel)
    else:
        from .export import export

        export(a.run, a.out, int8=a.int8, fused=not a.portable, opset=a.opset, check_audio=a.check_audio,
               atol=a.atol, per_channel=a.per_channel, exporter=a.exporter, streaming=a.streaming)
    return 0


def _cmd_import(a: argparse.Namespace) -> int:
    from .train.importers import import_checkpoint

    out = import_checkpoint(a.src, a.out, trust_checkpoint=a.trust_checkpoint, revision=a.revision)
    print(f"[wavssl] imported {a.src} -> {out}")
    return 0


def _cmd_config(a: argparse.Namespace) -> int:
    if a.task == "pretrain":
        cfg = C.resolve(a.preset or "tiny", a.config, a.assignments)
    else:  # a fine-tuning run: the preset's recipe for the task, then the overrides
        cfg = _overridden(C.finetune_config(C.preset(a.preset or "tiny"), a.task), a.config, a.assignments).validate()
    print(C.dump_toml(cfg))
    return 0


def _cmd_synth(a: argparse.Namespace) -> int:
    from .data.synth import synthesize_corpus

    files = synthesize_corpus(a.out, num_utterances=a.num, seed=a.seed, dev=a.dev, test=a.test)
    held_out = f" (+ {a.dev} dev in dev.tsv, {a.test} test in test.tsv)" if a.dev or a.test else ""
    print(f"[wavssl] {len(files)} synthetic utterances in {a.out}, transcripts in {a.out / 'transcripts.tsv'}{held_out}")
    return 0


def _cmd_demo(a: argparse.Namespace) -> int:
    try:
        from demo import Limits, build_app
    except ImportError as e:
        raise RuntimeError(f"the demo needs gradio and matplotlib: pip install -e '.[demo]' ({e})") from e

    given = {"max_file_mb": a.max_file_mb, "max_seconds": a.max_seconds, "max_live_seconds": a.max_live_seconds,
             "concurrency": a.concurrency}
    limits = Limits(**{k: v for k, v in given.items() if v is not None})
    app = build_app(a.model or None, limits=limits, threads=a.threads,
                    **({"examples": a.examples} if a.examples is not None else {}))
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stopped by SIGTERM: still remove the result files
    app.launch(server_name=a.host, server_port=a.port, share=False)
    return 0


def _cmd_quickstart(a: argparse.Namespace) -> int:
    from .quickstart import run

    run(a.data, a.out, progress=not a.no_progress)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wavssl", description="Self-supervised speech and sensor learning.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pretrain", help="pretrain on unlabeled audio or sensor series (the preset's front end decides)")
    p.add_argument("data", type=Path, help="audio: folder scanned recursively, or a TSV manifest with a path column; "
                   "sensor presets: a .npy/.npz/.csv/.ts file or a folder of them")
    p.add_argument("--out", type=Path, required=True, help="run directory")
    _config_args(p)
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_pretrain)

    p = sub.add_parser("finetune", help="fine-tune a pretrained run: a CTC recognizer (speech) or a classifier (sensor)")
    p.add_argument("run", type=Path, help="pretraining run directory")
    p.add_argument("--task", choices=["ctc", "classify"],
                   help="what to fine-tune for (default: ctc for speech models, classify for sensor models)")
    p.add_argument("--train", type=Path, required=True,
                   help="ctc: a manifest .tsv (header with path and text columns) or a folder of audio + .txt pairs; "
                        "classify: a .ts file with class labels, .npy/.npz (+ --train-labels), or a folder of "
                        "CSV files (+ labels.tsv inside or --train-labels)")
    p.add_argument("--train-labels", type=Path, help="labels CSV/TSV for --train")
    p.add_argument("--valid", type=Path, help="ctc: transcribed set scored every train.valid_every updates (best "
                   "checkpoint kept); classify: labelled series scored at the end")
    p.add_argument("--resume", action="store_true", help="ctc: continue the newest checkpoint in --out")
    p.add_argument("--valid-labels", type=Path, help="labels CSV/TSV for --valid")
    p.add_argument("--out", type=Path, required=True, help="recognizer or classifier run directory")
    p.add_argument("--k-per-class", type=int, default=0, metavar="K",
                   help="train on K random recordings per class of --train (0: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draw (classify), the head's initialisation "
                   "and batches")
    p.add_argument("--linear-probe", action="store_true", help="freeze the encoder; train only pooling + head")
    p.add_argument("--scratch", action="store_true", help="train the run's architecture from random initialisation")
    p.add_argument("--config", type=Path, help="TOML file of overrides (e.g. a [classify] table)")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one field, e.g. --set optim.max_updates=500 (repeatable)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_finetune)

    p = sub.add_parser("evaluate", help="score a fine-tuned run: WER and CER (recognizer) or accuracy and macro-F1 "
                       "(classifier)")
    p.add_argument("run", type=Path, help="recognizer or classifier run directory")
    p.add_argument("data", type=Path, help="transcribed set (manifest .tsv or folder of audio + .txt) or labelled "
                   "series (same forms as finetune --train)")
    p.add_argument("--labels", type=Path, help="classifier: labels CSV/TSV for DATA")
    p.add_argument("--language", help="recognizer: transcript normalisation (default: the run's ctc.language)")
    p.add_argument("--hypotheses", type=Path, help="recognizer: write path, reference and hypothesis per utterance")
    add_decoding_args(p)
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("transcribe", help="print the transcript of audio files with a fine-tuned recognizer")
    p.add_argument("run", type=Path, help="recognizer run directory")
    p.add_argument("audio", type=Path, nargs="+", help="audio files (anything libsndfile reads; resampled)")
    add_decoding_args(p)
    p.add_argument("--json", action="store_true", help="one JSON object per file with word times")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(func=_cmd_transcribe)

    p = sub.add_parser("export", help="export a fine-tuned recognizer or classifier to an ONNX model directory "
                       "(run it with wavssl-onnx, no PyTorch needed), a sherpa-onnx or a transformers directory")
    p.add_argument("run", type=Path, help="recognizer or classifier run directory (a pretraining run too with "
                   "--format transformers)")
    p.add_argument("--out", type=Path, required=True, help="model directory to write")
    p.add_argument("--format", choices=["onnx", "sherpa-onnx", "transformers"], default="onnx",
                   help="onnx: a wavssl-onnx model directory; sherpa-onnx: an omnilingual-ASR CTC model directory "
                   "for sherpa-onnx 2.x; transformers: a Wav2Vec2ForCTC (or Wav2Vec2ForPreTraining) directory")
    p.add_argument("--int8", action="store_true", help="also write model.int8.onnx (dynamic int8 quantization)")
    p.add_argument("--streaming", action="store_true", help="a chunk-by-chunk model with explicit state (the "
                   "recognizer must have been fine-tuned with model.context.attention_chunk > 0)")
    p.add_argument("--per-tensor", dest="per_channel", action="store_false",
                   help="int8: one weight scale per tensor (default: per output channel)")
    p.add_argument("--portable", action="store_true", help="standard ONNX ops only (no ONNX Runtime contrib ops; "
                   "slower)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset")
    p.add_argument("--exporter", choices=["dynamo", "torchscript"], default="dynamo",
                   help="torch.onnx exporter (dynamo falls back to torchscript when it fails)")
    p.add_argument("--check-audio", type=Path, nargs="*", default=[], help="recordings added to the parity check")
    p.add_argument("--atol", type=float, default=1e-3, help="parity tolerance on log-probabilities")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("import-checkpoint", help="convert a transformers or fairseq wav2vec2 checkpoint")
    p.add_argument("src", help="transformers model directory, fairseq .pt file, or a Hugging Face Hub id "
                   "(org/name; read through huggingface_hub's cache, HF_HUB_OFFLINE=1 reads only the cache)")
    p.add_argument("out", type=Path, help="wavssl run directory to write")
    p.add_argument("--revision", help="Hub branch, tag or commit of a Hub id (default: main)")
    p.add_argument("--trust-checkpoint", action="store_true", help="read a fairseq .pt that pickles objects "
                   "outside the safe list with full pickle, which can run code from the file (only for files you trust)")
    p.set_defaults(func=_cmd_import)

    p = sub.add_parser("config", help="print the resolved configuration as TOML")
    _config_args(p)
    p.add_argument("--task", choices=["pretrain", "ctc", "classify"], default="pretrain",
                   help="pretrain (default), or the fine-tuning run a model of the preset starts from")
    p.set_defaults(func=_cmd_config)

    p = sub.add_parser("quickstart", help="the whole job on built-in speech: generate, pretrain, fine-tune, export, "
                       "score a held-out test split (about 10 minutes on 2 cores)",
                       description="Generate English speech (espeak-ng, flite) with held-out dev and test splits, "
                       "pretrain the tiny model on its audio, fine-tune a CTC recognizer on its transcripts, export it "
                       "to ONNX (fp32 + int8), score the test split once and print a summary with the next commands. "
                       "Re-running the same command resumes a killed run.")
    p.add_argument("--data", type=Path, default=Path("data/speech"), help="corpus folder (default: data/speech)")
    p.add_argument("--out", type=Path, default=Path("runs/quickstart"), help="runs folder (default: runs/quickstart)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_quickstart)

    p = sub.add_parser("synth-corpus", help="write a built-in synthetic English speech corpus (espeak-ng / flite)",
                       description="Synthesize English utterances with espeak-ng and flite into OUT: 16-bit WAV files "
                       "and OUT/transcripts.tsv (path, text). --dev/--test add held-out splits (OUT/dev.tsv, "
                       "OUT/test.tsv) whose sentences and voices the training split never has.")
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("-n", "--num", type=int, default=200, help="number of training utterances")
    p.add_argument("--dev", type=int, default=0, help="held-out dev utterances (under OUT/dev, listed in OUT/dev.tsv)")
    p.add_argument("--test", type=int, default=0, help="held-out test utterances (OUT/test, OUT/test.tsv)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("demo", help="serve the browser demo (transcribe, live microphone, pretraining view, sensor "
                       "classifier; needs pip install -e '.[demo]')")
    p.add_argument("--model", type=Path, action="append", default=[], metavar="DIR",
                   help="ONNX model directory (wavssl.json), run directory (config.json) or a folder of them "
                        "(repeatable; default: every model under demo/models/)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--threads", type=int, help="ONNX Runtime threads per model (default: one per physical core)")
    p.add_argument("--examples", type=Path, help="folder with examples.tsv (path, text) clips and sensor series "
                   "(default: demo/examples/)")
    p.add_argument("--max-file-mb", type=float, help="largest upload (default 50)")
    p.add_argument("--max-seconds", type=float, help="longest audio per transcription (default 300)")
    p.add_argument("--max-live-seconds", type=int, help="longest live microphone stream (default 300)")
    p.add_argument("--concurrency", type=int, help="requests run at once per task, the rest queue (default 2)")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # before the heavy imports: --help stays fast
    from wavssl_onnx.audio import AudioError  # torch-free: `wavssl demo` never imports torch for this

    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe (wavssl config | head) surfaces here, not at exit
        return code
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        return 141  # as a process killed by SIGPIPE
    except (C.ConfigError, AudioError, OSError, ValueError, RuntimeError) as e:  # OSError: no space, permissions
        print(f"wavssl {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
