"""Streaming recognition of chunked-attention models: PyTorch chunk steps, ``wavssl export --streaming``
and the runtime's ``OnlineRecognizer``, each against the model's offline forward on the whole input."""

from __future__ import annotations

import dataclasses
import json
import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from wavssl_onnx import EndpointRules, ModelDirError, OfflineRecognizer, OnlineRecognizer, Vocabulary
from wavssl_onnx.model_dir import CONFIG_FILE, FORMAT_VERSION

from wavssl import config as C
from wavssl.export import ExportError, export
from wavssl.models import CTCModel, build_recognizer
from wavssl.streaming import StreamingError, StreamingRecognizer, stream_geometry
from wavssl.train.checkpoint import save_model

RATE = 16000
NO_TORCH = "import sys; sys.modules['torch'] = None\n"


def _model(cfg: C.Config, *, chunk: int = 8, left: int = 2, lookahead: int = -1, seed: int = 0) -> CTCModel:
    """A random recognizer with chunked attention whose log-probs spread (random head and norms)."""
    cfg = dataclasses.replace(cfg, task="ctc")
    cfg.model.context = dataclasses.replace(cfg.model.context, attention_chunk=chunk, attention_left_chunks=left,
                                            pos_conv_lookahead=lookahead)
    vocab = Vocabulary(["<blank>", "<unk>", "|", *string.ascii_lowercase, "'"])
    torch.manual_seed(seed)
    model = build_recognizer(cfg.model, cfg.ctc, len(vocab))
    for mod in model.modules():
        if isinstance(mod, torch.nn.LayerNorm):
            torch.nn.init.normal_(mod.weight, 1.0, 0.2)
            torch.nn.init.normal_(mod.bias, 0.0, 0.2)
    with torch.no_grad():
        model.head.weight.normal_(0.0, 1.0)
    model.vocab = vocab
    return model.eval()


def _waveform_cfg() -> C.Config:
    """Per-frame (LayerNorm) conv front end, pre-LN Transformer: the other streaming-capable layout."""
    cfg = C.base()
    m = cfg.model
    m.frontend = dataclasses.replace(m.frontend, conv_layers=((64, 10, 5),) + ((64, 3, 2),) * 4 + ((64, 2, 2),) * 2,
                                     norm_mode="layer_norm", conv_bias=True)
    m.context = dataclasses.replace(m.context, embed_dim=64, num_layers=2, num_heads=2, ffn_dim=128,
                                    pos_conv_kernel=16, pos_conv_groups=4, layer_norm_first=True)
    return cfg


def _offline(model: CTCModel, wave: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(wave)[None]).log_probs()[0].numpy()


def _push_randomly(rec, wave: np.ndarray, seed: int) -> tuple[object, list[list[int]]]:  # type: ignore[no-untyped-def]
    """Stream ``wave`` in pieces of 10-200 ms, decoding after each; returns the stream and the partials."""
    rng = np.random.default_rng(seed)
    stream, partials, pos = rec.create_stream(), [], 0
    while pos < len(wave):
        n = int(rng.integers(160, 3200))
        stream.accept_waveform(RATE, wave[pos: pos + n])
        pos = min(pos + n, len(wave))
        partials.append(list(rec.decode(stream).token_ids))
        done = len(stream.log_probs(len(rec.vocab))) * rec.frame_shift
        assert done >= pos / RATE - rec.latency - 1e-6  # text lags by at most the model's latency
    stream.input_finished()
    return stream, partials


@pytest.mark.parametrize("kind,lookahead", [("tiny", -1), ("tiny", 0), ("waveform", 3)])
def test_chunk_steps_equal_the_offline_forward(kind: str, lookahead: int) -> None:
    model = _model(C.tiny() if kind == "tiny" else _waveform_cfg(), lookahead=lookahead)
    rec = StreamingRecognizer(model)
    g = rec.geometry
    assert g.chunk_frames == 8 and g.left_chunks == 2 and g.lookahead_frames == model.encoder.context.pos_conv.lookahead
    assert g.left_samples % g.frame_shift_samples == 0
    rng = np.random.default_rng(1)
    for n in (400, 5000, 3 * RATE + 123):  # one frame, less than a chunk's worth of look-ahead, many chunks
        wave = (rng.standard_normal(n) * 0.1).astype(np.float32)
        stream, partials = _push_randomly(rec, wave, seed=n)
        final = rec.decode(stream)
        got, want = stream.log_probs(len(model.vocab)), _offline(model, wave)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=2e-4)
        for ids in partials:  # greedy partials only grow
            assert final.token_ids[: len(ids)] == ids


def test_the_chunk_mask_matters() -> None:
    """A model whose chunks see the whole left context is not what a bounded cache computes: the
    streaming result follows the attention mask, so changing the mask changes it."""
    model = _model(C.tiny())
    wave = (np.random.default_rng(2).standard_normal(4 * RATE) * 0.1).astype(np.float32)
    rec = StreamingRecognizer(model)
    stream, _ = _push_randomly(rec, wave, seed=0)
    rec.decode(stream)
    streamed = stream.log_probs(len(model.vocab))
    model.encoder.context.attention_left_chunks = 6  # the offline forward now sees more left context
    assert np.abs(streamed - _offline(model, wave)).max() > 1e-2


def test_models_that_cannot_stream_are_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(StreamingError, match="attention_chunk"):
        stream_geometry(_model(C.tiny(), chunk=0))
    with pytest.raises(StreamingError, match="attention_left_chunks"):
        stream_geometry(_model(C.tiny(), left=-1))
    cfg = _waveform_cfg()
    cfg.model.frontend = dataclasses.replace(cfg.model.frontend, norm_mode="default", conv_bias=False)
    with pytest.raises(StreamingError, match="norm_mode"):
        stream_geometry(_model(cfg))
    standardised = _model(C.tiny())
    standardised.normalize_audio = True
    with pytest.raises(StreamingError, match="normalize"):
        stream_geometry(standardised)
    with pytest.raises(ExportError, match="attention_chunk"):  # the exporter says the same, writes nothing
        export(_model(C.tiny(), chunk=0), tmp_path / "m", streaming=True, log=None)
    assert not (tmp_path / "m" / CONFIG_FILE).exists()


def test_chunked_attention_is_a_fine_tuning_setting() -> None:
    """Weights pretrained with full attention carry over to a chunked-attention recognizer."""
    full, chunked = C.tiny().model, C.tiny().model
    chunked.context = dataclasses.replace(chunked.context, attention_chunk=16, attention_left_chunks=4)
    assert C.architecture(full) == C.architecture(chunked)
    chunked.context = dataclasses.replace(chunked.context, pos_conv_kernel=16)
    assert C.architecture(full) != C.architecture(chunked)


@pytest.fixture(scope="module")
def streaming_model() -> CTCModel:
    return _model(C.tiny(), chunk=16, left=2, seed=3)


def _save(run: Path, model: CTCModel, chunk: int) -> Path:
    cfg = dataclasses.replace(C.tiny(), task="ctc")
    cfg.model.context = dataclasses.replace(cfg.model.context, attention_chunk=chunk, attention_left_chunks=2)
    save_model(run, model, cfg)
    model.vocab.save(run)  # type: ignore[union-attr]
    return run


@pytest.fixture(scope="module")
def streaming_run(streaming_model: CTCModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save(tmp_path_factory.mktemp("stream_run") / "run", streaming_model, 16)


@pytest.fixture(scope="module")
def streaming_dir(streaming_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = streaming_run
    out = tmp_path_factory.mktemp("stream_onnx")
    report = export(run, out, int8=True, streaming=True, log=None)
    assert report.max_abs_diff <= 1e-3 and {r.label.split(" ")[0] for r in report.parity} >= {"shortest", "60"}
    return out


@pytest.mark.e2e
def test_streaming_export_runs_chunk_by_chunk_in_the_runtime(streaming_model: CTCModel, streaming_dir: Path,
                                                             speech_dir: Path) -> None:
    info = json.loads((streaming_dir / CONFIG_FILE).read_text())
    assert info["format_version"] == FORMAT_VERSION == 2
    assert info["files"] == {"fp32": "model.onnx", "frontend": "frontend.onnx", "int8": "model.int8.onnx",
                             "frontend_int8": "frontend.int8.onnx"}
    s = info["streaming"]
    assert s["chunk_frames"] == 16 and s["left_chunks"] == 2
    assert [(x["name"], x["shape"]) for x in s["states"]] == [
        ("pos_cache", [31 - s["lookahead_frames"], 128]), ("kv_cache", [3, 2, 32, 128]), ("processed", [])]
    rec = OnlineRecognizer.from_dir(streaming_dir, threads=1)
    # text lags by one chunk, the positional conv's look-ahead and the front end's right context
    assert rec.latency == pytest.approx(((16 + s["lookahead_frames"]) * 320 + s["right_samples"]) / RATE)
    wave = sf.read(str(sorted(speech_dir.glob("*.wav"))[0]), dtype="float32")[0]
    stream, partials = _push_randomly(rec, wave, seed=4)
    final = rec.decode(stream)
    want = _offline(streaming_model, wave)
    np.testing.assert_allclose(stream.log_probs(len(rec.vocab)), want, atol=1e-3)
    for ids in partials:
        assert final.token_ids[: len(ids)] == ids
    # offline use of a streaming directory: every input chunk by chunk, the same frames
    offline = OfflineRecognizer.from_dir(streaming_dir, threads=1)
    assert offline.transcribe([wave])[0].token_ids == final.token_ids
    int8 = OnlineRecognizer.from_dir(streaming_dir, threads=1, int8=True)
    # the int8 variant runs the int8 front end too: close to the float one's frames, not equal
    window = wave[:RATE]
    frames, frames8 = rec.recognizer.frontend(window), int8.recognizer.frontend(window)
    assert frames.shape == frames8.shape and 0 < np.abs(frames - frames8).max() < 0.1 * np.abs(frames).max()
    stream8, _ = _push_randomly(int8, wave, seed=5)
    int8.decode(stream8)
    assert (stream8.log_probs(len(rec.vocab)).argmax(-1) == want.argmax(-1)).mean() >= 0.9


@pytest.mark.e2e
def test_streaming_directory_contract(streaming_dir: Path, tmp_path: Path, speech_dir: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("model.onnx", CONFIG_FILE):
        (broken / name).write_bytes((streaming_dir / name).read_bytes())
    with pytest.raises(ModelDirError, match="frontend.onnx"):  # a missing front end is named
        OnlineRecognizer.from_dir(broken)
    # a missing int8 front end is named too; a directory whose description lists none (written
    # before front ends were quantized) runs its float front end under the int8 step
    for name in ("frontend.onnx", "model.int8.onnx"):
        (broken / name).write_bytes((streaming_dir / name).read_bytes())
    with pytest.raises(ModelDirError, match="frontend.int8.onnx"):
        OnlineRecognizer.from_dir(broken, int8=True)
    info = json.loads((broken / CONFIG_FILE).read_text())
    del info["files"]["frontend_int8"]
    (broken / CONFIG_FILE).write_text(json.dumps(info))
    window = np.random.default_rng(0).standard_normal(RATE).astype(np.float32) * 0.1
    fallback = OnlineRecognizer.from_dir(broken, threads=1, int8=True).recognizer.frontend
    fp32 = OnlineRecognizer.from_dir(streaming_dir, threads=1).recognizer.frontend
    assert fallback is not None and fp32 is not None
    np.testing.assert_array_equal(fallback(window), fp32(window))
    # the runtime streams it where torch cannot be imported, from the command line
    wav = sorted(speech_dir.glob("*.wav"))[1]
    code = NO_TORCH + "from wavssl_onnx.cli import main; sys.exit(main())"
    run = subprocess.run([sys.executable, "-c", code, "stream", str(streaming_dir), str(wav), "--json",
                          "--threads", "1", "--block-ms", "50"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert lines[-1]["final"]
    whole = subprocess.run([sys.executable, "-c", code, "transcribe", str(streaming_dir), str(wav), "--json",
                            "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr
    assert json.loads(whole.stdout.splitlines()[0])["text"] == lines[-1]["text"]


@pytest.mark.e2e
def test_endpoints_cut_a_live_stream_into_utterances(streaming_dir: Path, speech_dir: Path, tmp_path: Path) -> None:
    rules = EndpointRules(silence_without_text=2.0, silence_after_text=1.0, max_utterance=10.0)
    assert not rules.reached(3.0, 0.9, True) and rules.reached(3.0, 1.0, True)
    assert not rules.reached(3.0, 1.9, False) and rules.reached(3.0, 2.0, False)
    assert rules.reached(10.0, 0.0, True) and not EndpointRules(max_utterance=0).reached(99.0, 0.0, True)
    with pytest.raises(ValueError, match=">= 0"):
        EndpointRules(silence_after_text=-1.0)
    # the decoder's side, on recognised frames of known best tokens
    rec = OnlineRecognizer.from_dir(streaming_dir, threads=1)
    blank, (a, b, c) = rec.vocab.blank_id, rec.vocab.encode("abc")

    def frames(ids: list[int]) -> np.ndarray:
        lp = np.full((len(ids), len(rec.vocab)), -20.0, np.float32)
        lp[np.arange(len(ids)), ids] = 0.0
        return lp

    stream = rec.create_stream()
    stream.add([frames([a, a, blank, b] + [blank] * 40)])  # "ab", then 0.8 s of blanks
    assert rec.decode(stream).text == "ab" and not rec.is_endpoint(stream)
    stream.add([frames([blank] * 20)])  # 1.2 s of silence after text: the default rule
    assert rec.is_endpoint(stream) and not rec.is_endpoint(stream, EndpointRules(silence_after_text=1.5))
    rec.reset(stream)
    assert rec.decode(stream).text == "" and not rec.is_endpoint(stream)
    stream.add([frames([blank] * 10 + [c, c])])
    hyp = rec.decode(stream)
    assert hyp.text == "c" and hyp.words[0].start == pytest.approx((64 + 10) * rec.frame_shift)  # stream time
    stream.input_finished()
    assert rec.decode(stream).text == "c"
    # an utterance cut by its length limit inside a token: that token is not said again by the next
    # utterance (the pieces join to what the whole stream decodes to: "ab", "bc", not "ab", "bbc")
    stream = rec.create_stream()
    stream.add([frames([a, blank, b, b])])
    assert rec.is_endpoint(stream, EndpointRules(max_utterance=0.05))
    rec.reset(stream)
    stream.add([frames([b]), frames([b, c, blank])])
    hyp = rec.decode(stream)
    assert hyp.text == "c" and hyp.words[0].start == pytest.approx((4 + 2) * rec.frame_shift)
    rec.reset(stream)
    stream.add([frames([c])])  # after a blank the same letter is a new one
    assert rec.decode(stream).text == "c"
    # from the command line, on two recordings with a pause: the utterances it prints as they end
    # (this random model may cut none; the recipe's cuts at pauses, see export/README.md) and the
    # final text hold the whole file's transcript
    w1, w2 = (sf.read(str(p), dtype="float32")[0] for p in sorted(speech_dir.glob("*.wav"))[:2])
    path = tmp_path / "pause.wav"
    sf.write(str(path), np.concatenate([w1, np.zeros(RATE, np.float32), w2]), RATE)
    code = NO_TORCH + "from wavssl_onnx.cli import main; sys.exit(main())"
    run = subprocess.run([sys.executable, "-c", code, "stream", str(streaming_dir), str(path), "--json", "--threads",
                          "1", "--endpoint-silence", "0.2"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    pieces = [x["utterance"] for x in lines if "utterance" in x] + [lines[-1]["text"]]
    whole = OfflineRecognizer.from_dir(streaming_dir, threads=1).transcribe([str(path)])[0].text
    assert "".join(pieces).replace(" ", "") == whole.replace(" ", "")


@pytest.mark.e2e
def test_many_streams_run_their_chunks_as_one_batch(streaming_dir: Path, speech_dir: Path) -> None:
    rec = OnlineRecognizer.from_dir(streaming_dir, threads=1)
    waves = [sf.read(str(p), dtype="float32")[0] for p in sorted(speech_dir.glob("*.wav"))[:3]]
    alone = []
    for wave in waves:
        stream = rec.create_stream()
        stream.accept_waveform(RATE, wave)
        stream.input_finished()
        alone.append(rec.decode(stream).text)
        alone[-1] = (alone[-1], stream.log_probs(len(rec.vocab)))
    streams = [rec.create_stream() for _ in waves]
    batches: list[int] = []
    step = streams[0].engine.step  # type: ignore[attr-defined]

    def recording(x: np.ndarray, states: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        batches.append(len(x))
        return step(x, states)

    for s in streams:
        s.engine.step = recording  # type: ignore[attr-defined]
    # staggered starts; blocks of one chunk (a server decoding every 0.32 s), so each round has a
    # chunk ready in every started stream
    block = 16 * 320
    pos = [-block * i for i in range(len(waves))]
    while not all(s.finished for s in streams):
        for i, (s, wave) in enumerate(zip(streams, waves)):
            if not s.finished and pos[i] >= 0:
                s.accept_waveform(RATE, wave[pos[i]: pos[i] + block])
                if pos[i] + block >= len(wave):
                    s.input_finished()
            pos[i] += block
        hyps = rec.decode_streams(streams)
    assert max(batches) == len(waves)  # chunks of different streams shared a step
    for s, h, (text, want) in zip(streams, hyps, alone):
        np.testing.assert_allclose(s.log_probs(len(rec.vocab)), want, atol=1e-4)
        assert h.text == text


@pytest.mark.e2e
def test_streaming_benchmark_runs(streaming_run: Path, streaming_model: CTCModel, speech_dir: Path,
                                  tmp_path: Path) -> None:
    """benchmarks/streaming.py end to end on two utterances (the same weights with full attention as the peer)."""
    import runpy

    offline = _save(tmp_path / "offline", streaming_model, 0)
    bench = runpy.run_path(str(Path(__file__).resolve().parents[1] / "benchmarks" / "streaming.py"))
    record = bench["main"](["--streaming-run", str(streaming_run), "--offline-run", str(offline), "--test",
                            str(speech_dir / "transcripts.tsv"), "--limit", "2", "--streams", "2", "--no-write",
                            "--work", str(tmp_path / "work")])
    engines = record["engines"]
    assert set(engines) >= {"chunked fp32", "chunked int8", "windows 2+1 s", "chunked fp32 x2"}
    assert all(e["rtf"] > 0 and 0 <= e["cer"] for e in engines.values())
    assert engines["chunked fp32 x2"]["cer"] == engines["chunked fp32"]["cer"]  # batching changes nothing
    assert engines["windows 2+1 s"]["latency_s"] == pytest.approx(3.0)
