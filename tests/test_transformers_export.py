"""wavssl runs exported as transformers Wav2Vec2 models, and transformers models imported by Hub id.

- A small random-weight waveform recognizer of each front-end / layer-norm kind is exported
  (:func:`wavssl.export_transformers.export_transformers`) and loaded by transformers with no missing
  or unexpected tensor: ``log_softmax(logits)`` of ``Wav2Vec2ForCTC`` (input through the exported
  feature extractor) against wavssl's log-probabilities on generated speech, max |diff| <= 1e-4
  (measured ~1e-6); the ``automatic-speech-recognition`` pipeline gives wavssl's greedy transcripts.
  (No test fixture trains a waveform-front-end recognizer - the trained fixtures use the log-mel
  ``tiny`` preset, which transformers cannot express - so the weights are random: their outputs
  spread over the whole vocabulary, blanks, delimiters and ``<unk>`` included, which exercises the
  tokenizer mapping more than a barely trained model's mostly blank output would.)
- Round trip: random transformers ``Wav2Vec2ForCTC`` (with its tokenizer) and ``Wav2Vec2ForPreTraining``,
  group-norm + post-LN and layer-norm + stable-layer-norm, saved, imported, exported and reloaded:
  identical tensors, configs and outputs.
- Runs transformers cannot express (log-mel front end, bounded positional look-ahead, chunked
  attention, ...) are refused with one line naming the field, and nothing is written.
- Hub ids: a model laid out in a temporary Hugging Face cache (blobs, snapshots, refs) is imported by
  id with ``HF_HUB_OFFLINE=1`` (through the CLI, and by revision); an id missing from the cache gives
  one line naming the id and the cache. Nothing touches the network.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from wavssl_onnx import Vocabulary, read_audio
from wavssl_onnx.decoding import greedy_decode

from wavssl import config as C
from wavssl.export_transformers import TransformersExportError, export_transformers
from wavssl.models import build_recognizer
from wavssl.onnx_graph import standardize
from wavssl.train.checkpoint import load, load_config, save_model
from wavssl.train.importers import (
    TRANSFORMERS_CTC_FIELDS,
    TRANSFORMERS_FIELDS,
    CheckpointImportError,
    CheckpointImportWarning,
    import_checkpoint,
)

transformers = pytest.importorskip("transformers")
huggingface_hub = pytest.importorskip("huggingface_hub")

REPO = Path(__file__).resolve().parents[1]
RATE = 16000
TOL = 1e-4

SMALL = {
    "conv_dim": (32,) * 7, "conv_kernel": (10, 3, 3, 3, 3, 2, 2), "conv_stride": (5, 2, 2, 2, 2, 2, 2),
    "feat_extract_norm": "group", "conv_bias": False, "do_stable_layer_norm": False, "hidden_size": 32,
    "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64, "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4, "num_codevector_groups": 2, "num_codevectors_per_group": 24,
    "codevector_dim": 16, "proj_codevector_dim": 12, "mask_time_prob": 0.05, "layerdrop": 0.1, "final_dropout": 0.05,
}
STABLE = {**SMALL, "feat_extract_norm": "layer", "conv_bias": True, "do_stable_layer_norm": True,
          "num_conv_pos_embeddings": 15, "num_hidden_layers": 3}
HF_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "|", *"ETAONIHSRDLUMWCFGYPBVK'XJQZ"]


# ------------------------------------------------------------------------------------------ helpers


def _vocab() -> Vocabulary:
    return Vocabulary(["<blank>", "<unk>", "|", *string.ascii_lowercase, "'"])


def _waveform_run(run: Path, *, norm_mode: str, pre_ln: bool, normalize: bool, weight_norm: bool = True,
                  seed: int = 0) -> Path:
    """A random-weight waveform-front-end recognizer saved as a run directory (norm affines randomised)."""
    cfg = dataclasses.replace(C.base(), task="ctc")
    m = cfg.model
    m.frontend = dataclasses.replace(m.frontend, conv_layers=((32, 10, 5),) + ((32, 3, 2),) * 4 + ((32, 2, 2),) * 2,
                                     norm_mode=norm_mode, conv_bias=norm_mode == "layer_norm")
    m.context = dataclasses.replace(m.context, embed_dim=48, num_layers=2, num_heads=4, ffn_dim=96,
                                    pos_conv_kernel=16, pos_conv_groups=4, layer_norm_first=pre_ln,
                                    pos_conv_weight_norm=weight_norm)
    cfg.data.normalize = normalize
    torch.manual_seed(seed)
    vocab = _vocab()
    model = build_recognizer(cfg.model, cfg.ctc, len(vocab))
    for mod in model.modules():
        if isinstance(mod, (torch.nn.LayerNorm, torch.nn.GroupNorm)):
            torch.nn.init.normal_(mod.weight, 1.0, 0.2)
            torch.nn.init.normal_(mod.bias, 0.0, 0.2)
    with torch.no_grad():  # mostly blank, some word breaks and <unk>: output shaped like a recognizer's
        model.head.bias[vocab.blank_id] += 1.0
        model.head.bias[vocab.delimiter_id] += 0.7
        model.head.bias[vocab.unk_id] += 0.3
    save_model(run, model, cfg)
    vocab.save(run)
    return run


def _hf_model(cls_name: str, fields: dict[str, Any], seed: int = 0) -> torch.nn.Module:
    """A random transformers model in eval mode, 1-D parameters perturbed (a swapped weight/bias shows)."""
    torch.manual_seed(seed)
    model = getattr(transformers, cls_name)(transformers.Wav2Vec2Config(**fields))
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def _save_hf_ctc(model: torch.nn.Module, folder: Path) -> None:
    """A Wav2Vec2ForCTC with its tokenizer and feature extractor, as the Hub holds fine-tuned models."""
    model.save_pretrained(folder)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(HF_TOKENS)}))
    tokenizer = transformers.Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), unk_token="<unk>", pad_token="<pad>",
                                                  word_delimiter_token="|")
    tokenizer.save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(sampling_rate=RATE, do_normalize=True).save_pretrained(folder)


def _load_hf(cls_name: str, folder: Path) -> torch.nn.Module:
    """``from_pretrained`` that fails on any missing, unexpected or mis-shaped tensor."""
    model, info = getattr(transformers, cls_name).from_pretrained(folder, output_loading_info=True)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    return model.eval()


def _clips(speech_dir: Path, n: int = 4) -> list[np.ndarray]:
    return [read_audio(path, RATE) for path in sorted(speech_dir.glob("*.wav"))[:n]]


# ------------------------------------------------------------------------------ export a wavssl run


@pytest.mark.parametrize(("norm_mode", "pre_ln", "normalize", "weight_norm"),
                         [("default", False, False, True), ("layer_norm", True, True, False)],
                         ids=["groupnorm_postln", "layernorm_preln_standardised_plain_posconv"])
def test_ctc_export_matches_wavssl_on_speech(speech_dir: Path, tmp_path: Path, norm_mode: str, pre_ln: bool,
                                             normalize: bool, weight_norm: bool) -> None:
    run = _waveform_run(tmp_path / "run", norm_mode=norm_mode, pre_ln=pre_ln, normalize=normalize,
                        weight_norm=weight_norm)
    out = export_transformers(run, tmp_path / "hf")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["config.json", "model.safetensors", "preprocessor_config.json", "vocab.json", "tokenizer_config.json",
         "special_tokens_map.json"])
    hf = _load_hf("Wav2Vec2ForCTC", out)
    assert hf.config.feat_extract_norm == ("group" if norm_mode == "default" else "layer")
    assert hf.config.do_stable_layer_norm == pre_ln
    extractor = transformers.AutoFeatureExtractor.from_pretrained(out)
    assert extractor.do_normalize == normalize and extractor.sampling_rate == RATE
    ours = load(run)
    vocab = ours.vocab
    clips = _clips(speech_dir)
    pipe = transformers.pipeline("automatic-speech-recognition", model=str(out), device="cpu")
    worst = 0.0
    for wave in clips:
        x = torch.from_numpy(wave)[None]
        with torch.no_grad():
            if normalize:
                x = standardize(x, torch.tensor([x.shape[1]]))
            want = ours(x).log_probs()[0]
            inputs = extractor(wave, sampling_rate=RATE, return_tensors="pt")
            got = torch.log_softmax(hf(inputs.input_values).logits.float(), -1)[0]
        assert got.shape == want.shape
        worst = max(worst, float((got - want).abs().max()))
        text = greedy_decode(want.numpy(), vocab).text
        hf_text = pipe({"raw": wave, "sampling_rate": RATE})["text"]
        assert len(text.split()) > 1, text
        # the same text; only transformers' decoder keeps two spaces for "| <blank> |" where wavssl writes one
        assert hf_text == text or (hf_text.split() == text.split() and "  " in hf_text), (hf_text, text)
    print(f"{norm_mode}: max |log p_transformers - log p_wavssl| = {worst:.2e} over {len(clips)} clips")
    assert worst <= TOL


def test_cli_export_format_transformers(tmp_path: Path) -> None:
    """``wavssl export RUN --out DIR --format transformers`` writes what the library call writes;
    ONNX-only flags are refused in one line before anything is written."""
    run = _waveform_run(tmp_path / "run", norm_mode="default", pre_ln=False, normalize=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "wavssl", "export", str(run), "--format", "transformers"]
    subprocess.run([*cli, "--out", str(tmp_path / "hf")], check=True, cwd=tmp_path, env=env, capture_output=True)
    want = export_transformers(run, tmp_path / "lib")
    for name in ("model.safetensors", "config.json", "vocab.json", "preprocessor_config.json"):
        assert (tmp_path / "hf" / name).read_bytes() == (want / name).read_bytes(), name
    done = subprocess.run([*cli, "--out", str(tmp_path / "bad"), "--int8"], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert done.returncode != 0 and not (tmp_path / "bad").exists()
    assert "--int8 applies to ONNX exports, not --format transformers" in done.stderr


def test_pretraining_run_export(tmp_path: Path) -> None:
    """An SSL run becomes a Wav2Vec2ForPreTraining whose encoder, quantizer and projections agree."""
    cfg = C.base()
    m = cfg.model
    m.frontend = dataclasses.replace(m.frontend, conv_layers=((32, 10, 5),) + ((32, 3, 2),) * 4 + ((32, 2, 2),) * 2)
    m.context = dataclasses.replace(m.context, embed_dim=32, num_layers=2, num_heads=4, ffn_dim=64,
                                    pos_conv_kernel=16, pos_conv_groups=4)
    m.quantizer = dataclasses.replace(m.quantizer, groups=2, entries=16, dim=16)
    m.final_dim = 12
    from wavssl.models import build_model

    torch.manual_seed(1)
    ssl = build_model(m).eval()
    save_model(tmp_path / "run", ssl, cfg)
    out = export_transformers(tmp_path / "run", tmp_path / "hf")
    assert not (out / "vocab.json").exists()
    hf = _load_hf("Wav2Vec2ForPreTraining", out)
    wav = torch.randn(2, 12000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = hf.wav2vec2(wav)
        got = ssl.encode(wav)
        q = ssl.quantizer(got.features.reshape(-1, got.features.shape[-1]))
        hf_q, _ = hf.quantizer(ref.extract_features)
        diffs = {
            "last": float((ref.last_hidden_state - got.last_hidden_state).abs().max()),
            "codevectors": float((hf_q.reshape(q.quantized.shape) - q.quantized).abs().max()),
            "project_q": float((hf.project_q(hf_q).reshape(-1, 12) - ssl.project_q(q.quantized)).abs().max()),
            "project_hid": float((hf.project_hid(ref.last_hidden_state) - ssl.final_proj(got.last_hidden_state)).abs().max()),
        }
    print("pretraining export:", diffs)
    assert max(diffs.values()) <= TOL


# --------------------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("cls_name", ["Wav2Vec2ForCTC", "Wav2Vec2ForPreTraining"])
@pytest.mark.parametrize("fields", [SMALL, STABLE], ids=["group_postln", "layer_stable"])
def test_transformers_round_trip(tmp_path: Path, cls_name: str, fields: dict[str, Any]) -> None:
    ctc = cls_name == "Wav2Vec2ForCTC"
    src = _hf_model(cls_name, {**fields, "vocab_size": len(HF_TOKENS)})
    if ctc:
        _save_hf_ctc(src, tmp_path / "src")
    else:
        src.save_pretrained(tmp_path / "src")
    run = import_checkpoint(tmp_path / "src", tmp_path / "run")
    cfg = load_config(run)
    assert cfg.task == ("ctc" if ctc else "pretrain")
    if ctc:
        vocab = Vocabulary.load(run)
        assert vocab.tokens == HF_TOKENS and (vocab.blank, vocab.unk, vocab.word_delimiter) == ("<pad>", "<unk>", "|")
    out = export_transformers(run, tmp_path / "back")
    back = _load_hf(cls_name, out)
    want, got = src.state_dict(), back.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want), [k for k in want if not torch.equal(want[k], got[k])]
    a, b = src.config, back.config
    for key, *_ in [*TRANSFORMERS_FIELDS, *(TRANSFORMERS_CTC_FIELDS if ctc else ())]:
        assert getattr(a, key) == pytest.approx(getattr(b, key)), key
    for key in ("conv_dim", "conv_kernel", "conv_stride", "feat_extract_norm", "do_stable_layer_norm"):
        assert tuple(getattr(a, key)) == tuple(getattr(b, key)) if isinstance(getattr(a, key), (list, tuple)) \
            else getattr(a, key) == getattr(b, key), key
    wav = torch.randn(2, 9000, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        if ctc:
            assert torch.equal(src(wav).logits, back(wav).logits)
            ours = load(run)  # the imported recognizer computes what the source computes, head included
            diff = float((ours(wav).log_probs() - torch.log_softmax(src(wav).logits, -1)).abs().max())
            assert diff <= TOL, diff
            tok_a = transformers.AutoTokenizer.from_pretrained(tmp_path / "src")
            tok_b = transformers.AutoTokenizer.from_pretrained(out)
            ids = [5, 5, 0, 6, 4, 0, 7, 3, 8, 8, 4, 9]
            assert tok_a.decode(ids) == tok_b.decode(ids)
        else:
            assert torch.equal(src.wav2vec2(wav).last_hidden_state, back.wav2vec2(wav).last_hidden_state)


def test_ctc_source_without_tokenizer_imports_encoder_only(tmp_path: Path) -> None:
    _hf_model("Wav2Vec2ForCTC", {**SMALL, "vocab_size": 12}).save_pretrained(tmp_path / "src")
    with pytest.warns(CheckpointImportWarning) as record:
        run = import_checkpoint(tmp_path / "src", tmp_path / "run")
    messages = " | ".join(str(w.message) for w in record)
    assert "lm_head.bias, lm_head.weight) is not imported (no vocab.json" in messages, messages
    assert load_config(run).task == "pretrain" and not (run / "vocab.json").exists()


def test_ctc_source_with_blank_not_first_is_refused(tmp_path: Path) -> None:
    src = _hf_model("Wav2Vec2ForCTC", {**SMALL, "vocab_size": len(HF_TOKENS)})
    _save_hf_ctc(src, tmp_path / "src")
    (tmp_path / "src" / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(HF_TOKENS[1:] + ["<pad>"])}))
    with pytest.raises(CheckpointImportError, match=r"vocab\.json: the CTC blank \(pad token '<pad>'.*must be token 0"):
        import_checkpoint(tmp_path / "src", tmp_path / "run")


# ------------------------------------------------------------------------------------------ refusals


def _save_config(run: Path, cfg: C.Config) -> Path:
    run.mkdir(parents=True)
    C.save_json(cfg, run / "config.json")
    return run


def _waveform_cfg(task: str = "ctc") -> C.Config:
    return dataclasses.replace(C.base(), task=task)


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c.model.__setattr__("frontend", C.FbankFrontend()),
     r"model\.frontend\.kind = 'fbank': transformers' Wav2Vec2 has only the raw-waveform conv front end, no log-mel"),
    (lambda c: c.model.__setattr__("frontend", C.SensorFrontend()), r"model\.frontend\.kind = 'sensor'"),
    (lambda c: c.model.frontend.__setattr__("norm_mode", "none"), r"model\.frontend\.norm_mode = 'none'"),
    (lambda c: c.model.context.__setattr__("pos_conv_lookahead", 4), r"model\.context\.pos_conv_lookahead = 4: .*bounded look-ahead"),
    (lambda c: c.model.context.__setattr__("attention_chunk", 8), r"model\.context\.attention_chunk = 8: .*chunked"),
    (lambda c: c.__setattr__("task", "classify"), r"task = 'classify'"),
], ids=["fbank", "sensor", "no_conv_norm", "lookahead", "chunked_attention", "classifier"])
def test_inexpressible_runs_are_refused(tmp_path: Path, change: Any, message: str) -> None:
    cfg = _waveform_cfg()
    change(cfg)
    run = _save_config(tmp_path / "run", cfg)
    with pytest.raises(TransformersExportError, match=rf"run/config\.json: cannot export to transformers: {message}"):
        export_transformers(run, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_tiny_log_fbank_recognizer_is_refused(tmp_path: Path) -> None:
    """The ``tiny`` preset's recognizer (log-mel front end), saved as a whole run."""
    cfg = dataclasses.replace(C.tiny(), task="ctc")
    vocab = _vocab()
    save_model(tmp_path / "run", build_recognizer(cfg.model, cfg.ctc, len(vocab)), cfg)
    vocab.save(tmp_path / "run")
    with pytest.raises(TransformersExportError, match=r"kind = 'fbank'.*no log-mel \(fbank\) front end.*wavssl export"):
        export_transformers(tmp_path / "run", tmp_path / "hf")


# ------------------------------------------------------------------------------------------- Hub ids

HUB_ID = "wavssl-test/tiny-w2v2-ctc"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_home(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    """``HF_HOME`` holding HUB_ID in huggingface_hub's cache layout: content-addressed blobs, a snapshot
    of symlinks named by commit, and ``refs/main`` pointing at it."""
    model = _hf_model("Wav2Vec2ForCTC", {**STABLE, "vocab_size": len(HF_TOKENS)}, seed=5)
    files = tmp_path / "files"
    _save_hf_ctc(model, files)
    repo = tmp_path / "hf_home" / "hub" / ("models--" + HUB_ID.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / COMMIT).mkdir(parents=True)
    (repo / "refs").mkdir()
    for path in files.iterdir():
        data = path.read_bytes()
        blob = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        (repo / "snapshots" / COMMIT / path.name).symlink_to(Path("..", "..", "blobs", blob))
    (repo / "refs" / "main").write_text(COMMIT)
    return tmp_path / "hf_home", model


@pytest.fixture
def offline_hub(hub_home: tuple[Path, torch.nn.Module], monkeypatch: pytest.MonkeyPatch) -> tuple[Path, torch.nn.Module]:
    """The same cache for in-process calls: huggingface_hub reads its environment at import, so its
    constants are patched too (HF_HUB_OFFLINE=1: a request would raise instead of reaching out)."""
    home, _ = hub_home
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return hub_home


def test_import_by_hub_id_through_the_cli(hub_home: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    home, model = hub_home
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("HF_HUB_CACHE", None)
    subprocess.run([sys.executable, "-m", "wavssl", "import-checkpoint", HUB_ID, str(tmp_path / "run"),
                    "--revision", COMMIT], check=True, cwd=tmp_path, env=env)
    ours = load(tmp_path / "run")
    assert ours.vocab.tokens == HF_TOKENS and load_config(tmp_path / "run").data.normalize
    wav = torch.randn(1, 8000, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        diff = float((ours(wav).log_probs() - torch.log_softmax(model(wav).logits, -1)).abs().max())
    assert diff <= TOL, diff


def test_import_by_hub_id_and_revision(offline_hub: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    import wavssl

    a = wavssl.import_checkpoint(HUB_ID, tmp_path / "a")
    b = import_checkpoint(HUB_ID, tmp_path / "b", revision=COMMIT)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    with pytest.raises(CheckpointImportError, match=rf"{HUB_ID}@v9.*not in the Hugging Face cache"):
        import_checkpoint(HUB_ID, tmp_path / "c", revision="v9")


def test_hub_id_not_in_cache_is_one_clear_line(offline_hub: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    home, _ = offline_hub
    with pytest.raises(CheckpointImportError) as caught:
        import_checkpoint("wavssl-test/absent", tmp_path / "run")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("wavssl-test/absent: no such local path, and Hub model 'wavssl-test/absent' is not in "
                              f"the Hugging Face cache at {home / 'hub'} (HF_HUB_OFFLINE is set)")
    assert "hf download wavssl-test/absent" in message and not (tmp_path / "run").exists()


def test_local_looking_paths_and_revision_misuse(offline_hub: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    with pytest.raises(CheckpointImportError, match=r"missing\.pt: no such file or directory$"):
        import_checkpoint(tmp_path / "missing.pt", tmp_path / "run")
    with pytest.raises(CheckpointImportError, match=r"checkpoint_best\.pt: no such file or directory$"):
        import_checkpoint("checkpoint_best.pt", tmp_path / "run")
    (tmp_path / "src").mkdir()
    with pytest.raises(CheckpointImportError, match=r"revision='main' applies to Hugging Face Hub ids"):
        import_checkpoint(tmp_path / "src", tmp_path / "run", revision="main")
