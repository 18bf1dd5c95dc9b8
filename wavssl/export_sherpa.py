"""Export a wavssl CTC recognizer for sherpa-onnx (the k2-fsa C++ runtime over ONNX Runtime, with
bindings for Python, C, C++, Go, C#, Java/Kotlin, Swift, Dart, JavaScript/WebAssembly, ...).

:func:`export_sherpa_onnx` writes a directory that sherpa-onnx 2.x loads as an offline model of its
**omnilingual-ASR CTC** family (``OfflineRecognizer.from_omnilingual_asr_ctc`` in Python,
``--omnilingual-asr-model`` on the command line): the one sherpa-onnx family that feeds a raw
waveform to the network, as wav2vec2-style models need. Its contract (sherpa-onnx 2.0.1,
``offline-omnilingual-asr-ctc-model.cc`` and ``offline-recognizer-ctc-impl.h``):

- **input**: one tensor, the graph's first input, float32 ``(1, T)``: the utterance resampled to
  16 kHz and **standardised by sherpa-onnx** (zero mean, unit variance over the whole utterance,
  variance floor 1e-5). One utterance per run (batching is off for this family); inputs under 400
  samples get an empty result without running the model.
- **output**: the graph's first output, float32 ``(1, F, V)`` scores; sherpa-onnx takes the argmax
  per frame (greedy CTC only), collapses repeats and drops the blank. V is read from the output's
  static last dimension. Timestamps are frame index x 20 ms.
- **blank**: ``<blk>`` in ``tokens.txt`` if present, else id 0.
- **tokens.txt**: ``symbol id`` per line; a line holding only an id is the space (the omnilingual
  models' spelling), and a symbol starting with U+2581 has it replaced by a space. Token strings are
  concatenated; one leading space is removed.
- **metadata**: none is required (``model_type`` and the rest are informational).

**The graph is wavssl's own.** The run is exported with :func:`wavssl.export.export` (its parity
check against PyTorch, its int8 scheme), or an existing wavssl-onnx model directory is taken as it
is; then each graph's ``lengths`` input becomes ``Shape(waveform)`` (every row whole) and the
``frame_lengths`` output is dropped: ``waveform (B, T) -> log_probs (B, F, V)``, otherwise node for
node the graph that ``wavssl-onnx`` runs (in-graph standardisation when the model was trained on
standardised audio, fused ONNX Runtime ops). Log-probabilities are valid CTC scores for sherpa-onnx
(same argmax as logits).

**Which models qualify.** sherpa-onnx standardises every utterance before the model, so the result
matches wavssl only when that cannot change the transcripts:

- trained on standardised audio (``data.normalize = true``; any front end): the graph standardises
  again, which leaves standardised audio as it is (identical up to float rounding, except for
  near-silent inputs, variance < ~1e-5, where sherpa-onnx's larger variance floor takes over).
  fp32 transcripts match; int8 ones can differ by a character on rare near-tie frames, because
  dynamic int8 quantisation of activations magnifies that last-bit rounding (and sherpa-onnx's
  bundled ONNX Runtime release rounds its int8 kernels differently from the Python wheel's):
  measured 1 clip of 40, one character, on a trained tiny recognizer;
- trained on raw-level audio with the wav2vec2 conv front end and its utterance-wide GroupNorm on the
  first block (``norm_mode = "default"``: BASE, and fairseq/transformers BASE imports): that block
  removes any gain and DC offset of the input, except through GroupNorm's 1e-5 variance floor (which
  moves log-probabilities by ~1e-4..1e-3);
- anything else (log-mel or per-frame LayerNorm front end on raw-level audio, a rate other than
  16 kHz, a classifier, a streaming export) raises :class:`~wavssl.export.ExportError` saying why.

**Parity**: the converted graph on each check input standardised as sherpa-onnx does, against the
wavssl graph on the raw input (what ``wavssl-onnx`` computes), from the shortest input to 60 s plus
any ``check_audio``; beyond ``atol`` on log-probabilities the export fails and writes nothing. For a
model directory (no PyTorch model to inspect) this is also how a level-dependent model is caught.

**Streaming is not exported** (see :data:`STREAMING_NOTE`): none of sherpa-onnx's online CTC
families can run wavssl's chunk step graph.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from wavssl_onnx.fileio import make_temp_dir
from wavssl_onnx.model_dir import CONFIG_FILE, INT8_FILE, MODEL_FILE, ModelDirError, ModelInfo, load_model_info
from wavssl_onnx.vocab import Vocabulary

from .export import export
from .export_graphs import ExportError, load_for_export, read_check_audio, require_onnx, wavssl_version
from .export_parity import PARITY_ATOL, ParityRow, check_inputs, compare, format_parity, parity_session
from .models import CTCModel
from .onnx_int8 import quantize_int8

SHERPA_SAMPLE_RATE = 16000
"""The rate sherpa-onnx resamples every input to for this model family."""
SHERPA_MIN_SAMPLES = 400
"""sherpa-onnx returns an empty result for inputs shorter than this, without running the model."""
SHERPA_VARIANCE_FLOOR = 1e-5
"""sherpa-onnx standardises each utterance as (x - mean) / sqrt(var + this)."""
SHERPA_FRAME_SHIFT = 0.02
"""Seconds per output frame that sherpa-onnx assumes for this family's timestamps."""
SHERPA_MODEL_TYPE = "omnilingual-asr"
"""``model_type`` metadata of the family (informational for sherpa-onnx 2.0.1)."""
MIN_SHERPA_VERSION = "2.0.1"
"""Oldest sherpa-onnx release this export was checked with (PyPI wheel)."""
TOKENS_FILE = "tokens.txt"
README_FILE = "README.md"
INPUT_NAME = "waveform"
OUTPUT_NAME = "log_probs"
WAVSSL_INPUTS = ["waveform", "lengths"]
WAVSSL_OUTPUTS = ["log_probs", "frame_lengths"]
"""I/O of the wavssl-onnx recognizer graph that is converted."""

STREAMING_NOTE = (
    "Streaming: not available through sherpa-onnx. Its online CTC families are zipformer2-ctc, "
    "nemo-ctc and wenet-ctc, which take 80-dim Kaldi fbank frames computed by sherpa-onnx (10 ms "
    "shift) plus family-specific cache tensors described by their own metadata, and t-one-ctc, which "
    "takes raw audio but resampled to 8 kHz, in 300 ms int32 chunks, with a single float16 state "
    "vector and 30 ms output frames hard-coded. wavssl's chunk step graph (wavssl export --streaming) "
    "needs 16 kHz audio through its own front end (frontend.onnx) and a float32 positional-conv "
    "cache, attention key/value cache and frame counter, so no online family can run it. With "
    "sherpa-onnx, use its VAD + offline recognizer (simulated streaming) with this model, or "
    "wavssl-onnx's OnlineRecognizer for true chunk-by-chunk streaming."
)


# ------------------------------------------------------------------------------------ contract


def sherpa_unsupported(model: nn.Module, sample_rate: int | None = None) -> str | None:
    """Why sherpa-onnx's omnilingual-ASR CTC family cannot run ``model`` with wavssl's transcripts,
    or None when it can (see the module docstring)."""
    from .modules.frontend import FbankEncoder, WaveformEncoder, block_parts

    if not isinstance(model, CTCModel):
        return f"sherpa-onnx export applies to speech recognizers (CTC), not a {type(model).__name__}"
    if (why := _rate_unsupported(int(sample_rate or model.sample_rate))) is not None:
        return why
    if model.normalize_audio:
        return None
    frontend = model.encoder.frontend
    if isinstance(frontend, WaveformEncoder):
        norm = block_parts(frontend.blocks[0])[1]
        if isinstance(norm, nn.GroupNorm) and norm.num_groups == norm.num_channels:
            return None
        what = "per-frame LayerNorm waveform front end (norm_mode=layer_norm)"
    elif isinstance(frontend, FbankEncoder):
        what = "log-mel front end"
    else:
        what = f"{type(frontend).__name__} front end"
    return (f"sherpa-onnx standardises every utterance (zero mean, unit variance) before the model, but this "
            f"recognizer was trained on unstandardised audio and its {what} depends on the input level; "
            f"fine-tune it with data.normalize=true to deploy it with sherpa-onnx")


def _rate_unsupported(rate: int) -> str | None:
    if rate != SHERPA_SAMPLE_RATE:
        return (f"the model takes {rate} Hz audio but sherpa-onnx resamples every input to "
                f"{SHERPA_SAMPLE_RATE} Hz for this model family")
    return None


def _dir_unsupported(info: ModelInfo) -> str | None:
    """Why a wavssl-onnx model directory cannot be converted (before any level check), or None."""
    if info.kind != "ctc":
        return f"sherpa-onnx export applies to speech recognizers (CTC), not a {info.kind} model"
    if info.streaming is not None:
        return ("a streaming export (chunk step graph); sherpa-onnx cannot run it (see STREAMING_NOTE in "
                "wavssl.export_sherpa): export the run without --streaming")
    if info.inputs != WAVSSL_INPUTS or info.outputs[:1] != WAVSSL_OUTPUTS[:1]:
        return f"unexpected graph inputs {info.inputs} / outputs {info.outputs} (expected {WAVSSL_INPUTS})"
    return _rate_unsupported(info.sample_rate)


def sherpa_tokens(vocab: Vocabulary) -> str:
    """``tokens.txt`` for sherpa-onnx: ``symbol id`` per line; the blank (id 0) as ``<blk>``, the
    word delimiter as a line holding only its id (sherpa-onnx reads that as a space).

    Raises:
        ExportError: a token that sherpa-onnx would read differently (one starting with U+2581, or a
            character set that its byte-level-BPE detection would take for byte tokens).
    """
    lines = []
    for i, token in enumerate(vocab.tokens):
        if i == vocab.blank_id:
            lines.append(f"<blk> {i}")
        elif i == vocab.delimiter_id:
            lines.append(f" {i}")
        else:
            if token.startswith("\u2581"):
                raise ExportError(f"{TOKENS_FILE}: token {token!r} starts with U+2581, which sherpa-onnx turns into a "
                                  f"space")
            lines.append(f"{token} {i}")
    symbols = [t for i, t in enumerate(vocab.tokens) if i not in (vocab.blank_id, vocab.delimiter_id)] + ["<blk>"]
    if max(max(t.encode("utf-8")) for t in symbols) == 0xC6:  # sherpa-onnx's SymbolTable.IsByteBpe
        raise ExportError(f"{TOKENS_FILE}: the vocabulary's largest UTF-8 byte is 0xC6, which makes sherpa-onnx "
                          f"decode its tokens as byte-level BPE and garble the text")
    return "\n".join(lines) + "\n"


def sherpa_standardize(wave: np.ndarray) -> np.ndarray:
    """What sherpa-onnx does to an utterance (T,) before the model: (x - mean) / sqrt(var + 1e-5),
    float32 (T,)."""
    x = np.asarray(wave, dtype=np.float64)
    centred = x - x.mean()
    return (centred / np.sqrt((centred * centred).mean() + SHERPA_VARIANCE_FLOOR)).astype(np.float32)


# ------------------------------------------------------------------------------------ graph


def whole_rows(proto: Any) -> None:
    """Rewrite a wavssl-onnx recognizer graph (in memory) into sherpa-onnx's form: the ``lengths``
    input (B,) becomes ``Expand(Shape(waveform)[1], Shape(waveform)[0])`` (every row whole), only the
    ``log_probs`` output is kept, and nodes that fed nothing but ``frame_lengths`` are removed."""
    import onnx
    from onnx import helper

    graph = proto.graph
    names = [x.name for x in graph.input]
    if names != WAVSSL_INPUTS or [x.name for x in graph.output][:1] != WAVSSL_OUTPUTS[:1]:
        raise ExportError(f"{MODEL_FILE}: expected inputs {WAVSSL_INPUTS} and output {WAVSSL_OUTPUTS[0]}, got "
                          f"{names} / {[x.name for x in graph.output]}")
    wave, lengths = WAVSSL_INPUTS
    graph.input.remove(graph.input[1])
    front = [helper.make_node("Shape", [wave], ["sherpa_batch"], start=0, end=1, name="sherpa_batch"),
             helper.make_node("Shape", [wave], ["sherpa_time"], start=1, end=2, name="sherpa_time"),
             helper.make_node("Expand", ["sherpa_time", "sherpa_batch"], [lengths], name="sherpa_lengths")]
    while len(graph.output) > 1:
        graph.output.remove(graph.output[-1])
    needed = {graph.output[0].name}
    kept = []
    for node in reversed(list(front) + list(graph.node)):  # nodes are in topological order
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    used = {i for node in graph.node for i in node.input}
    keep_init = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep_init)
    onnx.checker.check_model(proto)


def sherpa_metadata(info: ModelInfo, extra: dict[str, Any]) -> dict[str, str]:
    """``metadata_props`` of the sherpa-onnx graphs (all informational for sherpa-onnx)."""
    assert info.vocabulary is not None
    props: dict[str, Any] = {
        "model_type": SHERPA_MODEL_TYPE, "version": "1", "model_author": "wavssl",
        "comment": "wavssl CTC recognizer for sherpa-onnx's omnilingual-asr CTC family",
        "vocab_size": len(info.vocabulary), "sample_rate": info.sample_rate,
        "frame_shift_samples": info.frame_shift_samples, "min_samples": info.min_samples,
        "normalize_audio": int(info.normalize_audio), "language": info.language, **extra,
    }
    return {key: str(value) for key, value in props.items()}


def _convert(src: Path, dst: Path, props: dict[str, str]) -> None:
    """wavssl-onnx graph file -> sherpa-onnx graph file with ``props`` as its metadata."""
    import onnx

    proto = onnx.load(str(src))
    whole_rows(proto)
    del proto.metadata_props[:]
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(dst))


# ------------------------------------------------------------------------------------ parity


def sherpa_parity(path: Path, reference: Path, info: ModelInfo, audio: Sequence[np.ndarray] = ()) -> list[ParityRow]:
    """Run the sherpa-onnx graph at ``path`` on each check input as sherpa-onnx feeds it (one
    utterance, standardised) and the wavssl-onnx graph ``reference`` on the raw input; one row per
    utterance of at least :data:`SHERPA_MIN_SAMPLES` (each item of a padded check batch on its own:
    sherpa-onnx never batches this family)."""
    session, ref_session = parity_session(path), parity_session(reference)
    rows = []
    for label, items in check_inputs(info, audio):
        for k, wave in enumerate(items):
            if len(wave) < SHERPA_MIN_SAMPLES:
                continue
            got = session.run(None, {INPUT_NAME: sherpa_standardize(wave)[None]})[0]
            want, want_len = ref_session.run(None, {WAVSSL_INPUTS[0]: wave[None].astype(np.float32),
                                                    WAVSSL_INPUTS[1]: np.array([len(wave)], dtype=np.int64)})[:2]
            name = label if len(items) == 1 else f"{label} [{k}]"
            rows.append(compare(name, info, want, want_len, got, np.array([got.shape[1]])))
    return rows


# ------------------------------------------------------------------------------------ export


def export_sherpa_onnx(run: str | Path | nn.Module, out: str | Path, *, int8: bool = False, fused: bool = True,
                       opset: int = 18, check_audio: Sequence[str | Path | np.ndarray] = (),
                       atol: float = PARITY_ATOL, per_channel: bool = True, language: str | None = None,
                       log: Callable[[str], None] | None = print) -> Path:
    """Export a fine-tuned recognizer to a directory that sherpa-onnx loads as an omnilingual-ASR CTC
    model: ``model.onnx`` [+ ``model.int8.onnx``], ``tokens.txt`` and ``README.md`` (how to run it).

    Args:
        run: recognizer run directory, a :class:`CTCModel` (with ``vocab``), or a wavssl-onnx model
            directory written by ``wavssl export`` (converted as it is, without PyTorch tracing).
        out: directory to write (created; the files above are replaced, others left alone).
        int8: also write ``model.int8.onnx`` (wavssl's int8 graph: the model directory's own, or
            quantized now with ``wavssl.export.quantize_int8``).
        fused, opset, per_channel: as :func:`wavssl.export.export` (run or model only). ``fused=False``
            keeps standard ONNX ops, for an ONNX Runtime build without the ``com.microsoft`` domain.
        check_audio: real recordings (paths, or 1-D arrays at 16 kHz) added to the parity checks.
        atol: tolerance on log-probabilities: wavssl's export parity (ONNX vs PyTorch) and the
            sherpa-onnx parity (sherpa-onnx's standardised input vs wavssl-onnx's raw input).
        language: transcript language recorded in the metadata (default: the run's ``ctc.language``).
        log: where progress and the parity tables go (None: silent).

    Returns:
        ``out``.

    Raises:
        ExportError: the model cannot meet sherpa-onnx's contract (the message says why), or a parity
            check failed. Nothing is written then.
    """
    require_onnx()
    say = log or (lambda _: None)
    start = time.perf_counter()
    out = Path(out)
    source_dir = Path(run) if isinstance(run, (str, Path)) and (Path(run) / CONFIG_FILE).is_file() else None
    where = f"{run}: " if isinstance(run, (str, Path)) else ""
    out.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out, ".export-sherpa-")
    try:
        if source_dir is None:
            model, run_language, rate = load_for_export(run)
            if (why := sherpa_unsupported(model, rate)) is not None:
                raise ExportError(f"{where}{why}")
            source_dir = tmp / "wavssl"
            export(model, source_dir, int8=int8, fused=fused, opset=opset, check_audio=check_audio, atol=atol,
                   per_channel=per_channel, language=language if language is not None else run_language, log=log)
        try:
            info = load_model_info(source_dir)
        except ModelDirError as e:
            raise ExportError(str(e)) from e
        if (why := _dir_unsupported(info)) is not None:
            raise ExportError(f"{where}{why}")
        if language is not None:
            info = dataclasses.replace(info, language=language)
        assert info.vocabulary is not None
        tokens = sherpa_tokens(info.vocabulary)
        audio = [read_check_audio(x, info) for x in check_audio]
        sources = {MODEL_FILE: source_dir / info.files["fp32"]}
        if int8:
            if "int8" in info.files:
                sources[INT8_FILE] = source_dir / info.files["int8"]
            else:
                sources[INT8_FILE] = tmp / "source.int8.onnx"
                quantize_int8(sources[MODEL_FILE], sources[INT8_FILE], info, per_channel=per_channel)
        base = {"wavssl": wavssl_version(), **{f"wavssl_{k}": v for k, v in info.export.items()
                                                 if k in ("exporter", "opset", "fused_ops")}}
        rows: dict[str, list[ParityRow]] = {}
        for name, src in sources.items():
            _convert(src, tmp / name, sherpa_metadata(info, {**base, "quantization": "int8" if name == INT8_FILE
                                                              else "fp32"}))
            rows[name] = sherpa_parity(tmp / name, src, info, audio)
            say(format_parity(rows[name], f"[wavssl export sherpa-onnx] {name} on sherpa-onnx's standardised input "
                                          f"vs wavssl-onnx on the raw input:"))
        bad = [r for r in rows[MODEL_FILE] if not r.max_abs_diff <= atol]
        if bad:
            raise ExportError(
                f"{where}sherpa-onnx parity failed: standardising the input moves log-probabilities by up to "
                f"{max(r.max_abs_diff for r in bad):.3g} > {atol:g} ({', '.join(r.label for r in bad)}); the model "
                f"depends on the input level (train with data.normalize=true); nothing written to {out}")
        if INT8_FILE in rows and not all(np.isfinite(r.max_abs_diff) for r in rows[INT8_FILE]):
            raise ExportError(f"{where}the int8 model gives non-finite outputs; nothing written to {out}")
        (tmp / TOKENS_FILE).write_text(tokens, encoding="utf-8")
        (tmp / README_FILE).write_text(model_card(info, int8=int8, fused=bool(info.export.get("fused_ops", fused))),
                                       encoding="utf-8")
        files = [*sources, TOKENS_FILE, README_FILE]
        if not int8:  # a stale int8 graph would not match this export
            (out / INT8_FILE).unlink(missing_ok=True)
        for name in files:
            (tmp / name).replace(out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sizes = {name: (out / name).stat().st_size for name in files}
    say(f"[wavssl export sherpa-onnx] -> {out} ({', '.join(f'{k} {v / 1e6:.2f} MB' for k, v in sizes.items())}; "
        f"{time.perf_counter() - start:.0f} s)")
    return out


def model_card(info: ModelInfo, *, int8: bool, fused: bool) -> str:
    """The ``README.md`` of a sherpa-onnx export: files, how to run it, the contract, limits."""
    assert info.vocabulary is not None
    graph = "model.int8.onnx" if int8 else "model.onnx"
    shift_ms = 1000 * info.frame_shift
    timing = "" if abs(info.frame_shift - SHERPA_FRAME_SHIFT) < 1e-9 else (
        f"\n- Timestamps: sherpa-onnx assumes 20 ms per output frame for this family; this model's frames are "
        f"{shift_ms:g} ms, so multiply its timestamps by {info.frame_shift / SHERPA_FRAME_SHIFT:g}.")
    short = "" if info.min_samples <= SHERPA_MIN_SAMPLES else (
        f"\n- Inputs of {SHERPA_MIN_SAMPLES}..{info.min_samples - 1} samples are too short for this model "
        f"(it needs {info.min_samples}); onnxruntime raises on them.")
    norm = ("trained on standardised audio; the graph standardises again, which leaves sherpa-onnx's input as it is"
            if info.normalize_audio else
            "trained on raw-level audio; its first conv block's utterance-wide GroupNorm removes the gain and DC "
            "offset that sherpa-onnx's standardisation changes")
    return f"""# wavssl CTC recognizer for sherpa-onnx

Exported by `wavssl` {wavssl_version()} for [sherpa-onnx](https://github.com/k2-fsa/sherpa-onnx)
(checked with the PyPI wheel {MIN_SHERPA_VERSION}) as a model of its **omnilingual-ASR CTC** family
(raw waveform in, CTC scores out). Language: {info.language or "unspecified"};
{len(info.vocabulary)} tokens; {info.sample_rate} Hz input; {shift_ms:g} ms per output frame.

| file | content |
|---|---|
| `model.onnx` | fp32 graph: `{INPUT_NAME}` (1, T) float32 -> `{OUTPUT_NAME}` (1, F, {len(info.vocabulary)}) float32 |
{"| `model.int8.onnx` | the same graph with int8 weights (wavssl's +-64 scheme; smaller and faster on CPUs) |" + chr(10) if int8 else ""}| `tokens.txt` | `symbol id` per line; blank `<blk>` = 0; the line holding only an id is the word space |

## Run it

Python (`pip install sherpa-onnx soundfile`):

```python
import sherpa_onnx
import soundfile as sf

recognizer = sherpa_onnx.OfflineRecognizer.from_omnilingual_asr_ctc(
    model="{graph}", tokens="tokens.txt", num_threads=2)
samples, rate = sf.read("audio.wav", dtype="float32", always_2d=True)
stream = recognizer.create_stream()
stream.accept_waveform(rate, samples[:, 0])  # any rate: sherpa-onnx resamples to 16 kHz
recognizer.decode_stream(stream)
print(stream.result.text)
```

Command line (sherpa-onnx's C++ binaries):

```sh
sherpa-onnx-offline --omnilingual-asr-model=./{graph} --tokens=./tokens.txt --num-threads=2 audio.wav
```

The same two files work from sherpa-onnx's C, C++, Go, C#, Java/Kotlin (Android), Swift (iOS),
Dart/Flutter, JavaScript (Node, WebAssembly) and other APIs: configure an offline recognizer with
the omnilingual-ASR CTC model set to the graph and `tokens` to `tokens.txt`.

## Contract and differences from wavssl-onnx

- sherpa-onnx standardises each utterance (zero mean, unit variance) and feeds it whole. This model
  was {norm}; fp32 greedy transcripts match `wavssl-onnx`'s (checked at export); int8 ones can
  differ by a character on rare near-tie frames (int8 activation quantisation magnifies last-bit
  rounding, and sherpa-onnx bundles its own ONNX Runtime release).
- Decoding is greedy only (no beam search or n-gram LM). sherpa-onnx keeps a trailing space and the
  double space of an empty word, which wavssl-onnx collapses.
- No long-audio windowing: each call runs the whole input (attention memory grows with its square);
  split long recordings first, e.g. with sherpa-onnx's VAD (`silero_vad.onnx`) + offline recognizer.
- Inputs under {SHERPA_MIN_SAMPLES} samples (25 ms) give an empty result.{short}{timing}
- {"Fused ONNX Runtime contrib ops (com.microsoft Attention/Gelu); sherpa-onnx's bundled ONNX Runtime has them." if fused else "Standard ONNX ops only."}
- {STREAMING_NOTE}
"""


__all__ = ["INPUT_NAME", "MIN_SHERPA_VERSION", "OUTPUT_NAME", "STREAMING_NOTE", "export_sherpa_onnx", "model_card",
           "sherpa_parity", "sherpa_standardize", "sherpa_tokens", "sherpa_unsupported", "whole_rows"]
