"""The page: a gradio ``Blocks`` app with a tab per thing the models can do.

``build_app(models=...)`` returns a :class:`DemoApp` (a ``gr.Blocks`` whose ``launch`` defaults to
127.0.0.1, the upload limit, the queue and the page style); ``wavssl demo`` launches it. Each tab's
event has an ``api_name`` (``/transcribe``, ``/live_start``, ``/live_chunk``, ``/live_stop``,
``/pretraining_view``, ``/classify``), so ``gradio_client`` can call what the page calls.
"""

from __future__ import annotations

import atexit
import html
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from wavssl_onnx import AudioError, EndpointRules
from wavssl_onnx.audio import read_audio
from wavssl_onnx.decoding import choose_decoding
from wavssl_onnx.manifest import read_manifest
from wavssl_onnx.series import SERIES_EXTENSIONS
from wavssl_onnx.model_dir import LM_FILE
from wavssl_onnx.classifier import SeriesError

from . import plots
from .live import LiveSession
from .models import DEMO_DIR, Catalog, ModelEntry, ModelError, torch_available
from .sensor import SERIES_SUFFIXES, classify_file
from .settings import Limits
from .transcribe import (
    LMCache,
    Transcript,
    check_audio,
    scores,
    subtitles,
    transcribe_file,
    word_rows,
    write_outputs,
)

DEFAULT_EXAMPLES = DEMO_DIR / "examples"
"""Example clips (``examples.tsv``: ``path`` and ``text`` columns) and sensor series."""
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
STREAM_EVERY = 0.1
"""Seconds of microphone audio the browser sends at a time (gradio's audio component sends 0.1 s blocks
whatever the event asks for)."""
WORD_PAD = 0.05
"""Seconds played before and after a clicked word."""
CSS = """
#asr-stats table, #live-summary p {font-variant-numeric: tabular-nums}
#models-list td:first-child, #models-list td:nth-child(2) {white-space: nowrap}
"""
EXAMPLE_SERIES = SERIES_EXTENSIONS
"""Files of the examples folder offered as sensor series (tables such as ``labels.tsv`` are not)."""
USER_ERRORS = (AudioError, ModelError, SeriesError, ValueError, OSError)
"""What a request can do wrong; shown as a message on the page, never a crash."""


class DemoApp(gr.Blocks):
    """The demo's ``Blocks``; :meth:`launch` fills in the demo's defaults (host 127.0.0.1, upload
    limit, style), so ``app.launch(prevent_thread_lock=True)`` is all a test needs."""

    limits: Limits
    catalog: Catalog

    def close(self, verbose: bool = True) -> None:
        """Stop the server and remove the sessions' result files."""
        super().close(verbose)
        files = getattr(self, "session_files", None)
        if files is not None:
            files.close()

    def launch(self, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs.setdefault("server_name", DEFAULT_HOST)
        kwargs.setdefault("max_file_size", self.limits.max_file_size)
        kwargs.setdefault("css", CSS)
        kwargs.setdefault("theme", gr.themes.Soft())
        kwargs.setdefault("footer_links", ["api"])
        return super().launch(**kwargs)


# ------------------------------------------------------------------------------------ helpers


class SessionFiles:
    """Per-browser-session folders for result files; a session's folder goes when its tab closes
    (``unload``), all of them when the app closes or the process exits. Uploads and returned files
    also live in gradio's cache, which ``delete_cache`` sweeps."""

    def __init__(self) -> None:
        self._root: Path | None = None
        atexit.register(self.close)

    @property
    def root(self) -> Path:
        """The temporary folder holding the sessions' folders (made on first use)."""
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="wavssl-demo-"))
        return self._root

    def _path(self, request: gr.Request | None) -> Path:
        name = getattr(request, "session_hash", None) or "anonymous"
        return self.root / "".join(c for c in name if c.isalnum() or c in "-_")

    def folder(self, request: gr.Request | None) -> Path:
        """The session's folder (created)."""
        path = self._path(request)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def drop(self, request: gr.Request) -> None:
        """Remove the session's folder (its tab was closed)."""
        if self._root is not None:
            shutil.rmtree(self._path(request), ignore_errors=True)

    def close(self) -> None:
        """Remove every session's folder."""
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None


def _user_error(e: Exception) -> gr.Error:
    return gr.Error(str(e), title="Cannot do that")


def _describe(entry: ModelEntry) -> str:
    """Markdown: the model's summary, then its card (wrapped lines joined; a bold lead-in such as
    "**What it cannot do:**" starts a new line)."""
    lines: list[str] = []
    for line in entry.card.splitlines():
        if lines and not line.startswith("**"):
            lines[-1] += " " + line.strip()
        else:
            lines.append(line.strip())
    card = "  \n".join(lines)
    return f"**{entry.name}** - {entry.summary}.\n\n{card}"


def models_markdown(catalog: Catalog) -> str:
    """The page's account of every model: what it is and what it can and cannot do."""
    if not catalog.entries:
        return ("**No models loaded.** Start the demo with `wavssl demo --model DIR` (an exported model "
                "directory or a wavssl run directory).")

    def cell(text: str) -> str:
        return text.replace("\n", " ").replace("|", "\\|")

    kinds = {"ctc": "Transcribe, Live", "ssl": "What pretraining learned", "classify": "Sensor"}
    lines = ["| model | tabs | what it is | what it can and cannot do |", "|---|---|---|---|"]
    lines += [f"| **{cell(e.name)}** | {kinds[e.kind]} | {cell(e.summary)} | {cell(e.card)} |"
              for e in catalog.entries.values()]
    lines += [f"\n_{note}_" for note in catalog.notes]
    return "\n".join(lines)


def read_examples(folder: Path | None) -> tuple[list[list[str]], list[str]]:
    """([path, text] example clips from ``examples.tsv``, series example files) in ``folder``."""
    if folder is None or not folder.is_dir():
        return [], []
    clips: list[list[str]] = []
    table = folder / "examples.tsv"
    if table.is_file():
        clips = [[str(Path(row.path).resolve()), row.text] for row in read_manifest(table)
                 if row.path and Path(row.path).is_file()]
    series = sorted(str(p.resolve()) for p in folder.rglob("*")
                    if p.is_file() and p.suffix.lower() in EXAMPLE_SERIES)
    return clips, series


def _stats_html(t: Transcript, reference: str, language: str) -> str:
    rows = [("audio", f"{t.duration:.2f} s"), ("processing", f"{t.seconds * 1000:.0f} ms"),
            ("real-time factor", f"{t.rtf:.3f}"), ("speed", f"{1 / t.rtf:.0f}x real time" if t.rtf > 0 else "-"),
            ("frames", str(len(t.log_probs))), ("model", t.model), ("decoding", t.decoding)]
    s = scores(reference, t.hypothesis.text, language) if reference else None
    if s is not None:
        rows += [("WER vs reference", f"{100 * s[0]:.1f} %"), ("CER vs reference", f"{100 * s[1]:.1f} %")]
    cells = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{k}</th><td>{html.escape(v)}</td></tr>"
                    for k, v in rows)
    return f"<table>{cells}</table>"


# ------------------------------------------------------------------------------------ tabs


def _transcribe_tab(catalog: Catalog, limits: Limits, files: SessionFiles, clips: list[list[str]]) -> None:
    names = catalog.names("ctc")
    lms = LMCache()
    first = catalog.get(None, "ctc")
    with gr.Row():
        with gr.Column(scale=2):
            model = gr.Dropdown(names, value=names[0], label="Model", elem_id="asr-model")
            card = gr.Markdown(_describe(first), elem_id="asr-card")
            audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Audio (upload or record)",
                             elem_id="asr-audio")
            reference = gr.Textbox(label="Reference text (optional: gives WER / CER)", elem_id="asr-reference")
            with gr.Accordion("Decoding", open=False):
                int8 = gr.Checkbox(first.has_int8, label="int8 model (faster)", interactive=first.has_int8,
                                   elem_id="asr-int8")
                own_lm = first.onnx_dir is not None and (first.onnx_dir / LM_FILE).is_file()
                mode = gr.Radio(["greedy", "beam"], value="beam" if own_lm else "greedy", label="Search",
                                elem_id="asr-mode")  # a model with its own LM is at its best with it
                beam = gr.Slider(2, 32, value=8, step=1, label="Beam width")
                lm_file = gr.File(label="n-gram LM: a text corpus (one sentence per line) or a saved LM .json "
                                  f"(none given: beam search uses the model's own {LM_FILE} when it has one)",
                                  file_types=[".txt", ".json"], type="filepath", elem_id="asr-lm")
                with gr.Row():
                    lm_order = gr.Slider(1, 6, value=4, step=1, label="LM order")
                    lm_level = gr.Radio(["char", "word"], value="char", label="LM units")
                    lm_weight = gr.Slider(0.0, 2.0, value=0.5, step=0.05, label="LM weight")
            run = gr.Button("Transcribe", variant="primary", elem_id="asr-run")
            if clips:
                gr.Examples(clips, inputs=[audio, reference], label="Example clips (held out from training)",
                            example_labels=[Path(p).name for p, _ in clips], elem_id="asr-examples")
        with gr.Column(scale=3):
            transcript = gr.Textbox(label="Transcript", lines=3, buttons=["copy"], elem_id="transcript")
            stats = gr.HTML(elem_id="asr-stats")
            with gr.Row():
                words = gr.Dataframe(headers=["#", "word", "start (s)", "end (s)"], interactive=False, max_height=300,
                                     label="Words (click a row to hear it)", elem_id="words")
                with gr.Column():
                    word_player = gr.Audio(label="Clicked word", autoplay=True, interactive=False,
                                           elem_id="word-player")
                    outputs_files = gr.File(label="Result as JSON and SRT", file_count="multiple", interactive=False,
                                            elem_id="asr-files")
            playback = gr.Audio(label="Playback with the words as subtitles", interactive=False,
                                elem_id="asr-playback")
    posteriorgram = gr.Plot(label="Posteriorgram", show_label=False, elem_id="posteriorgram")
    current = gr.State(None)

    def on_model(name: str) -> tuple[Any, Any]:
        e = catalog.get(name, "ctc")
        return _describe(e), gr.Checkbox(value=e.has_int8, interactive=e.has_int8)

    model.change(on_model, model, [card, int8], api_visibility="private")

    def transcribe(path: str | None, ref: str, name: str, use8: bool, how: str, width: float, lm_path: str | None,
                   order: float, level: str, weight: float, request: gr.Request) -> tuple[Any, ...]:
        if not path:
            raise gr.Error("Upload or record some audio first.", title="No audio")
        try:
            entry = catalog.get(name, "ctc")
            rec = catalog.recognizer(name, use8)
            check_audio(path, limits.max_seconds)
            language = rec.info.language
            if not lm_path and how == "beam" and entry.onnx_dir is not None and (entry.onnx_dir / LM_FILE).is_file():
                lm_path = str(entry.onnx_dir / LM_FILE)  # the model's own LM (wavssl quickstart writes one)
            lm = lms.get(lm_path, language=language, order=int(order), level=level) if lm_path else None
            decoding = choose_decoding(int(width) if how == "beam" else 1, lm, float(weight))
            t = transcribe_file(rec, path, decoding, model=f"{entry.name}{' int8' if use8 and entry.has_int8 else ''}")
        except USER_ERRORS as e:
            raise _user_error(e) from e
        paths = write_outputs(t, files.folder(request))
        play = gr.Audio(value=path, subtitles=subtitles(t.hypothesis.words) or None)
        state = {"path": path, "rate": rec.sample_rate, "words": t.hypothesis.words, "log_probs": t.log_probs,
                 "frame_shift": t.frame_shift, "vocab": rec.vocab}
        return t.hypothesis.text, _stats_html(t, ref, language), word_rows(t.hypothesis.words), paths, play, state

    def draw(state: dict[str, Any] | None) -> Any:
        if not state:
            return None
        return plots.posteriorgram(state["log_probs"], state["vocab"], state["frame_shift"], state["words"])

    # the text first, the posteriorgram (a quarter of a second to draw) right after
    run.click(transcribe, [audio, reference, model, int8, mode, beam, lm_file, lm_order, lm_level, lm_weight],
              [transcript, stats, words, outputs_files, playback, current], api_name="transcribe",
              concurrency_limit=limits.concurrency, concurrency_id="offline").then(
        draw, current, posteriorgram, api_visibility="private", concurrency_limit=limits.concurrency,
        concurrency_id="plots")

    def play_word(state: dict[str, Any] | None, evt: gr.SelectData) -> Any:
        if not state or not state["words"]:
            return None
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else int(evt.index)
        w = state["words"][min(int(row), len(state["words"]) - 1)]
        rate = state["rate"]
        try:
            wave = read_audio(state["path"], rate)
        except AudioError as e:
            raise _user_error(e) from e
        start, end = max(0, int((w.start - WORD_PAD) * rate)), int((w.end + WORD_PAD) * rate)
        return rate, wave[start:end]

    words.select(play_word, current, word_player, api_visibility="private")


def _live_tab(catalog: Catalog, limits: Limits, files: SessionFiles) -> None:
    names = catalog.names("ctc")
    first = catalog.get(None, "ctc")
    with gr.Row():
        with gr.Column(scale=2):
            model = gr.Dropdown(names, value=names[0], label="Model", elem_id="live-model")
            int8 = gr.Checkbox(first.has_int8, label="int8 model (faster)", interactive=first.has_int8,
                               elem_id="live-int8")
            silence = gr.Slider(0.3, 3.0, value=EndpointRules().silence_after_text, step=0.1,
                                label="Pause that ends an utterance (s)", elem_id="live-silence")
            mic = gr.Audio(sources=["microphone"], streaming=True, type="numpy", label="Microphone",
                           elem_id="live-mic")
            def note(e: ModelEntry) -> str:
                return (f"Text lags the speech by the model's latency ({e.live_latency:.2f} s for {e.name}); a stream "
                        f"stops after {limits.max_live_seconds} s. The browser asks for the microphone when you press "
                        f"Record.")

            note_box = gr.Markdown(note(first), elem_id="live-note")
            clear = gr.Button("Clear", elem_id="live-clear")
        with gr.Column(scale=3):
            partial = gr.Textbox(label="Hearing now (partial text, grows as you speak)", lines=2,
                                 elem_id="live-partial")
            utterances = gr.Textbox(label="Utterances (closed at pauses)", lines=6, elem_id="live-utterances")
            summary = gr.Markdown(elem_id="live-summary")
            latency = gr.Dataframe(headers=["partial", "audio (s)", "decode (ms)", "trails by (s)", "text"],
                                   interactive=False, max_height=260, label="Latency of each partial (newest first)",
                                   elem_id="live-latency")
            recording = gr.File(label="What was recorded (WAV, as received)", interactive=False,
                                elem_id="live-recording")
    def on_model(name: str) -> tuple[Any, str]:
        e = catalog.get(name, "ctc")
        return gr.Checkbox(value=e.has_int8, interactive=e.has_int8), note(e)

    model.change(on_model, model, [int8, note_box], api_visibility="private")
    session = gr.State(LiveSession)  # one per browser session (gradio deep-copies it: a fresh one)
    outputs = [partial, utterances, summary, latency]
    skip = (gr.skip(),) * len(outputs)

    def rules(pause: float) -> EndpointRules:
        return EndpointRules(silence_after_text=float(pause))

    def start(s: LiveSession, name: str, use8: bool, pause: float) -> tuple[Any, ...]:
        try:
            s.begin(catalog.online(name, use8), rules(pause))
        except USER_ERRORS as e:
            raise _user_error(e) from e
        return s.view()

    mic.start_recording(start, [session, model, int8, silence], outputs, api_name="live_start",
                        concurrency_limit=limits.live_concurrency, concurrency_id="live", show_progress="hidden")

    def chunk(block: tuple[int, np.ndarray] | None, s: LiveSession, name: str, use8: bool,
              pause: float) -> tuple[Any, ...]:
        # gradio keeps only the newest block while this runs: queue it and return (the model runs in
        # the session's worker thread); send the page something only when the text changed
        if block is None or s.finished:  # nothing, or a late block of a stopped recording
            return skip
        try:
            if s.stream is None:  # an API client that did not call /live_start
                s.begin(catalog.online(name, use8), rules(pause))
            changed = s.push(int(block[0]), block[1])
        except USER_ERRORS as e:
            raise _user_error(e) from e
        return s.view() if changed else skip

    mic.stream(chunk, [mic, session, model, int8, silence], outputs, stream_every=STREAM_EVERY,
               time_limit=limits.max_live_seconds, concurrency_limit=limits.live_concurrency, concurrency_id="live",
               api_name="live_chunk", show_progress="hidden")

    def stop(s: LiveSession, request: gr.Request) -> tuple[Any, ...]:
        saved = None
        if s.active:
            s.finish()
            saved = s.save_recording(files.folder(request) / f"recording-{s.recordings}.wav")
        return *s.view(), str(saved) if saved else None

    mic.stop_recording(stop, session, [*outputs, recording], api_name="live_stop",
                       concurrency_limit=limits.live_concurrency, concurrency_id="live")

    def reset(s: LiveSession) -> tuple[Any, ...]:
        s.clear()
        return s.view()

    clear.click(reset, session, outputs, api_visibility="private")


def _ssl_tab(catalog: Catalog, limits: Limits, clips: list[list[str]]) -> None:
    names = catalog.names("ssl")
    first = catalog.get(None, "ssl")
    gr.Markdown("wav2vec 2.0 pretraining hides spans of the clip's frames and asks the model to pick, for every "
                "hidden frame, its true quantized target among distractors drawn from the clip's other hidden "
                "frames. This tab plays that game on your clip with the model's own masking, quantizer and "
                "contrastive logits.")
    with gr.Row():
        with gr.Column(scale=2):
            model = gr.Dropdown(names, value=names[0], label="Pretraining run", elem_id="ssl-model")
            card = gr.Markdown(_describe(first), elem_id="ssl-card")
            audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Audio", elem_id="ssl-audio")
            seed = gr.Number(0, precision=0, label="Mask draw (seed)", elem_id="ssl-seed")
            run = gr.Button("Play the game", variant="primary", elem_id="ssl-run")
            if clips:
                gr.Examples([[p] for p, _ in clips], inputs=[audio], label="Example clips",
                            example_labels=[Path(p).name for p, _ in clips])
        with gr.Column(scale=3):
            result = gr.Markdown(elem_id="ssl-result")
    game = gr.Plot(label="Masked frames and the contrastive game", show_label=False, elem_id="ssl-game")
    codes = gr.Plot(label="Codebook usage", show_label=False, elem_id="ssl-codes")
    layers = gr.Plot(label="Frame similarity across layers", show_label=False, elem_id="ssl-layers")

    model.change(lambda n: _describe(catalog.get(n, "ssl")), model, card, api_visibility="private")

    def play(path: str | None, name: str, draw: float) -> tuple[Any, ...]:
        from .ssl_view import play as play_game

        if not path:
            raise gr.Error("Upload or record some audio first.", title="No audio")
        try:
            entry = catalog.get(name, "ssl")
            check_audio(path, limits.max_ssl_seconds)
            wave = read_audio(path, entry.sample_rate)
            view = play_game(catalog.ssl_model(name), wave, seed=int(draw or 0))
        except USER_ERRORS as e:
            raise _user_error(e) from e
        n, k = len(view.masked), view.distractors
        text = (f"**{int(view.correct.sum())} of {n} masked frames** ({100 * view.accuracy:.1f} %) pick their true "
                f"target among {k} distractors each (chance: {100 / (k + 1):.1f} %). "
                f"Median rank of the true target: {int(np.median(view.rank)) if n else 0}. "
                f"The clip's frames use {view.distinct_codes()} distinct codevectors "
                f"(code perplexity {view.code_perplexity:.1f} of {view.codes.shape[1] * view.entries}).")
        return text, plots.contrastive_game(view), plots.codebook_usage(view), plots.layer_similarity(view)

    run.click(play, [audio, model, seed], [result, game, codes, layers], api_name="pretraining_view",
              concurrency_limit=1, concurrency_id="ssl")


def _sensor_tab(catalog: Catalog, limits: Limits, series_examples: list[str]) -> None:
    names = catalog.names("classify")
    first = catalog.get(None, "classify")
    with gr.Row():
        with gr.Column(scale=2):
            model = gr.Dropdown(names, value=names[0], label="Classifier", elem_id="sensor-model")
            card = gr.Markdown(_describe(first), elem_id="sensor-card")
            upload = gr.File(label=f"Series file ({', '.join(SERIES_SUFFIXES)})", file_types=list(SERIES_SUFFIXES),
                             type="filepath", elem_id="sensor-file")
            index = gr.Number(0, precision=0, minimum=0, label="Series shown (a file may hold many)",
                              elem_id="sensor-index")
            run = gr.Button("Classify", variant="primary", elem_id="sensor-run")
            if series_examples:
                gr.Examples([[p] for p in series_examples], inputs=[upload], label="Example series",
                            example_labels=[Path(p).name for p in series_examples])
        with gr.Column(scale=3):
            label = gr.Label(num_top_classes=5, label="Class probabilities", elem_id="sensor-label")
            message = gr.Markdown(elem_id="sensor-message")
            table = gr.Dataframe(headers=["series", "steps", "predicted", "probability", "stored label"],
                                 interactive=False, max_height=240, label="Every series in the file",
                                 elem_id="sensor-table")
    plot = gr.Plot(label="Channels", show_label=False, elem_id="sensor-plot")

    model.change(lambda n: _describe(catalog.get(n, "classify")), model, card, api_visibility="private")

    def classify(path: str | None, name: str, shown: float) -> tuple[Any, ...]:
        if not path:
            raise gr.Error("Upload a series file first.", title="No series")
        try:
            entry = catalog.get(name, "classify")
            result = classify_file(catalog.classifier(name), path, limits.max_series, name=Path(path).name)
        except USER_ERRORS as e:
            raise _user_error(e) from e
        i = min(max(int(shown or 0), 0), len(result.series) - 1)
        stored = f"; stored label: {result.labels[i]}" if result.labels else ""
        text = f"{result.source}: {len(result.series)} series; showing series {i}{stored}."
        fig = plots.channels(result.series[i], entry.sample_rate, f"{result.source} [{i}]")
        return result.top(i), text, result.rows(), fig

    run.click(classify, [upload, model, index], [label, message, table, plot], api_name="classify",
              concurrency_limit=limits.concurrency, concurrency_id="classify")


# ------------------------------------------------------------------------------------ the app


def build_app(models: Sequence[str | os.PathLike[str]] | Catalog | None = None, *,
              examples: str | os.PathLike[str] | None = DEFAULT_EXAMPLES, limits: Limits | None = None,
              threads: int | None = None, cache_dir: str | os.PathLike[str] | None = None) -> DemoApp:
    """The demo page.

    Args:
        models: model or run directories, or folders of them (default: ``demo/models/``), or a ready
            :class:`~demo.models.Catalog`.
        examples: folder with ``examples.tsv`` (``path``, ``text``) clips and sensor series files.
        limits: upload, duration, stream and queue limits.
        threads: ONNX Runtime threads per model (None: one per physical core).
        cache_dir: where fine-tuned run directories are exported to ONNX.
    """
    limits = limits or Limits()
    if isinstance(models, Catalog):
        catalog = models
    else:
        catalog = Catalog.from_paths(models, threads=threads, cache_dir=cache_dir, log=print)
    clips, series = read_examples(Path(examples) if examples is not None else None)
    files = SessionFiles()
    has = {kind: bool(catalog.names(kind)) for kind in ("ctc", "classify", "ssl")}
    show_ssl = has["ssl"] and torch_available()
    with DemoApp(title="wavssl demo", delete_cache=(limits.cache_every, limits.cache_age)) as app:
        gr.Markdown("# wavssl demo\nSelf-supervised speech and sensor models (wav2vec 2.0 style), run in this server "
                    "by the torch-free ONNX runtime `wavssl_onnx`.", elem_id="title")
        with gr.Accordion("Models: what each can and cannot do", open=True, elem_id="models"):
            gr.Markdown(models_markdown(catalog), elem_id="models-list")
            missing = [what for kind, what in (("ctc", "speech recognizer (Transcribe and Live tabs)"),
                                               ("ssl", "pretraining run (What pretraining learned tab)"),
                                               ("classify", "sensor classifier (Sensor tab)")) if not has[kind]]
            if has["ssl"] and not show_ssl:
                missing.append("PyTorch (What pretraining learned tab)")
            if missing:
                gr.Markdown("Not loaded, so not shown: " + "; ".join(missing) + ".", elem_id="models-missing")
        gr.Markdown(f"Limits: uploads up to {limits.max_file_mb:g} MB and {limits.max_seconds:g} s of audio; live "
                    f"streams up to {limits.max_live_seconds} s; {limits.concurrency} requests at a time per task, "
                    f"the rest queue.", elem_id="limits")
        with gr.Tabs(elem_id="tabs"):
            if has["ctc"]:
                with gr.Tab("Transcribe", id="transcribe", elem_id="tab-transcribe"):
                    _transcribe_tab(catalog, limits, files, clips)
                with gr.Tab("Live", id="live", elem_id="tab-live"):
                    _live_tab(catalog, limits, files)
            if show_ssl:
                with gr.Tab("What pretraining learned", id="ssl", elem_id="tab-ssl"):
                    _ssl_tab(catalog, limits, clips)
            if has["classify"]:
                with gr.Tab("Sensor", id="sensor", elem_id="tab-sensor"):
                    _sensor_tab(catalog, limits, series)
        app.unload(files.drop)
    app.limits, app.catalog, app.session_files = limits, catalog, files
    app.queue(default_concurrency_limit=limits.concurrency, max_size=limits.queue_size)
    return app
