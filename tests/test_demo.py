"""The browser demo (``demo/``, ``wavssl demo``), driven in headless Debian Chromium and through
gradio_client.

One app and one browser per module. The models are built here with random weights (the demo's
committed models are not needed): a tiny log-mel recognizer given to the app as a *run directory*
(so the app exports it to ONNX in its cache, as ``wavssl demo --model RUN`` does), a 3-channel sensor
classifier as an exported ONNX directory, and a tiny pretraining run for the "What pretraining
learned" tab. Example clips come from the built-in speech synthesizer.

What is compared with what:

- Transcribe tab: the transcript in the page equals :class:`wavssl_onnx.OfflineRecognizer` on the
  same file (same int8 setting), the word table has its words, the posteriorgram is drawn, a click
  on a word plays it, and JSON and SRT downloads are offered; through the API, beam search with an
  n-gram LM equals the runtime's beam search with the same LM.
- Live tab: Chromium's fake microphone plays a clip (``--use-file-for-fake-audio-capture``, a
  16-bit WAV: the clip between stretches of silence); the partial text grows while it plays, and
  after "stop" the utterances together equal offline decoding, in the live recognizer's windows, of
  the audio the server received (offered as a download). That audio is the clip: the browser
  starts recording at an arbitrary point of the looping fake source, runs its own audio processing
  (gain control, noise suppression) and gradio drops the last partial block, so the received audio
  is checked against the file by cross-correlation rather than sample by sample. With random
  weights a sub-frame shift changes the transcript, so the text of the file itself is no reference.
- Pretraining tab: the accuracy on the page is the model's own ``forward`` accuracy with the same
  masks (``MaskSampler`` with the same seed).
- Sensor tab: the predicted class is :class:`wavssl_onnx.Classifier`'s.
- Limits: a file over the upload limit gets gradio's size message, audio over the duration limit
  gets the demo's message; nothing breaks the page.

Screenshots of each tab go to ``test-output/demo/`` (git-ignored).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import string
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

pytest.importorskip("gradio")
pytest.importorskip("matplotlib")

from wavssl_onnx import BeamSearch, Classifier, OfflineRecognizer, Vocabulary  # noqa: E402
from wavssl_onnx.audio import read_audio, stream_audio  # noqa: E402
from wavssl_onnx.lm import load_lm  # noqa: E402

from demo import Limits, build_app  # noqa: E402
from demo.models import Catalog, ModelError, discover, read_card  # noqa: E402
from demo.transcribe import cues, to_srt  # noqa: E402
from wavssl import config as C  # noqa: E402
from wavssl.data.synth import synthesize_corpus  # noqa: E402
from wavssl.export import export  # noqa: E402
from wavssl.models import MaskSampler, build_classifier, build_model, build_recognizer  # noqa: E402
from wavssl.train.checkpoint import save_model  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SHOTS = Path(__file__).resolve().parent.parent / "test-output" / "demo"
LIMITS = Limits(max_file_mb=1, max_seconds=20, concurrency=2)
CLASSES = ["walk", "run", "sit", "stand"]
LEAD, GAP, TAIL = 1.0, 0.4, 3.0
"""Seconds of silence before, between and after the two clips the fake microphone plays."""


# ------------------------------------------------------------------------------------ models


def _recognizer_run(run: Path) -> Path:
    """A random tiny recognizer saved as a fine-tuning run (word breaks made likelier, so its
    nonsense has several words)."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(C.tiny(), task="ctc")
    vocab = Vocabulary(["<blank>", "<unk>", "|", *string.ascii_lowercase, "'"])
    model = build_recognizer(cfg.model, cfg.ctc, len(vocab)).eval()
    for mod in model.modules():  # non-trivial norms, as a trained model has
        if isinstance(mod, (torch.nn.LayerNorm, torch.nn.GroupNorm)):
            torch.nn.init.normal_(mod.weight, 1.0, 0.2)
            torch.nn.init.normal_(mod.bias, 0.0, 0.2)
    with torch.no_grad():
        model.head.bias[vocab.delimiter_id] += 1.5
    model.vocab = vocab
    save_model(run, model, cfg)
    vocab.save(run)
    (run / "MODEL_CARD.md").write_text("# Test recognizer\n\nRandom weights: it transcribes nonsense.\n"
                                       "Built by tests/test_demo.py.\n\n## Training\n\nNone.\n", encoding="utf-8")
    return run


def _classifier_dir(out: Path) -> Path:
    torch.manual_seed(3)
    cfg = C.sensor_tiny()
    cfg.model.frontend.in_channels = 3
    cfg.model.frontend = dataclasses.replace(cfg.model.frontend, norm="instance")
    model = build_classifier(cfg.model, cfg.classify, len(CLASSES))
    model.class_names = list(CLASSES)
    export(model.eval(), out, log=None)
    return out


def _ssl_run(run: Path) -> Path:
    torch.manual_seed(1)
    cfg = C.tiny()
    save_model(run, build_model(cfg.model).eval(), cfg)
    return run


@dataclasses.dataclass
class Fixture:
    asr_run: Path
    cls_dir: Path
    ssl_run: Path
    cache: Path
    examples: Path
    clips: list[Path]
    texts: list[str]
    series: list[Path]
    mic_file: Path
    """What the fake microphone plays: two clips between silences, 48 kHz 16-bit WAV."""


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    root = tmp_path_factory.mktemp("demo")
    speech = root / "speech"
    synthesize_corpus(speech, num_utterances=3, seed=5)
    examples = root / "examples"
    examples.mkdir()
    rows = [line.split("\t") for line in (speech / "transcripts.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    clips, texts = [], []
    for name, text in rows:
        shutil.copy(speech / name, examples / name)
        clips.append(examples / name)
        texts.append(text)
    (examples / "examples.tsv").write_text("path\ttext\n" + "".join(f"{c.name}\t{t}\n" for c, t in zip(clips, texts)),
                                           encoding="utf-8")
    rng = np.random.default_rng(0)
    np.save(examples / "gesture.npy", rng.standard_normal((3, 200)).astype(np.float32))
    np.savetxt(examples / "walk.csv", rng.standard_normal((150, 3)), delimiter=",", header="x,y,z", comments="")
    (one, rate), (two, _) = (sf.read(c, dtype="float32") for c in clips[:2])
    padded = np.concatenate([np.zeros(int(LEAD * rate)), one, np.zeros(int(GAP * rate)), two,
                             np.zeros(int(TAIL * rate))]).astype(np.float32)
    mic = root / "mic48k.wav"
    sf.write(mic, soxr.resample(padded, rate, 48000), 48000, subtype="PCM_16")
    return Fixture(_recognizer_run(root / "asr_run"), _classifier_dir(root / "sensor_onnx"), _ssl_run(root / "ssl_run"),
                   root / "cache", examples, clips, texts, [examples / "gesture.npy", examples / "walk.csv"], mic)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def app(models: Fixture) -> Iterator[Any]:
    """The demo, launched in this process on a free port (``app.local_url``)."""
    demo = build_app([models.asr_run, models.cls_dir, models.ssl_run], examples=models.examples, limits=LIMITS,
                     threads=1, cache_dir=models.cache)
    demo.launch(prevent_thread_lock=True, server_port=_free_port(), quiet=True)
    yield demo
    demo.close()


@pytest.fixture(scope="module")
def asr_dir(app: Any) -> Path:
    """The ONNX directory the app exported the recognizer run to."""
    return app.catalog.get(None, "ctc").onnx_dir


@pytest.fixture(scope="module")
def browser(models: Fixture, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Debian Chromium (never a downloaded browser) whose microphone plays ``mic_file``."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    SHOTS.mkdir(parents=True, exist_ok=True)
    pw = sync_api.sync_playwright().start()
    args = CHROMIUM_ARGS + ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                            f"--use-file-for-fake-audio-capture={models.mic_file}"]
    context = pw.chromium.launch_persistent_context(str(tmp_path_factory.mktemp("profile")),
                                                    executable_path=str(CHROMIUM), headless=True, args=args,
                                                    viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    yield context
    context.close()
    pw.stop()


@pytest.fixture
def page(browser: Any, app: Any) -> Iterator[Any]:
    p = browser.new_page()
    p.goto(app.local_url)
    p.wait_for_selector("#tabs")
    yield p
    p.close()


def _tab(page: Any, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def _upload_audio(page: Any, component: str, path: Path) -> None:
    page.set_input_files(f"{component} input[type=file]", str(path))
    page.wait_for_selector(f"{component} audio", state="attached")  # the upload finished: a player appears


def _errors(page: Any) -> str:
    return "\n".join(page.locator(".toast-body").all_inner_texts())


# ------------------------------------------------------------------------------------ browser


def test_transcribe_tab_matches_the_runtime(page: Any, models: Fixture, asr_dir: Path) -> None:
    clip = models.clips[0]
    _upload_audio(page, "#asr-audio", clip)
    page.fill("#asr-reference textarea", models.texts[0])
    page.click("#asr-run")
    page.wait_for_function("document.querySelector('#transcript textarea').value.length > 0")
    expected = OfflineRecognizer.from_dir(asr_dir, threads=1, int8=True).transcribe([clip])[0]
    assert page.input_value("#transcript textarea") == expected.text
    assert len(expected.words) >= 2
    stats = page.inner_text("#asr-stats")
    assert "real-time factor" in stats and "WER vs reference" in stats
    # the word table: one row per word, with its times
    first = expected.words[0]
    assert page.inner_text('#words [data-testid="cell-0-1"]') == first.word
    assert float(page.inner_text('#words [data-testid="cell-0-3"]')) == pytest.approx(first.end, abs=0.01)
    page.wait_for_selector("#posteriorgram img")
    downloads = page.locator("#asr-files a[download]").evaluate_all("a => a.map(x => x.getAttribute('download'))")
    assert sorted(Path(d).suffix for d in downloads) == [".json", ".srt"]
    page.click('#words [data-testid="cell-1-1"]')  # a click on a word plays it
    page.wait_for_selector("#word-player audio", state="attached")
    page.screenshot(path=str(SHOTS / "transcribe.png"), full_page=True)
    assert not _errors(page)


def _envelope(wave: np.ndarray, hop: int = 160) -> np.ndarray:
    """(T,) -> (T / hop,) log RMS per 10 ms."""
    n = len(wave) // hop
    return np.log(np.sqrt((wave[: n * hop].reshape(n, hop) ** 2).mean(1)) + 1e-4)


def _matches(part: np.ndarray, whole: np.ndarray, piece: int = 50) -> list[float]:
    """For every 0.5 s piece of ``part`` that is not silence, its best correlation with any stretch of
    ``whole`` (pieces, not one shift: blocks that did not arrive leave gaps in ``part``)."""
    windows = np.lib.stride_tricks.sliding_window_view(whole, piece)
    windows = windows[windows.std(1) > 0.1]
    windows = (windows - windows.mean(1, keepdims=True)) / windows.std(1, keepdims=True)
    out = []
    for k in range(0, len(part) - piece + 1, piece):
        x = part[k: k + piece]
        if x.std() > 0.5:
            out.append(float((windows @ ((x - x.mean()) / x.std())).max() / piece))
    return out


def test_live_tab_streams_the_microphone(page: Any, models: Fixture, asr_dir: Path, tmp_path: Path) -> None:
    _tab(page, "Live")
    page.click("#live-mic .record-button")
    # Wait on what the page shows, not on the clock (a loaded machine sends fewer, larger updates):
    # until the partial text has grown at least once and an utterance has closed (the partial is empty
    # in a pause), at the earliest once the clip has played into its trailing silence. The fake
    # microphone loops the clip, so a slow machine simply gets more utterances to show growth in.
    duration = sf.info(models.mic_file).duration
    earliest, latest = duration - TAIL + 2.0, 4 * duration + 30.0
    start, partials = time.monotonic(), []
    while (elapsed := time.monotonic() - start) < latest:
        text = page.input_value("#live-partial textarea")
        if text and (not partials or partials[-1] != text):
            partials.append(text)
        grown = any(b.startswith(a) and len(b) > len(a) for a, b in zip(partials, partials[1:]))
        if grown and not text and elapsed >= earliest:
            break
        time.sleep(0.05)
    page.click("#live-mic .stop-button")
    page.wait_for_selector("#live-recording a[download]")
    utterances = page.input_value("#live-utterances textarea").splitlines()
    page.screenshot(path=str(SHOTS / "live.png"), full_page=True)
    assert partials, "no partial text while the clip played"
    assert any(b.startswith(a) and len(b) > len(a) for a, b in zip(partials, partials[1:])), partials  # it grows
    assert utterances and all(u.startswith(f"{i}. ") for i, u in enumerate(utterances, start=1))
    said = "".join("".join(u.split(" ", 1)[1].split()) for u in utterances)
    # the audio the server got, decoded offline in the live recognizer's windows
    link = page.locator("#live-recording a[download]").first.get_attribute("href")
    received = tmp_path / "received.wav"
    with urllib.request.urlopen(link, timeout=30) as r:
        received.write_bytes(r.read())
    rec = OfflineRecognizer.from_dir(asr_dir, threads=1, int8=True, chunk_seconds=2.0, context_seconds=1.0)
    offline = rec.decode(rec.log_probs_stream(stream_audio(received, rec.sample_rate, block_seconds=2.0))).text
    assert said == "".join(offline.split())
    # ... and that audio is what the fake microphone played (loudness over time; the browser's gain
    # control and noise suppression change the samples themselves)
    got, sent = _envelope(read_audio(received, 16000)), _envelope(read_audio(models.mic_file, 16000))
    assert len(got) > 0.6 * len(sent)
    matches = _matches(got, sent)
    assert len(matches) >= 4 and np.median(matches) > 0.75, matches
    assert "text updates" in page.inner_text("#live-summary")
    assert page.locator("#live-latency [data-testid='cell-0-2']").count()  # the latency table has rows


def test_pretraining_tab_plays_the_models_own_game(page: Any, models: Fixture) -> None:
    _tab(page, "What pretraining learned")
    _upload_audio(page, "#ssl-audio", models.clips[1])
    page.fill("#ssl-seed input", "3")
    page.click("#ssl-run")
    page.wait_for_selector("#ssl-layers img")
    text = page.inner_text("#ssl-result")
    # the model's own forward, with the same masks, scores the same accuracy
    model = Catalog.from_paths([models.ssl_run]).ssl_model(None)
    wave = torch.from_numpy(read_audio(models.clips[1], 16000))[None]
    lengths = torch.tensor([wave.shape[1]])
    with torch.no_grad():
        loss = model(wave, lengths, masks=MaskSampler(model.cfg)(lengths, wave.shape[1], 3))
    right, total = int(round(float(loss.accuracy) * int(loss.num_masked))), int(loss.num_masked)
    assert f"{right} of {total} masked frames" in text, text
    assert page.locator("#ssl-game img").count() and page.locator("#ssl-codes img").count()
    page.screenshot(path=str(SHOTS / "pretraining.png"), full_page=True)


def test_sensor_tab_classifies_a_series(page: Any, models: Fixture) -> None:
    _tab(page, "Sensor")
    page.set_input_files("#sensor-file input[type=file]", str(models.series[1]))
    page.wait_for_selector("#sensor-file a[download]")
    page.click("#sensor-run")
    page.wait_for_selector("#sensor-plot img")
    from wavssl_onnx.classifier import load_series

    probs = Classifier.from_dir(models.cls_dir, threads=1).predict(load_series(models.series[1]))[0]
    assert page.inner_text("#sensor-label h2") == CLASSES[int(probs.argmax())]
    assert "1 series" in page.inner_text("#sensor-message")
    page.screenshot(path=str(SHOTS / "sensor.png"), full_page=True)


def test_limits_give_messages(page: Any, models: Fixture, tmp_path: Path) -> None:
    big = tmp_path / "big.wav"  # 1.9 MB > the 1 MB limit
    sf.write(big, np.zeros(48000 * 20, np.float32), 48000, subtype="PCM_16")
    page.set_input_files("#asr-audio input[type=file]", str(big))
    page.wait_for_selector(".toast-body")
    assert "exceed the maximum allowed size of 1.0 Mb" in _errors(page)
    page.screenshot(path=str(SHOTS / "limit.png"))
    # the page still works
    _upload_audio(page, "#asr-audio", models.clips[2])
    page.click("#asr-run")
    page.wait_for_function("document.querySelector('#transcript textarea').value.length > 0")


def test_example_clip_and_session_cleanup(page: Any, app: Any, models: Fixture) -> None:
    before = set(app.session_files.root.iterdir())
    page.click("#asr-examples button >> nth=0")  # an example clip fills the audio and the reference
    page.wait_for_selector("#asr-audio audio", state="attached")
    assert page.input_value("#asr-reference textarea") == models.texts[0]
    page.click("#asr-run")
    page.wait_for_selector("#posteriorgram img")
    page.screenshot(path=str(SHOTS / "page.png"), full_page=True)
    (folder,) = set(app.session_files.root.iterdir()) - before  # this session's JSON and SRT
    assert sorted(p.suffix for p in folder.iterdir()) == [".json", ".srt"]
    page.close()  # the tab closes: its files go
    deadline = time.monotonic() + 20
    while folder.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not folder.exists()


# ------------------------------------------------------------------------------------ API


@pytest.fixture(scope="module")
def client(app: Any) -> Any:
    from gradio_client import Client

    return Client(app.local_url, verbose=False)


def test_api_beam_search_with_lm(client: Any, models: Fixture, asr_dir: Path, tmp_path: Path) -> None:
    from gradio_client import handle_file

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(models.texts * 3), encoding="utf-8")
    clip = models.clips[1]
    out = client.predict(handle_file(str(clip)), "", "asr_run", False, "beam", 6, handle_file(str(corpus)), 3, "char",
                         0.7, api_name="/transcribe")
    rec = OfflineRecognizer.from_dir(asr_dir, threads=1)
    lm = load_lm(corpus, language=rec.info.language, order=3, level="char")
    expected = rec.transcribe([clip], decoding=BeamSearch(6, lm, 0.7))[0]
    text, stats, words, files = out[:4]
    assert text == expected.text
    assert "beam 6 + 3-gram char LM" in stats
    assert [row[1] for row in words["data"]] == [w.word for w in expected.words]
    result = json.loads(Path(next(f for f in files if f.endswith(".json"))).read_text(encoding="utf-8"))
    assert result["text"] == expected.text and result["words"] == [w.to_dict() for w in expected.words]
    srt = Path(next(f for f in files if f.endswith(".srt"))).read_text(encoding="utf-8")
    assert srt == to_srt(expected.words) and srt.startswith("1\n00:00:0")


def test_api_duration_limit_and_bad_files(client: Any, tmp_path: Path) -> None:
    from gradio_client import handle_file

    long = tmp_path / "long.wav"  # 25 s > the 20 s limit, 400 kB
    sf.write(long, np.zeros(8000 * 25, np.float32), 8000, subtype="PCM_16")
    with pytest.raises(Exception, match="at most 20 s"):
        client.predict(handle_file(str(long)), "", "asr_run", False, "greedy", 8, None, 4, "char", 0.5,
                       api_name="/transcribe")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio" * 10)
    with pytest.raises(Exception, match="cannot decode"):
        client.predict(handle_file(str(junk)), "", "asr_run", False, "greedy", 8, None, 4, "char", 0.5,
                       api_name="/transcribe")
    bad = tmp_path / "two_channels.npy"
    np.save(bad, np.zeros((2, 100), np.float32))
    with pytest.raises(Exception, match="expected \\(3 channels"):
        client.predict(handle_file(str(bad)), "sensor_onnx", 0, api_name="/classify")


def test_api_classify_and_endpoints(client: Any, models: Fixture, tmp_path: Path) -> None:
    from gradio_client import handle_file

    label, message, table, _ = client.predict(handle_file(str(models.series[0])), "sensor_onnx", 0,
                                              api_name="/classify")
    probs = Classifier.from_dir(models.cls_dir, threads=1).predict([np.load(models.series[0])])[0]
    assert label["label"] == CLASSES[int(probs.argmax())]
    assert table["data"][0][2] == label["label"]
    # a .ts file (aeon/sktime text format, read by wavssl's reader) with two labelled series
    rng = np.random.default_rng(1)
    rows = [(rng.standard_normal((3, n)).round(4), y) for n, y in ((120, "run"), (90, "sit"))]
    ts = tmp_path / "two.ts"
    ts.write_text("@problemName two\n@univariate false\n@dimensions 3\n@classLabel true walk run sit stand\n@data\n"
                  + "".join(":".join(",".join(f"{v:.4f}" for v in ch) for ch in x) + f":{y}\n" for x, y in rows),
                  encoding="utf-8")
    label, message, table, _ = client.predict(handle_file(str(ts)), "sensor_onnx", 1, api_name="/classify")
    probs = Classifier.from_dir(models.cls_dir, threads=1).predict([x.astype(np.float32) for x, _ in rows])
    assert [row[2] for row in table["data"]] == [CLASSES[int(p.argmax())] for p in probs]
    assert [row[4] for row in table["data"]] == ["run", "sit"] and "stored label: sit" in message
    assert label["label"] == CLASSES[int(probs[1].argmax())]
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/transcribe", "/live_start", "/live_chunk", "/live_stop", "/pretraining_view", "/classify"} <= names


# ------------------------------------------------------------------------------------ pieces


def test_model_discovery_and_cards(models: Fixture, app: Any, tmp_path: Path) -> None:
    assert app.local_url.startswith("http://127.0.0.1:")  # bound to the loopback interface by default
    entries = {e.name: e for e in app.catalog.entries.values()}
    assert {e.kind for e in entries.values()} == {"ctc", "classify", "ssl"}
    asr = entries["asr_run"]
    assert asr.card == "Random weights: it transcribes nonsense.\nBuilt by tests/test_demo.py."
    assert asr.onnx_dir is not None and asr.onnx_dir.parent == models.cache and asr.has_int8
    assert "No model card" in entries["sensor_onnx"].card
    # the exported run is reused, not exported again
    before = (asr.onnx_dir / "model.onnx").stat().st_mtime_ns
    again, _ = discover([models.asr_run], cache_dir=models.cache)
    assert again[0].onnx_dir == asr.onnx_dir and (asr.onnx_dir / "model.onnx").stat().st_mtime_ns == before
    # a folder of models: unusable directories are skipped with a note; a named one raises
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copytree(models.cls_dir, folder / "sensor")
    (folder / "broken").mkdir()
    (folder / "broken" / "wavssl.json").write_text("{", encoding="utf-8")
    found, notes = discover([folder])
    assert [e.name for e in found] == ["sensor"] and len(notes) == 1 and "broken" in notes[0]
    with pytest.raises(ModelError, match="broken"):
        discover([folder / "broken"])
    assert read_card(tmp_path) == ""


def test_page_without_models_says_so(tmp_path: Path) -> None:
    from demo.app import models_markdown

    app = build_app([tmp_path], examples=None)
    text = models_markdown(app.catalog)
    assert "No models loaded" in text and not app.catalog.entries
    assert "transcript" not in json.dumps(app.get_config_file()).lower()  # no tab without a model


def test_committed_models_work() -> None:
    """The models shipped in demo/models/ (when present) load and run on their example clips."""
    from demo.app import DEFAULT_EXAMPLES, read_examples

    entries, notes = discover()
    if not entries:
        pytest.skip("no models committed under demo/models/")
    assert not notes, notes
    catalog = Catalog(entries, threads=1)
    clips, series = read_examples(DEFAULT_EXAMPLES)
    for name in catalog.names("ctc"):
        assert "No model card" not in catalog.entries[name].card
        if clips:
            assert isinstance(catalog.recognizer(name).transcribe([clips[0][0]])[0].text, str)
    for name in catalog.names("classify"):
        clf = catalog.classifier(name)
        usable = [p for p in series if p.endswith((".npy", ".csv"))]
        for path in usable[:2]:
            from wavssl_onnx.classifier import load_series

            found = [x for x in load_series(path) if x.shape[0] == clf.info.in_channels]
            if found:
                assert clf.predict(found[:1]).shape == (1, len(clf.class_names))


def test_subtitle_cues() -> None:
    from wavssl_onnx import WordTime

    words = [WordTime(f"w{i}", 0.3 * i, 0.3 * i + 0.2) for i in range(10)] + [WordTime("late", 9.0, 9.5)]
    groups = cues(words)
    assert [len(text.split()) for _, _, text in groups] == [7, 3, 1]
    srt = to_srt(words)
    assert srt.splitlines()[:3] == ["1", "00:00:00,000 --> 00:00:02,000", "w0 w1 w2 w3 w4 w5 w6"]
    assert "3\n00:00:09,000 --> 00:00:09,500\nlate\n" in srt


def test_demo_runs_without_torch(models: Fixture, asr_dir: Path, tmp_path: Path) -> None:
    """Recognition and classification need no PyTorch: with ``import torch`` failing, the app serves
    the ONNX models (the pretraining run is skipped with a note) and transcribes like the runtime."""
    port = _free_port()
    code = (f"import signal, sys, time; sys.modules['torch'] = None\n"
            f"signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
            f"from demo import build_app\n"
            f"app = build_app({[str(asr_dir), str(models.cls_dir), str(models.ssl_run)]!r}, examples=None, threads=1)\n"
            f"assert sorted(e.kind for e in app.catalog.entries.values()) == ['classify', 'ctc'], app.catalog.entries\n"
            f"assert 'PyTorch' in app.catalog.notes[0], app.catalog.notes\n"
            f"app.launch(server_port={port}, prevent_thread_lock=True, quiet=True)\n"
            f"print('ready', flush=True)\n"
            f"time.sleep(120)\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.strip() == "ready", line + (proc.stdout.read() if proc.stdout else "")
        from gradio_client import Client, handle_file

        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        out = client.predict(handle_file(str(models.clips[2])), "", asr_dir.name, True, "greedy", 8, None, 4, "char",
                             0.5, api_name="/transcribe")
        assert out[0] == OfflineRecognizer.from_dir(asr_dir, threads=1, int8=True).transcribe([models.clips[2]])[0].text
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_wavssl_demo_command_serves_the_page(models: Fixture, asr_dir: Path, tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "-m", "wavssl", "demo", "--model", str(asr_dir), "--port", str(port),
                             "--threads", "1", "--examples", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5) as r:
                    config = json.loads(r.read())
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "wavssl demo did not answer within 90 s"
                time.sleep(0.5)
        labels = {c.get("props", {}).get("label") for c in config["components"]}
        assert "Transcript" in labels and "Class probabilities" not in labels  # no classifier given: no Sensor tab
    finally:
        proc.terminate()
        proc.wait(timeout=30)
