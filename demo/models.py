"""The demo's models: finding them, saying what each can do, and loading them once.

A model is a directory:

- an ONNX model directory (``wavssl.json``, written by ``wavssl export``): a speech recognizer
  (``kind`` ``ctc``) or a sensor classifier (``classify``), served by the torch-free runtime
  :mod:`wavssl_onnx`;
- a wavssl run directory (``config.json`` + ``model.safetensors``): a pretraining run feeds the
  "What pretraining learned" tab (PyTorch); a fine-tuned ``ctc`` or ``classify`` run is exported
  once to a cache folder with :func:`wavssl.export.export` and served from ONNX like the above;
- a folder of such directories (``demo/models/`` by default).

Nothing here imports torch or gradio: a run directory's task is read from its ``config.json`` as
plain JSON, and torch is imported only to export a run or to load an SSL model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wavssl_onnx.model_dir import CONFIG_FILE, load_model_info

DEMO_DIR = Path(__file__).resolve().parent
DEFAULT_MODELS_DIR = DEMO_DIR / "models"
"""Where ``wavssl demo`` without ``--model`` looks for models (every model directory under it)."""
DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "wavssl" / "demo"
"""Where fine-tuned run directories are exported to ONNX (once per run version)."""
RUN_CONFIG = "config.json"
MODEL_CARD = "MODEL_CARD.md"
CARD_LINES = 8
"""At most this many lines of a model card's first paragraph are shown on the page."""
KINDS = ("ctc", "classify", "ssl")
LIVE_CHUNK_SECONDS = 2.0
LIVE_CONTEXT_SECONDS = 1.0
"""Windows the Live tab runs an offline (not ``--streaming``) export in (the runtime's defaults)."""


class ModelError(ValueError):
    """A model directory cannot be served; the message names it."""


class NeedsTorch(ModelError):
    """A pretraining run, but PyTorch is not installed: its tab is left out (a note, never an error)."""


@dataclass(frozen=True)
class ModelEntry:
    """One servable model."""

    name: str
    """Short unique name shown on the page (the directory name)."""
    kind: str
    """``ctc`` (speech recognizer), ``classify`` (sensor classifier) or ``ssl`` (pretraining run)."""
    source: Path
    """The directory given (a model directory or a run directory)."""
    onnx_dir: Path | None
    """ctc / classify: the ONNX model directory served (``source`` itself, or its exported copy)."""
    summary: str
    """One line: what the model is (kind, language, rate, channels or classes, int8, streaming)."""
    card: str
    """What it can and cannot do: the model card's first lines, or a note that it has none."""
    has_int8: bool = False
    """``model.int8.onnx`` is available."""
    streaming: bool = False
    """A chunk-by-chunk streaming export (low-latency live recognition)."""
    sample_rate: int = 16000
    channels: int = 1
    """Sensor classifiers: input channels."""
    live_latency: float = 0.0
    """ctc: most seconds live text lags the speech (a streaming export's chunk + look-ahead, else the
    2 s windows + 1 s context :class:`wavssl_onnx.OnlineRecognizer` runs an offline model in)."""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "source": str(self.source), "summary": self.summary,
                "card": self.card, "int8": self.has_int8, "streaming": self.streaming}


def read_card(directory: Path) -> str:
    """The first paragraph of ``MODEL_CARD.md`` after its title (at most :data:`CARD_LINES` lines):
    what the model does and cannot do. "" when there is no card."""
    path = directory / MODEL_CARD
    if not path.is_file():
        return ""
    lines: list[str] = []
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.rstrip()
        if not lines and (not line.strip() or line.lstrip().startswith("#")):
            continue  # the title and blank lines before the paragraph
        if not line.strip() or line.lstrip().startswith("#") or len(lines) >= CARD_LINES:
            break  # the paragraph ends
        lines.append(line)
    return "\n".join(lines).strip()


def _no_card(kind: str) -> str:
    what = {"ctc": "its word error rate is unknown (a random-weight or unevaluated model transcribes nonsense)",
            "classify": "its accuracy is unknown",
            "ssl": "it only shows what the pretraining objective learned; it cannot transcribe"}[kind]
    return f"No model card ({MODEL_CARD}): {what}."


def _onnx_entry(name: str, source: Path, onnx_dir: Path, card_dir: Path) -> ModelEntry:
    info = load_model_info(onnx_dir)
    int8 = "int8" in info.files and (onnx_dir / info.files["int8"]).is_file()
    lag = 0.0
    if info.kind == "ctc":
        assert info.vocabulary is not None
        parts = [f"speech recognizer (CTC), language {info.language or 'unspecified'}",
                 f"{info.sample_rate // 1000} kHz", f"{len(info.vocabulary) - 3} characters"]
        if info.streaming is not None:
            lag = info.streaming.latency_samples / info.sample_rate
            parts.append(f"streaming export ({lag:.2f} s live latency)")
        else:
            lag = LIVE_CHUNK_SECONDS + LIVE_CONTEXT_SECONDS
            parts.append(f"live recognition in {LIVE_CHUNK_SECONDS:g} s windows ({lag:g} s latency)")
    else:
        parts = [f"sensor classifier, {info.in_channels} channel(s) at {info.sample_rate} Hz",
                 f"classes: {', '.join(info.class_names or [])}"]
    if int8:
        parts.append("int8 available")
    return ModelEntry(name, info.kind, source, onnx_dir, "; ".join(parts), read_card(card_dir) or _no_card(info.kind),
                      has_int8=int8, streaming=info.streaming is not None, sample_rate=info.sample_rate,
                      channels=info.in_channels, live_latency=lag)


def run_fingerprint(run: Path) -> str:
    """Changes when a run's weights or configuration change (names its export in the cache)."""
    h = hashlib.sha256(str(run.resolve()).encode())
    for name in (RUN_CONFIG, "model.safetensors", "vocab.json", "labels.json"):
        p = run / name
        if p.is_file():
            st = p.stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def export_run(run: Path, cache_dir: Path, *, log: Callable[[str], None] | None = None) -> Path:
    """The ONNX model directory of a fine-tuned run: ``cache_dir/NAME-FINGERPRINT``, exported with
    :func:`wavssl.export.export` (int8 too) the first time and reused after."""
    out = cache_dir / f"{run.resolve().name}-{run_fingerprint(run)}"
    if (out / CONFIG_FILE).is_file():
        return out
    from wavssl.export import export  # torch: only to export a run once

    if log:
        log(f"exporting {run} to {out} (once)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    export(run, out, int8=True, log=None)
    return out


def _run_entry(name: str, run: Path, cache_dir: Path, log: Callable[[str], None] | None) -> ModelEntry:
    try:
        cfg = json.loads((run / RUN_CONFIG).read_text(encoding="utf-8"))
        task, frontend = cfg["task"], cfg["model"]["frontend"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{run / RUN_CONFIG}: not a wavssl run configuration ({e})") from e
    if task in ("ctc", "classify"):
        return _onnx_entry(name, run, export_run(run, cache_dir, log=log), run)
    if task != "pretrain":
        raise ModelError(f"{run}: a {task!r} run; the demo serves pretraining, ctc and classify runs")
    if frontend.get("kind") == "sensor":
        raise ModelError(f"{run}: a sensor pretraining run; the pretraining tab shows speech models only")
    if not torch_available():
        raise NeedsTorch(f"{run}: a pretraining run needs PyTorch (pip install wavssl), which is not installed")
    ctx = cfg["model"]["context"]
    summary = (f"pretraining run (PyTorch), {frontend.get('kind')} front end, {ctx.get('num_layers')} x "
               f"{ctx.get('embed_dim')} Transformer, {frontend.get('sample_rate', 16000) // 1000} kHz")
    return ModelEntry(name, "ssl", run, None, summary, read_card(run) or _no_card("ssl"),
                      sample_rate=int(frontend.get("sample_rate", 16000)))


def is_model_dir(path: Path) -> bool:
    """An ONNX model directory or a run directory."""
    return (path / CONFIG_FILE).is_file() or (path / RUN_CONFIG).is_file()


def _unique(name: str, taken: set[str]) -> str:
    out, i = name, 2
    while out in taken:
        out, i = f"{name}-{i}", i + 1
    taken.add(out)
    return out


def discover(paths: Sequence[str | os.PathLike[str]] | None = None, *, cache_dir: str | os.PathLike[str] | None = None,
             log: Callable[[str], None] | None = None) -> tuple[list[ModelEntry], list[str]]:
    """Every servable model in ``paths`` (default: the directories under ``demo/models/``).

    Each path is a model directory, a run directory, or a folder whose subdirectories are. A directory
    that cannot be served is skipped with a note (returned second) when it was found in a folder, and
    raises :class:`ModelError` when it was named itself (except a pretraining run without PyTorch:
    always a note).

    Returns:
        (entries in path order, notes about skipped directories)
    """
    cache = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    given = [Path(p) for p in paths] if paths else [DEFAULT_MODELS_DIR]
    entries: list[ModelEntry] = []
    notes: list[str] = []
    taken: set[str] = set()
    for path in given:
        if not path.is_dir():
            if paths:
                raise ModelError(f"{path}: no such model directory")
            continue
        named = is_model_dir(path)
        for d in [path] if named else sorted(p for p in path.iterdir() if p.is_dir() and is_model_dir(p)):
            try:
                entries.append(_entry(_unique(d.name, taken), d, cache, log))
            except (ModelError, ValueError, OSError) as e:
                if named and not isinstance(e, NeedsTorch):
                    raise ModelError(str(e)) from e
                notes.append(f"skipped {d}: {e}")
    return entries, notes


def _entry(name: str, d: Path, cache: Path, log: Callable[[str], None] | None) -> ModelEntry:
    if (d / CONFIG_FILE).is_file():
        return _onnx_entry(name, d, d, d)
    return _run_entry(name, d, cache, log)


class Catalog:
    """The models of one demo, loaded on first use and shared by every session (ONNX Runtime
    sessions are thread-safe; each live stream gets its own state).

    Args:
        entries: from :func:`discover`.
        threads: ONNX Runtime intra-op threads per session (None: one per physical core).
    """

    def __init__(self, entries: Iterable[ModelEntry], *, threads: int | None = None, notes: Sequence[str] = ()) -> None:
        self.entries = {e.name: e for e in entries}
        self.threads = threads
        self.notes = list(notes)
        self._cache: dict[tuple[str, ...], Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_paths(cls, paths: Sequence[str | os.PathLike[str]] | None = None, *, threads: int | None = None,
                   cache_dir: str | os.PathLike[str] | None = None,
                   log: Callable[[str], None] | None = None) -> Catalog:
        entries, notes = discover(paths, cache_dir=cache_dir, log=log)
        return cls(entries, threads=threads, notes=notes)

    def names(self, kind: str) -> list[str]:
        """Names of the models of one kind, in discovery order."""
        return [n for n, e in self.entries.items() if e.kind == kind]

    def get(self, name: str | None, kind: str) -> ModelEntry:
        """The entry called ``name`` (the first of ``kind`` when None); ModelError if there is none."""
        names = self.names(kind)
        if name is None and names:
            name = names[0]
        entry = self.entries.get(name or "")
        if entry is None or entry.kind != kind:
            raise ModelError(f"no {kind} model called {name!r} (available: {', '.join(names) or 'none'})")
        return entry

    def _load(self, key: tuple[str, ...], make: Callable[[], Any]) -> Any:
        with self._lock:  # one load per model, however many sessions ask at once
            if key not in self._cache:
                self._cache[key] = make()
            return self._cache[key]

    def recognizer(self, name: str | None, int8: bool = False) -> Any:
        """A :class:`wavssl_onnx.OfflineRecognizer` for the ``ctc`` model ``name``."""
        from wavssl_onnx import OfflineRecognizer

        e = self.get(name, "ctc")
        use8 = int8 and e.has_int8
        onnx_dir = e.onnx_dir
        assert onnx_dir is not None  # every ctc entry has one
        return self._load(("offline", e.name, str(use8)),
                          lambda: OfflineRecognizer.from_dir(onnx_dir, threads=self.threads, int8=use8))

    def online(self, name: str | None, int8: bool = False) -> Any:
        """A :class:`wavssl_onnx.OnlineRecognizer` (2 s windows + 1 s context for offline exports,
        chunk by chunk for streaming ones)."""
        from wavssl_onnx import OnlineRecognizer

        e = self.get(name, "ctc")
        use8 = int8 and e.has_int8
        onnx_dir = e.onnx_dir
        assert onnx_dir is not None  # every ctc entry has one
        return self._load(("online", e.name, str(use8)),
                          lambda: OnlineRecognizer.from_dir(onnx_dir, threads=self.threads, int8=use8,
                                                           chunk_seconds=LIVE_CHUNK_SECONDS,
                                                           context_seconds=LIVE_CONTEXT_SECONDS))

    def classifier(self, name: str | None) -> Any:
        """A :class:`wavssl_onnx.Classifier` for the ``classify`` model ``name``."""
        from wavssl_onnx import Classifier

        e = self.get(name, "classify")
        onnx_dir = e.onnx_dir
        assert onnx_dir is not None  # every classify entry has one
        return self._load(("classify", e.name), lambda: Classifier.from_dir(onnx_dir, threads=self.threads))

    def ssl_model(self, name: str | None) -> Any:
        """The PyTorch :class:`wavssl.models.SSLModel` of the pretraining run ``name`` (eval mode)."""
        e = self.get(name, "ssl")

        def make() -> Any:
            import wavssl

            return wavssl.load(e.source)

        return self._load(("ssl", e.name), make)


def torch_available() -> bool:
    """Whether PyTorch and wavssl can be imported (the pretraining tab needs them); nothing is imported."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in ("torch", "wavssl"))
    except (ImportError, ValueError):  # e.g. sys.modules["torch"] = None
        return False
