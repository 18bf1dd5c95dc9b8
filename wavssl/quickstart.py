"""The whole job on built-in data, in one command (``wavssl quickstart``): generate speech, pretrain,
fine-tune, export, score a held-out test split and print where everything went.

Steps (each resumes or is skipped when its output is already complete, so a killed run is re-run
with the same command):

1. ``synth-corpus``: English sentences spoken by espeak-ng and flite voices
   (:mod:`wavssl.data.synth`): a training split plus ``dev`` and ``test`` splits whose sentences
   and voices training never sees.
2. Pretraining (``tiny`` preset) on the training split's audio only, without its transcripts.
3. CTC fine-tuning on the training split's transcripts, validated on ``dev`` (the best checkpoint
   by CER is kept).
4. ``wavssl export --int8``: the ONNX model directory the torch-free runtime and the demo run.
5. A character n-gram LM estimated from the training transcripts (``model/lm.json``), its weight
   chosen on ``dev``; then the ``test`` split scored once by the exported int8 model, greedy and with
   the LM (WER, CER), and one test clip shown.

Everything lands under ``OUT`` (default ``runs/quickstart``): ``ssl/`` (pretraining run), ``asr/``
(recognizer run), ``model/`` (ONNX) and ``summary.json``; the corpus under ``DATA``
(default ``data/speech``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import SupportsFloat

from wavssl_onnx.fileio import atomic_write_text
from wavssl_onnx.model_dir import LM_FILE

from . import config as C


@dataclass
class QuickstartConfig:
    """Sizes and settings of the built-in run (chosen on the dev split; see docs/ARCHITECTURE.md)."""

    train_utterances: int = 1200
    """Training split size (about 80 minutes of speech)."""
    dev_utterances: int = 40
    test_utterances: int = 40
    seed: int = 0
    pretrain: list[str] = field(default_factory=lambda: ["optim.max_updates=600"])
    """``--set`` overrides of the ``tiny`` preset for pretraining."""
    finetune: list[str] = field(default_factory=lambda: ["ctc.language=en", "optim.max_updates=1200",
                                                         "train.valid_every=200"])
    """``--set`` overrides of the ``tiny`` preset's fine-tuning recipe (:func:`wavssl.config.finetune_config`)."""
    lm_order: int = 6
    """Order of the character n-gram LM estimated from the training transcripts."""
    lm_weights: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)
    """LM weights tried on dev (0: greedy decoding, no LM); the best dev CER is used on test."""
    beam: int = 8


def _say(message: str) -> None:
    print(f"[wavssl quickstart] {message}", flush=True)


def run(data: str | Path = "data/speech", out: str | Path = "runs/quickstart", *,
        qc: QuickstartConfig | None = None, progress: bool = True) -> dict[str, object]:
    """Run (or finish) the built-in job; returns the summary also written to ``OUT/summary.json``."""
    from wavssl_onnx import NGramLM, OfflineRecognizer, read_audio
    from wavssl_onnx.selection import Setting, choose_decoding_on_dev, decode_texts, grid, score

    from .data.synth import synthesize_corpus
    from .data.text import read_transcribed
    from .export import export
    from .train.asr import finetune
    from .train.pretraining import pretrain
    from .train.trainer import last_logged

    qc = qc or QuickstartConfig()
    data, out = Path(data), Path(out)
    times: dict[str, float] = {}
    start = time.perf_counter()

    _say(f"1/5 generating speech in {data} ({qc.train_utterances} training, {qc.dev_utterances} dev and "
         f"{qc.test_utterances} test utterances; dev/test sentences and voices are not in training)")
    synthesize_corpus(data, num_utterances=qc.train_utterances, dev=qc.dev_utterances, test=qc.test_utterances,
                      seed=qc.seed)
    times["generate"] = time.perf_counter() - start

    t = time.perf_counter()
    ssl_dir = out / "ssl"
    cfg = C.resolve("tiny", None, qc.pretrain).validate()
    _say(f"2/5 pretraining ({cfg.optim.max_updates} updates, no transcripts) -> {ssl_dir}")
    state = pretrain(data / "transcripts.tsv", ssl_dir, cfg, resume=True, progress=progress)
    times["pretrain"] = time.perf_counter() - t
    ssl_last = last_logged(ssl_dir)

    t = time.perf_counter()
    asr_dir = out / "asr"
    ft_cfg = C.merge(C.finetune_config(cfg, "ctc"), C.parse_set(qc.finetune)).validate()
    _say(f"3/5 fine-tuning a CTC recognizer ({ft_cfg.optim.max_updates} updates, best dev CER kept) -> {asr_dir}")
    result = finetune(ssl_dir, data / "transcripts.tsv", asr_dir, cfg=ft_cfg, valid=data / "dev.tsv",
                      resume=True, progress=progress)
    times["finetune"] = time.perf_counter() - t

    t = time.perf_counter()
    model_dir = out / "model"
    _say(f"4/5 exporting to ONNX (fp32 + int8, checked against PyTorch) -> {model_dir}")
    export(asr_dir, model_dir, int8=True, log=None)
    times["export"] = time.perf_counter() - t

    t = time.perf_counter()
    language = ft_cfg.ctc.language
    lm = NGramLM.from_lines([item.text for item in read_transcribed(data / "transcripts.tsv", language=language).items],
                            order=qc.lm_order, level="char")
    lm.save(model_dir / LM_FILE)
    rec = OfflineRecognizer.from_dir(model_dir, int8=True)
    dev, test = (read_transcribed(data / f"{split}.tsv", language=language) for split in ("dev", "test"))
    _say(f"5/5 choosing the LM weight on dev, then scoring the test split once (int8 ONNX; {qc.lm_order}-gram "
         f"character LM of the training transcripts in {model_dir / LM_FILE})")
    dev_lp = rec.log_probs([read_audio(item.path, rec.sample_rate) for item in dev.items])
    dev_refs = [item.text for item in dev.items]

    choice = choose_decoding_on_dev(dev_lp, dev_refs, rec.vocab, lm, grid(qc.lm_weights, beams=(qc.beam,)),
                                    language=language, frame_shift=rec.frame_shift)
    dev_cer = {s.lm_weight: sc.cer for s, sc in choice.dev.items()}
    lm_weight = choice.best.lm_weight
    test_lp = rec.log_probs([read_audio(item.path, rec.sample_rate) for item in test.items])
    refs = [item.text for item in test.items]
    greedy_hyps, lm_hyps = (decode_texts(test_lp, rec.vocab, setting, lm, language=language, frame_shift=rec.frame_shift)
                            for setting in (Setting(), choice.best))
    greedy, with_lm = score(refs, greedy_hyps), score(refs, lm_hyps)
    times["test"] = time.perf_counter() - t
    times["total"] = time.perf_counter() - start

    summary: dict[str, object] = {
        "data": str(data), "ssl_run": str(ssl_dir), "recognizer_run": str(asr_dir), "onnx_model": str(model_dir),
        "pretrain_updates": state.num_updates, "pretrain_last_log": ssl_last,
        "finetune_updates": result.state.num_updates, "best_dev_cer": result.state.best_score,
        "best_update": result.state.best_update,
        "dev_cer_by_lm_weight": dev_cer, "lm_weight": lm_weight, "lm": str(model_dir / LM_FILE),
        "test_utterances": len(refs), "test_greedy": {"wer": greedy.wer, "cer": greedy.cer},
        "test_lm": {"wer": with_lm.wer, "cer": with_lm.cer, "beam": qc.beam, "lm_weight": lm_weight},
        "example": {"path": str(test.items[0].path), "reference": refs[0], "greedy": greedy_hyps[0],
                    "with_lm": lm_hyps[0]},
        "seconds": {k: round(v, 1) for k, v in times.items()}, "config": asdict(qc),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    _print_summary(summary)
    return summary


def _print_summary(s: dict[str, object]) -> None:
    ex = s["example"]
    assert isinstance(ex, dict)
    secs, greedy, with_lm, best_cer = s["seconds"], s["test_greedy"], s["test_lm"], s["best_dev_cer"]
    assert isinstance(secs, dict) and isinstance(greedy, dict) and isinstance(with_lm, dict)
    assert isinstance(best_cer, SupportsFloat)
    print(f"""
== wavssl quickstart: done in {secs['total'] / 60:.1f} min ==
  pretraining run   {s['ssl_run']}  ({s['pretrain_updates']} updates)
  recognizer run    {s['recognizer_run']}  (best dev CER {100 * float(best_cer):.1f}% at update {s['best_update']})
  ONNX model        {s['onnx_model']}  (fp32 + int8, runs without PyTorch)
  test split        {s['test_utterances']} utterances, sentences and espeak-ng voices never seen in training:
      greedy        CER {100 * greedy['cer']:.1f}%  WER {100 * greedy['wer']:.1f}%
      with the LM   CER {100 * with_lm['cer']:.1f}%  WER {100 * with_lm['wer']:.1f}%  \
(beam {with_lm['beam']}, LM weight {with_lm['lm_weight']} chosen on dev)
  example           {ex['path']}
      reference     {ex['reference']}
      greedy        {ex['greedy']}
      with the LM   {ex['with_lm']}

Next:
  wavssl-onnx transcribe {s['onnx_model']} YOUR.wav --int8 --beam 8 --lm {s['lm']}   # no PyTorch
  wavssl demo --model {s['onnx_model']} --model {s['ssl_run']}       # the browser demo on this model
  wavssl finetune {s['ssl_run']} --train YOUR.tsv --out runs/mine    # your own transcribed speech
""", flush=True)
