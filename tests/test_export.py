"""ONNX export (``wavssl export``) and the PyTorch-free runtime (``wavssl_onnx``).

Small random-weight models of each shape the exporter handles (log-mel and waveform front ends,
utterance-wide GroupNorm and per-frame LayerNorm, post- and pre-LN Transformers, in-graph
standardisation, a sensor classifier with missing values) are exported once per module; the tests
compare ONNX Runtime with PyTorch on random and generated speech, check the runtime in a process
where ``import torch`` fails, feed it bad inputs and bad model directories, and compare chunked
with unchunked long-audio recognition.

Tolerances (see also ``wavssl.export.PARITY_ATOL``):

- fp32 graph vs PyTorch: |log p| differences <= 1e-3 on every valid frame (measured ~1e-5), same
  output lengths, identical greedy transcripts and word times.
- int8 graph vs fp32 graph: mean |p_int8 - p_fp32| <= 0.02; the best token is the same on >= 85 %
  of the frames where fp32's leads by >= 0.5 nat, and on >= 95 % of all frames for the tiny
  model (measured 99.8 %; random weights make outputs flat, so the best token of a narrow model
  flips easily - the 64-wide waveform model keeps 93 % of its confident frames).
- chunked (30 s windows + 4 s context) vs whole, ~2 min of speech: with a model whose outputs depend
  only on nearby frames the log-probs agree to 1e-4 and the transcripts and word times are
  identical; with global attention (random weights spread attention over the whole input) the
  transcripts agree to a CER <= 0.05 (measured 0.005: a few characters near window edges).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import string
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile as sf
import soxr
import torch
from wavssl_onnx import AudioError, Classifier, ModelDirError, OfflineRecognizer, OnlineRecognizer, Vocabulary, cer
from wavssl_onnx.audio import array_blocks
from wavssl_onnx.model_dir import CONFIG_FILE, FORMAT_VERSION, INT8_FILE, MODEL_FILE

import wavssl
from wavssl import config as C
from wavssl.export import ExportError, export
from wavssl.models import build_classifier, build_model, build_recognizer
from wavssl.onnx_int8 import WEIGHT_LIMIT, int8_weight_range
from wavssl.train.checkpoint import save_model

pytestmark = [pytest.mark.filterwarnings("ignore"),
              pytest.mark.e2e]  # whole exports (trace, parity up to 60 s, int8), mostly in module fixtures

RATE = 16000
NO_TORCH = "import sys; sys.modules['torch'] = None\n"
"""Prefix of subprocess code: any ``import torch`` after it raises ImportError."""


def _vocab() -> Vocabulary:
    return Vocabulary(["<blank>", "<unk>", "|", *string.ascii_lowercase, "'"])


def _files(speech_dir: Path, n: int = 6) -> list[Path]:
    return sorted(speech_dir.glob("*.wav"))[:n]


def _waveform_config(norm_mode: str, *, pre_ln: bool) -> C.Config:
    """A waveform-front-end model small enough to export in seconds."""
    cfg = C.base()
    m = cfg.model
    m.frontend = dataclasses.replace(m.frontend, conv_layers=((64, 10, 5),) + ((64, 3, 2),) * 4 + ((64, 2, 2),) * 2,
                                     norm_mode=norm_mode, conv_bias=norm_mode == "layer_norm")
    m.context = dataclasses.replace(m.context, embed_dim=64, num_layers=2, num_heads=2, ffn_dim=128,
                                    pos_conv_kernel=16, pos_conv_groups=4, layer_norm_first=pre_ln, layer_drop=0.1)
    return dataclasses.replace(cfg, task="ctc")


def _randomise_norms(model: torch.nn.Module) -> None:
    """Non-trivial LayerNorm/GroupNorm affine parameters (fresh ones are 1 and 0)."""
    for mod in model.modules():
        if isinstance(mod, (torch.nn.LayerNorm, torch.nn.GroupNorm)):
            torch.nn.init.normal_(mod.weight, 1.0, 0.2)
            torch.nn.init.normal_(mod.bias, 0.0, 0.2)


def _recognizer(cfg: C.Config, seed: int, normalize: bool = False) -> torch.nn.Module:
    torch.manual_seed(seed)
    vocab = _vocab()
    model = build_recognizer(cfg.model, cfg.ctc, len(vocab))
    _randomise_norms(model)
    model.vocab, model.normalize_audio = vocab, normalize
    return model.eval()


def _save_run(run: Path, model: torch.nn.Module, cfg: C.Config) -> Path:
    save_model(run, model, cfg)
    model.vocab.save(run)  # type: ignore[union-attr]
    return run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random tiny (log-mel front end) recognizer saved as a run directory."""
    cfg = dataclasses.replace(C.tiny(), task="ctc")
    return _save_run(tmp_path_factory.mktemp("tiny") / "run", _recognizer(cfg, 0), cfg)


@pytest.fixture(scope="module")
def tiny_dir(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny_onnx")
    report = export(tiny_run, out, int8=True, log=None)
    assert report.exporter == "dynamo" and report.max_abs_diff <= 1e-3
    return out


@pytest.fixture(scope="module")
def wave_model() -> torch.nn.Module:
    """Waveform front end with the utterance-wide GroupNorm, post-LN."""
    return _recognizer(_waveform_config("default", pre_ln=False), 1)


@pytest.fixture(scope="module")
def wave_dir(wave_model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wave_onnx")
    export(wave_model, out, int8=True, log=None)
    return out


@pytest.fixture(scope="module")
def preln_model() -> torch.nn.Module:
    """Per-frame LayerNorm front end with conv bias, pre-LN, standardised input."""
    return _recognizer(_waveform_config("layer_norm", pre_ln=True), 2, normalize=True)


@pytest.fixture(scope="module")
def classifier() -> torch.nn.Module:
    """Sensor classifier: 3 channels, per-series robust normalisation, attention pooling over all layers
    plus segment means."""
    torch.manual_seed(3)
    cfg = C.sensor_tiny()
    cfg.model.frontend.in_channels = 3
    cfg.model.frontend = dataclasses.replace(cfg.model.frontend, norm="instance")
    cfg.classify.pooling = "attention"
    cfg.classify.all_layers = True
    cfg.classify.segments = 3
    cfg.classify.use_duration = True
    model = build_classifier(cfg.model, cfg.classify, 4)
    model.norm.running_mean.normal_()
    model.norm.running_var.uniform_(0.5, 2.0)
    model.class_names = ["walk", "run", "sit", "stand"]
    return model.eval()


@pytest.fixture(scope="module")
def cls_dir(classifier: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cls_onnx")
    export(classifier, out, log=None)
    return out


def _torch_log_probs(model: torch.nn.Module, waves: list[np.ndarray]) -> list[np.ndarray]:
    from wavssl.recognition import recognize

    return recognize(model, waves)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------- exporter


def test_model_directory_contract(tiny_dir: Path) -> None:
    import onnx

    info = json.loads((tiny_dir / CONFIG_FILE).read_text())
    assert info["format"] == "wavssl-onnx" and info["format_version"] == 1  # offline models: older runtimes read them
    assert info["kind"] == "ctc" and info["sample_rate"] == RATE and info["frame_shift"] == pytest.approx(0.02)
    assert info["vocabulary"]["tokens"] == _vocab().tokens and info["blank_id"] == 0 and info["delimiter_id"] == 2
    assert info["inputs"] == ["waveform", "lengths"] and info["outputs"] == ["log_probs", "frame_lengths"]
    assert info["files"] == {"fp32": MODEL_FILE, "int8": INT8_FILE}
    assert info["export"]["exporter"] == "dynamo" and info["export"]["parity_max_abs_diff"] <= 1e-3
    for name in (MODEL_FILE, INT8_FILE):
        proto = onnx.load(str(tiny_dir / name), load_external_data=False)
        meta = {p.key: json.loads(p.value) for p in proto.metadata_props}
        assert meta == info
        graph_inputs = [i.name for i in proto.graph.input]
        assert graph_inputs == ["waveform", "lengths"]


@pytest.mark.e2e
def test_global_log_mel_normalisation_is_in_the_graph(speech_dir: Path, tmp_path: Path) -> None:
    """``model.frontend.norm = global``: the fitted band statistics travel into the ONNX graph."""
    from wavssl.data.audio import load_audio

    cfg = C.tiny()
    cfg.model.frontend = dataclasses.replace(cfg.model.frontend, norm="global")
    model = _recognizer(cfg, 2)
    model.encoder.frontend.fit_normalization([torch.from_numpy(load_audio(p)) for p in _files(speech_dir, 4)])
    report = export(model, tmp_path / "m", log=None)
    assert report.max_abs_diff <= 1e-3 and all(r.argmax_agreement == 1.0 for r in report.parity)
    raw = _recognizer(C.tiny(), 2)  # the same weights without the normalisation: other outputs
    wave = torch.from_numpy(load_audio(_files(speech_dir, 1)[0]))[None]
    with torch.no_grad():
        lengths = torch.tensor([wave.shape[1]])
        assert (model(wave, lengths).log_probs() - raw(wave, lengths).log_probs()).abs().max() > 0.1


@pytest.mark.parametrize("which", ["wave", "preln"])
def test_onnx_matches_pytorch_on_random_and_real_audio(which: str, wave_model: torch.nn.Module,
                                                       preln_model: torch.nn.Module, speech_dir: Path,
                                                       tmp_path: Path) -> None:
    """Several lengths from the shortest allowed up, a padded batch, generated speech; the portable
    (standard-op) graph of the same model too."""
    import onnxruntime as ort

    model = wave_model if which == "wave" else preln_model
    report = export(model, tmp_path / "m", log=None, fused=which == "wave")
    assert report.max_abs_diff <= 1e-3 and all(r.argmax_agreement == 1.0 for r in report.parity)
    labels = [r.label for r in report.parity]
    assert labels[0].startswith("shortest") and any("60 s" in x for x in labels) and any("padded" in x for x in labels)
    session = ort.InferenceSession(str(tmp_path / "m" / MODEL_FILE), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    speech = [sf.read(str(p), dtype="float32")[0] for p in _files(speech_dir, 3)]
    for waves in ([rng.standard_normal(n).astype(np.float32) * 0.1 for n in (400, 401, 16000, 33333)], speech):
        lengths = np.array([len(w) for w in waves])
        batch = np.zeros((len(waves), lengths.max()), np.float32)
        for i, w in enumerate(waves):
            batch[i, : len(w)] = w
        got, frames = session.run(None, {"waveform": batch, "lengths": lengths})
        with torch.no_grad():
            normed = batch if not model.normalize_audio else np.stack([  # type: ignore[union-attr]
                np.pad(_standardised(w), (0, batch.shape[1] - len(w))) for w in waves])
            want = model(torch.from_numpy(normed), torch.from_numpy(lengths))  # type: ignore[operator]
        assert frames.tolist() == want.lengths.tolist()
        for i, n in enumerate(frames):
            assert np.abs(got[i, :n] - want.log_probs()[i, :n].numpy()).max() <= 1e-3


def test_frontend_time_pieces_compute_the_same_frames(wave_model: torch.nn.Module, wave_dir: Path) -> None:
    """The exported waveform front end runs its long blocks in time pieces (8 / 4 / 2 at 10 s for
    wav2vec2's strides; one piece per block for a 0.33 s streaming window): the same frames as one
    piece, in PyTorch, and in the int8 graph one quantization per block input."""
    import onnx

    from wavssl.onnx_graph import MatMulWaveformFrontend, piece_counts

    frontend = wave_model.encoder.frontend  # type: ignore[union-attr]
    assert piece_counts(frontend.specs, 160_000) == [1, 8, 4, 2, 1, 1, 1]
    assert piece_counts(frontend.specs, 5_280) == [1] * 7
    wav = torch.randn(2, 16_123)
    with torch.no_grad():
        pieces = MatMulWaveformFrontend(frontend)(wav)
        whole = MatMulWaveformFrontend(frontend, reference_samples=0)(wav)
        reference = frontend(wav, torch.tensor([16_123, 16_123])).features
    torch.testing.assert_close(pieces, whole, rtol=0, atol=1e-5)
    torch.testing.assert_close(pieces, reference, rtol=1e-4, atol=1e-4)
    graph = onnx.load(str(wave_dir / INT8_FILE), load_external_data=False).graph
    producer = {o: n for n in graph.node for o in n.output}
    gathered = [n for n in graph.node if n.input and n.input[0] in producer
                and producer[n.input[0]].op_type == "Reshape" and producer[producer[n.input[0]].input[0]].op_type == "Gather"]
    products = [n for n in gathered if n.op_type.startswith("MatMul") and "matmul_frontend" in n.input[1]]
    assert [n.op_type for n in products] == ["MatMulIntegerToFloat"] * (8 + 4 + 2 + 1 + 1 + 1)  # block 0 stays float
    quantized = {producer[producer[producer[n.input[0]].input[0]].input[0]].name for n in products}
    assert len(quantized) == 6  # one DynamicQuantizeLinear per block input


def _standardised(w: np.ndarray) -> np.ndarray:
    from wavssl_onnx.audio import standardize

    return standardize(w)


def test_greedy_transcripts_identical_fp32(tiny_run: Path, tiny_dir: Path, wave_model: torch.nn.Module,
                                           wave_dir: Path, speech_dir: Path) -> None:
    """One file at a time (padding enters the front end's statistics, so batches must match too)."""
    files = [str(p) for p in _files(speech_dir)]
    for model, model_dir in ((wavssl.load(tiny_run), tiny_dir), (wave_model, wave_dir)):
        rec = OfflineRecognizer.from_dir(model_dir, threads=1)
        for f in files:
            want = model.transcribe([f])[0]  # type: ignore[operator]
            got = rec.transcribe([f])[0]
            assert got.text == want.text and got.text  # random weights emit plenty of tokens
            assert got.words == want.words


@pytest.mark.parametrize("which", ["tiny", "wave"])
def test_int8_close_to_fp32(which: str, tiny_dir: Path, wave_dir: Path, speech_dir: Path) -> None:
    """Random weights give flat outputs whose best token flips under any perturbation, the more so
    the narrower the model; the check is the stated tolerance of the module docstring."""
    model_dir = tiny_dir if which == "tiny" else wave_dir
    info = json.loads((model_dir / CONFIG_FILE).read_text())
    assert info["export"]["int8"]["per_channel"] is True
    assert info["export"]["int8"]["weight_limit"] == WEIGHT_LIMIT  # exact on AVX2 kernels too
    assert 0 < int8_weight_range(onnx.load(str(model_dir / INT8_FILE))) <= WEIGHT_LIMIT
    assert (model_dir / INT8_FILE).stat().st_size < 0.8 * (model_dir / MODEL_FILE).stat().st_size
    waves = [sf.read(str(p), dtype="float32")[0] for p in _files(speech_dir)]
    fp32 = OfflineRecognizer.from_dir(model_dir, threads=1).log_probs(waves)
    int8 = OfflineRecognizer.from_dir(model_dir, threads=1, int8=True).log_probs(waves)
    a, b = np.concatenate(fp32), np.concatenate(int8)
    assert a.shape == b.shape
    top2 = np.sort(a, axis=1)[:, -2:]
    confident = top2[:, 1] - top2[:, 0] >= 0.5  # frames whose best token leads by >= 0.5 nat
    same = a.argmax(1) == b.argmax(1)
    assert np.abs(np.exp(a) - np.exp(b)).mean() <= 0.02
    assert same[confident].mean() >= 0.85
    if which == "tiny":
        assert same.mean() >= 0.95


def test_export_fails_loudly_and_writes_nothing(wave_model: torch.nn.Module, tmp_path: Path) -> None:
    out = tmp_path / "m"
    with pytest.raises(ExportError, match="parity check failed"):
        export(wave_model, out, atol=1e-12, log=None)
    assert not (out / MODEL_FILE).exists() and not (out / CONFIG_FILE).exists()
    assert list(out.iterdir()) == []  # no temporary leftovers either


def test_export_refuses_a_pretraining_run(tmp_path: Path) -> None:
    cfg = C.tiny()
    save_model(tmp_path / "ssl", build_model(cfg.model), cfg)
    with pytest.raises(ExportError, match="pretraining run"):
        export(tmp_path / "ssl", tmp_path / "out", log=None)


def test_torchscript_exporter_and_cli(tiny_run: Path, tmp_path: Path) -> None:
    report = export(tiny_run, tmp_path / "ts", exporter="torchscript", log=None)
    assert report.exporter == "torchscript" and report.max_abs_diff <= 1e-3
    assert json.loads((tmp_path / "ts" / CONFIG_FILE).read_text())["export"]["exporter"] == "torchscript"
    run = subprocess.run([sys.executable, "-m", "wavssl", "export", str(tiny_run), "--out", str(tmp_path / "cli"),
                          "--int8"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "parity ONNX fp32 vs PyTorch" in run.stdout and "int8 vs fp32" in run.stdout
    assert {p.name for p in (tmp_path / "cli").iterdir()} == {MODEL_FILE, INT8_FILE, CONFIG_FILE}


# ----------------------------------------------------------------------------------- runtime


def test_runtime_transcribes_without_torch(tiny_dir: Path, cls_dir: Path, speech_dir: Path, tmp_path: Path) -> None:
    wav = _files(speech_dir, 1)[0]
    series = np.random.default_rng(0).standard_normal((3, 80)).astype(np.float32)
    np.save(tmp_path / "s.npy", series)
    code = NO_TORCH + textwrap.dedent(f"""
        import json, wavssl_onnx
        from wavssl_onnx import OfflineRecognizer, Classifier
        hyp = OfflineRecognizer.from_dir({str(tiny_dir)!r}, threads=1, int8=True).transcribe([{str(wav)!r}])[0]
        probs = Classifier.from_dir({str(cls_dir)!r}, threads=1).run([{str(tmp_path / "s.npy")!r}])[0].probabilities
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        print(json.dumps({{"text": hyp.text, "words": len(hyp.words), "p": float(probs.sum()), "torch": loaded,
                           "torch_entry": sys.modules["torch"] is None}}))
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["text"] and out["words"] > 0 and out["p"] == pytest.approx(1.0, abs=1e-4)
    assert out["torch"] == ["torch"] and out["torch_entry"] is True  # only the blocking entry itself


def _bad_inputs(speech_dir: Path, tmp_path: Path) -> dict[str, Path]:
    wave, rate = sf.read(str(_files(speech_dir, 1)[0]), dtype="float32")
    files = {"good": tmp_path / "good.wav", "stereo_8k": tmp_path / "stereo_8k.wav",
             "odd_rate": tmp_path / "odd_rate.flac", "stereo_44k": tmp_path / "stereo_44k.ogg", "corrupt": tmp_path / "corrupt.wav",
             "empty": tmp_path / "empty.wav", "nan": tmp_path / "nan.wav", "missing": tmp_path / "missing.wav",
             "too_short": tmp_path / "short.wav"}
    sf.write(files["good"], wave, rate)
    w8 = soxr.resample(wave, rate, 8000)
    sf.write(files["stereo_8k"], np.stack([w8, 0.5 * w8], axis=1), 8000)
    sf.write(files["odd_rate"], soxr.resample(wave, rate, 11025), 11025)
    w44 = soxr.resample(wave, rate, 44100)  # upsampled: the runtime's resampling gives the audio back
    sf.write(files["stereo_44k"], np.stack([w44, w44], axis=1), 44100, format="OGG", subtype="VORBIS")
    files["corrupt"].write_bytes(b"RIFF\x00\x01\x00\x00WAVEfmt garbage" + os.urandom(3000))
    sf.write(files["empty"], np.zeros(0, np.float32), rate)
    bad = wave.copy()
    bad[100] = np.nan
    sf.write(files["nan"], bad, rate, subtype="FLOAT")
    sf.write(files["too_short"], wave[:100], rate)
    return files


def test_cli_bad_inputs_reported_per_file(tiny_dir: Path, speech_dir: Path, tmp_path: Path) -> None:
    files = _bad_inputs(speech_dir, tmp_path)
    code = NO_TORCH + "from wavssl_onnx.cli import main; sys.exit(main())"
    run = subprocess.run([sys.executable, "-c", code, "transcribe", str(tiny_dir), *map(str, files.values()), "--json",
                          "--threads", "1"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    rows = {Path(r["path"]).name: r for r in map(json.loads, run.stdout.strip().splitlines())}
    assert len(rows) == len(files)
    for key in ("good", "stereo_8k", "odd_rate", "stereo_44k"):
        assert "error" not in rows[files[key].name] and rows[files[key].name]["text"], key
    reasons = {"corrupt": "cannot decode", "empty": "zero-length", "nan": "NaN", "missing": "no such file",
               "too_short": "too short"}
    for key, reason in reasons.items():
        assert reason in rows[files[key].name]["error"], (key, rows[files[key].name])
        assert str(files[key]) in run.stderr
    # the same audio upsampled, in stereo, lossy-coded: (nearly) the same transcript
    good = rows[files["good"].name]["text"]
    assert cer([good], [rows[files["stereo_44k"].name]["text"]]).rate < 0.3


def test_api_bad_inputs(tiny_dir: Path, speech_dir: Path, tmp_path: Path) -> None:
    files = _bad_inputs(speech_dir, tmp_path)
    rec = OfflineRecognizer.from_dir(tiny_dir, threads=1)
    results = rec.run([files["good"], files["corrupt"], np.zeros(0, np.float32), files["good"]])
    assert [r.ok for r in results] == [True, False, False, True]
    assert results[0].hypothesis.text == results[3].hypothesis.text  # type: ignore[union-attr]
    assert results[2].source == "<array 2>" and "zero-length" in results[2].error  # type: ignore[operator]
    with pytest.raises(AudioError, match="corrupt.wav"):
        rec.transcribe([files["good"], files["corrupt"]])
    # arrays: stereo (T, 2) and other rates are accepted
    wave, rate = sf.read(str(files["good"]), dtype="float32")
    stereo = rec.transcribe([np.stack([wave, wave], 1)], sample_rate=rate)[0]
    assert stereo.text == results[0].hypothesis.text  # type: ignore[union-attr]


def test_model_dir_validation(tiny_dir: Path, cls_dir: Path, tmp_path: Path) -> None:
    def copy(name: str) -> Path:
        return Path(shutil.copytree(tiny_dir, tmp_path / name))

    d = copy("no_json")
    (d / CONFIG_FILE).unlink()
    with pytest.raises(ModelDirError, match=r"wavssl\.json: missing"):
        OfflineRecognizer.from_dir(d)
    d = copy("no_model")
    (d / MODEL_FILE).unlink()
    with pytest.raises(ModelDirError, match=r"model\.onnx: missing"):
        OfflineRecognizer.from_dir(d)
    d = copy("future")
    info = json.loads((d / CONFIG_FILE).read_text())
    (d / CONFIG_FILE).write_text(json.dumps({**info, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(ModelDirError, match=rf"wavssl\.json: written in model format version {FORMAT_VERSION + 1}, newer"):
        OfflineRecognizer.from_dir(d)
    d = copy("broken")
    (d / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ModelDirError, match=r"wavssl\.json: not valid JSON"):
        OfflineRecognizer.from_dir(d)
    d = copy("no_vocab")
    (d / CONFIG_FILE).write_text(json.dumps({k: v for k, v in info.items() if k != "vocabulary"}))
    with pytest.raises(ModelDirError, match=r"missing key 'vocabulary'"):
        OfflineRecognizer.from_dir(d)
    d = copy("no_int8")
    (d / INT8_FILE).unlink()
    with pytest.raises(ModelDirError, match=r"model\.int8\.onnx: missing"):
        OfflineRecognizer.from_dir(d, int8=True)
    d = copy("foreign")
    shutil.copy(cls_dir / MODEL_FILE, d / MODEL_FILE)  # a graph that is not this directory's
    with pytest.raises(ModelDirError, match=r"model\.onnx: metadata kind='classify' disagrees"):
        OfflineRecognizer.from_dir(d)
    with pytest.raises(ModelDirError, match="a 'ctc' model, not a 'classify' model"):
        Classifier.from_dir(tiny_dir)
    with pytest.raises(ModelDirError, match="no such model directory"):
        OfflineRecognizer.from_dir(tmp_path / "nowhere")
    code = NO_TORCH + "from wavssl_onnx.cli import main; sys.exit(main())"
    run = subprocess.run([sys.executable, "-c", code, "transcribe", str(tmp_path / "future"), "x.wav"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "newer than this runtime reads" in run.stderr


def _long_audio(speech_dir: Path, seconds: float) -> np.ndarray:
    """Generated utterances back to back (with 0.3 s pauses) up to ``seconds``."""
    pieces, total = [], 0
    files = sorted(speech_dir.glob("*.wav"))
    while total < seconds * RATE:
        wave = sf.read(str(files[len(pieces) % len(files)]), dtype="float32")[0]
        pieces += [wave, np.zeros(int(0.3 * RATE), np.float32)]
        total += len(wave) + int(0.3 * RATE)
    return np.concatenate(pieces)[: int(seconds * RATE)]


def test_chunked_long_audio_matches_whole(tiny_run: Path, speech_dir: Path, tmp_path: Path) -> None:
    audio = _long_audio(speech_dir, 125.0)
    # 1) outputs that depend only on nearby frames (attention switched off): chunking is exact
    local = wavssl.load(tiny_run)
    for layer in local.encoder.context.layers:  # type: ignore[union-attr]
        torch.nn.init.zeros_(layer.attention.out.weight)
    export(local, tmp_path / "local", log=None)
    whole = OfflineRecognizer.from_dir(tmp_path / "local", threads=1, chunk_seconds=1000.0)
    chunked = OfflineRecognizer.from_dir(tmp_path / "local", threads=1, chunk_seconds=30.0, context_seconds=4.0)
    a, b = whole.log_probs([audio])[0], chunked.log_probs([audio])[0]
    assert a.shape == b.shape and np.abs(a - b).max() <= 1e-4
    ha, hb = whole.decode(a), chunked.decode(b)
    assert ha.text == hb.text and ha.words == hb.words and ha.words[-1].end > 100.0  # times are global
    # the file path streams (blocks, streaming resampler): same frames as the array
    sf.write(tmp_path / "long.wav", audio, RATE)
    streamed = chunked.run([tmp_path / "long.wav"])[0]
    assert streamed.hypothesis.text == hb.text and streamed.duration == pytest.approx(125.0)  # type: ignore[union-attr]
    # 2) global attention (random weights: the worst case): nearly the same transcript
    full = tmp_path / "full"
    export(tiny_run, full, log=None)
    whole = OfflineRecognizer.from_dir(full, threads=1, chunk_seconds=1000.0)
    chunked = OfflineRecognizer.from_dir(full, threads=1, chunk_seconds=30.0, context_seconds=4.0)
    ta, tb = whole.transcribe([audio])[0].text, chunked.transcribe([audio])[0].text
    assert cer([ta], [tb]).rate <= 0.05


def test_online_stream_matches_offline_windows_and_only_grows(tiny_dir: Path, speech_dir: Path,
                                                               tmp_path: Path) -> None:
    audio = _long_audio(speech_dir, 20.0)
    rec = OnlineRecognizer.from_dir(tiny_dir, threads=1, chunk_seconds=2.0, context_seconds=1.0)
    offline = rec.recognizer.log_probs_stream(array_blocks(audio, 16000))
    stream = rec.create_stream()
    assert rec.latency == pytest.approx(3.0, abs=0.05)
    rng = np.random.default_rng(0)
    pos, partials = 0, []
    while pos < len(audio):  # pieces of 10-700 ms, as a microphone or a socket delivers them
        n = int(rng.integers(160, 11200))
        stream.accept_waveform(RATE, audio[pos: pos + n])
        pos += n
        partials.append(rec.decode(stream).token_ids)
        recognised = len(stream.log_probs(len(rec.vocab))) * rec.frame_shift
        assert recognised >= pos / RATE - rec.latency - 0.05  # text lags by at most chunk + context
    stream.input_finished()
    final = rec.decode(stream)
    assert np.array_equal(stream.log_probs(len(rec.vocab)), offline)  # the very frames of the offline windows
    assert final.text == rec.recognizer.decode(offline).text
    for ids in partials:  # greedy partials only grow
        assert list(final.token_ids[: len(ids)]) == list(ids)
    with pytest.raises(RuntimeError, match="input_finished"):
        stream.accept_waveform(RATE, audio[:100])
    # audio at another rate, int16 and stereo, is converted as it streams; the rate stays fixed
    audio8k = soxr.resample(audio, RATE, 8000).astype(np.float32)
    pcm = np.stack([audio8k, audio8k], axis=1)
    pcm = (np.clip(pcm, -1, 1) * 32767).astype(np.int16)
    stream8k = rec.create_stream()
    for start in range(0, len(pcm), 1234):
        stream8k.accept_waveform(8000, pcm[start: start + 1234])
    with pytest.raises(ValueError, match="8000 Hz"):
        stream8k.accept_waveform(RATE, audio[:100])
    stream8k.input_finished()
    text8k = rec.decode(stream8k).text
    assert abs(stream8k.samples - len(audio)) <= 16
    assert cer([text8k], [rec.recognizer.transcribe([audio8k], sample_rate=8000)[0].text]).rate <= 0.1
    empty = rec.create_stream()
    empty.input_finished()
    with pytest.raises(AudioError, match="too short"):
        rec.decode(empty)
    # the command line: partials while the file plays, then the same final transcript (no torch)
    sf.write(tmp_path / "live.wav", audio, RATE)
    code = NO_TORCH + "from wavssl_onnx.cli import main; sys.exit(main())"
    run = subprocess.run([sys.executable, "-c", code, "stream", str(tiny_dir), str(tmp_path / "live.wav"), "--json",
                          "--threads", "1", "--chunk-seconds", "2", "--context-seconds", "1"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert lines[-1]["final"] and lines[-1]["text"] == final.text
    assert len(lines) > 2 and all("partial" in line for line in lines[:-1])


# ----------------------------------------------------------------------------------- classifier


def test_classifier_export_and_runtime(classifier: torch.nn.Module, cls_dir: Path, tmp_path: Path) -> None:
    info = json.loads((cls_dir / CONFIG_FILE).read_text())
    assert info["kind"] == "classify" and info["class_names"] == ["walk", "run", "sit", "stand"]
    assert info["in_channels"] == 3 and info["inputs"] == ["series", "lengths"]
    rng = np.random.default_rng(1)
    series = [np.cumsum(rng.standard_normal((3, n)), axis=1).astype(np.float32) for n in (12, 50, 200)]
    series[1][0, 10:20] = np.nan  # missing samples: imputed in the graph as in PyTorch
    clf = Classifier.from_dir(cls_dir, threads=1)
    got = clf.predict(series)
    for s, p in zip(series, got):
        with torch.no_grad():
            want = torch.softmax(classifier(torch.from_numpy(s)[None], torch.tensor([s.shape[1]])).logits, -1)[0]
        assert np.abs(p - want.numpy()).max() <= 1e-4
    np.save(tmp_path / "stack.npy", np.stack([series[2][:, :60], series[2][:, 60:120]]))
    (tmp_path / "one.csv").write_text("time,ax,ay,az\n" + "".join(
        f"{i / 100},{a},{b},{c}\n" for i, (a, b, c) in enumerate(series[2].T)))
    np.save(tmp_path / "wrong.npy", series[2][:2])
    code = NO_TORCH + "from wavssl_onnx.cli import main; sys.exit(main())"
    run = subprocess.run([sys.executable, "-c", code, "classify", str(cls_dir), str(tmp_path / "stack.npy"),
                          str(tmp_path / "one.csv"), str(tmp_path / "wrong.npy"), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    rows = [json.loads(x) for x in run.stdout.strip().splitlines()]
    assert [r["source"].rsplit("/", 1)[-1] for r in rows] == ["stack.npy[0]", "stack.npy[1]", "one.csv", "wrong.npy"]
    csv_probs = np.array(list(rows[2]["probabilities"].values()))
    assert np.abs(csv_probs - got[2]).max() <= 1e-4 and rows[2]["label"] == clf.class_names[int(got[2].argmax())]
    assert "expected (3 channels, time)" in rows[3]["error"] and "wrong.npy" in run.stderr


# ----------------------------------------------------------------------------------- slow


@pytest.mark.slow
def test_one_hour_file_in_bounded_memory(tiny_dir: Path, speech_dir: Path, tmp_path: Path) -> None:
    """A 60-minute 44.1 kHz stereo file streams through the runtime with peak RSS < 1 GB.

    The peak is the child's own high-water mark (``VmHWM``): on Linux ``getrusage``'s ``ru_maxrss``
    carries the parent's (pytest's) high-water mark through fork + exec, so it would measure pytest."""
    piece = _long_audio(speech_dir, 60.0)
    import soxr

    piece = soxr.resample(piece, RATE, 44100).astype(np.float32)
    path = tmp_path / "hour.wav"
    with sf.SoundFile(str(path), "w", samplerate=44100, channels=2, subtype="PCM_16") as f:
        for _ in range(60):
            f.write(np.stack([piece, piece], axis=1))
    code = NO_TORCH + textwrap.dedent(f"""
        import json, resource, time
        from wavssl_onnx import OfflineRecognizer
        start = time.perf_counter()
        r = OfflineRecognizer.from_dir({str(tiny_dir)!r}, int8=True).run([{str(path)!r}])[0]
        hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")]
        peak = int(hwm[0].split()[1]) / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({{"ok": r.ok, "duration": r.duration, "tokens": len(r.hypothesis.token_ids),
                           "last_end": r.hypothesis.words[-1].end, "seconds": time.perf_counter() - start,
                           "peak_rss_mb": peak}}))
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3000)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    print(out)
    assert out["ok"] and out["duration"] == pytest.approx(3600.0, abs=1.0)
    assert out["last_end"] > 3500.0
    assert out["peak_rss_mb"] < 1024


def test_runtime_evaluate_matches_pytorch_scores(tiny_run: Path, tiny_dir: Path, speech_dir: Path,
                                                 tmp_path: Path) -> None:
    """``wavssl-onnx evaluate`` (no torch) gives the WER/CER that ``wavssl evaluate`` gives on the same manifest."""
    lines = (speech_dir / "transcripts.tsv").read_text().splitlines()
    manifest = tmp_path / "test.tsv"
    manifest.write_text("\n".join([lines[0], *(f"{speech_dir / p}\t{t}" for p, t in
                                               (x.split("\t") for x in lines[1:7]))]) + "\n")
    code = NO_TORCH + "from wavssl_onnx.cli import main; sys.exit(main())"
    run = subprocess.run([sys.executable, "-c", code, "evaluate", str(tiny_dir), str(manifest), "--json",
                          "--threads", "1"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    onnx_scores = json.loads(run.stdout)
    ref = subprocess.run([sys.executable, "-m", "wavssl", "evaluate", str(tiny_run), str(manifest), "--json"],
                         capture_output=True, text=True, timeout=120, check=True)
    torch_scores = json.loads(ref.stdout)
    assert onnx_scores["utterances"] == torch_scores["utterances"] == 6
    assert abs(onnx_scores["cer"] - torch_scores["cer"]) < 0.02 and onnx_scores["words"] == torch_scores["words"]


def test_cpu_kind_and_int8_saturation_risk(tmp_path: Path, tiny_dir: Path) -> None:
    """The runtime names the int8 kernel a CPU gets, warns when an int8 model exported without the
    +-64 weight limit runs on an AVX2 CPU without VNNI, and ``wavssl-onnx info`` reports both."""
    from wavssl_onnx import cpu

    def kernel(flags: str) -> str:
        (tmp_path / "cpuinfo").write_text(f"processor\t: 0\nflags\t\t: fpu sse2 {flags}\n")
        return cpu.int8_kernel(cpu.cpu_flags(tmp_path / "cpuinfo"))

    assert kernel("avx avx2 fma") == "avx2-int16-pairs"
    assert kernel("avx2 avx512f avx512bw") == "avx2-int16-pairs"  # AVX-512 without VNNI sums pairs too
    assert kernel("avx2 avx_vnni") == kernel("avx2 avx512f avx512_vnni") == "vnni"
    assert cpu.int8_saturation_risk(None, ["avx2"]) and cpu.int8_saturation_risk(127, ["avx2", "avx512f"])
    assert not cpu.int8_saturation_risk(WEIGHT_LIMIT, ["avx2"]) and not cpu.int8_saturation_risk(None, ["avx512_vnni"])

    old = tmp_path / "old_export"
    shutil.copytree(tiny_dir, old)
    info = json.loads((old / CONFIG_FILE).read_text())
    del info["export"]["int8"]["weight_limit"]  # as exports before the limit wrote it
    (old / CONFIG_FILE).write_text(json.dumps(info))
    at_risk = cpu.int8_kernel() == "avx2-int16-pairs"
    with pytest.warns(UserWarning, match="re-export") if at_risk else _no_warning():
        OfflineRecognizer.from_dir(old, int8=True)
    with _no_warning():
        OfflineRecognizer.from_dir(tiny_dir, int8=True)
    run = subprocess.run([sys.executable, "-m", "wavssl_onnx", "info", str(tiny_dir)], capture_output=True, text=True,
                         timeout=60)
    here = json.loads(run.stdout)["this_cpu"]
    assert here["int8_kernel"] == cpu.int8_kernel() and here["int8_saturation_risk"] is False



@contextlib.contextmanager
def _no_warning() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        yield
