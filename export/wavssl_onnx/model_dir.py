"""The ONNX model directory: what ``wavssl export`` writes and the runtime reads.

```
MODEL_DIR/
  wavssl.json       the contract below (UTF-8 JSON object)
  model.onnx        float32 graph
  model.int8.onnx   optional: MatMul/Attention weights int8 (dynamic quantization)
  frontend.onnx     streaming models only: the stateless front end (waveform -> projected frames)
  frontend.int8.onnx  streaming models with int8 only: the front end's conv MatMuls int8
```

``wavssl.json`` keys (the same keys also sit in each ONNX file's ``metadata_props``, every value
JSON-encoded, so a lone ``.onnx`` file still describes itself):

- ``format`` = ``"wavssl-onnx"``, ``format_version`` (int; this runtime reads up to
  :data:`FORMAT_VERSION`), ``kind``: ``"ctc"`` (speech recognizer) or ``"classify"`` (sequence
  classifier).
- ``sample_rate`` (Hz the graph expects), ``frame_shift`` (seconds between output frames),
  ``frame_shift_samples``, ``min_samples`` (shortest input that gives one frame),
  ``in_channels`` (1 for audio), ``normalize_audio`` (informational: the graph standardises each
  utterance itself).
- ``inputs`` / ``outputs``: tensor names in order. ctc: ``waveform`` (B, T) float32 and ``lengths``
  (B,) int64 -> ``log_probs`` (B, F, V) float32 and ``frame_lengths`` (B,) int64. classify:
  ``series`` (B, C, T) float32 (NaN = missing) and ``lengths`` -> ``log_probs`` (B, K).
- ctc: ``vocabulary`` (``tokens``, ``blank``, ``unk``, ``word_delimiter`` as ``vocab.json``) plus
  ``blank_id`` and ``delimiter_id``; ``language`` (text normalisation of transcripts, may be "").
  classify: ``class_names``.
- ``files``: ``{"fp32": "model.onnx", "int8": "model.int8.onnx"}`` (int8 only when written; a
  streaming model adds ``"frontend": "frontend.onnx"`` and, with int8, ``"frontend_int8":
  "frontend.int8.onnx"``, which the int8 variant runs; without it, it runs ``frontend.onnx``).
- ``streaming`` (format version 2; ``wavssl export --streaming``): the chunk geometry and state
  tensors (:class:`wavssl_onnx.streaming.StreamGeometry`). ``model.onnx`` is then the step graph:
  ``frames`` (B, n + R, E), ``pos_cache``, ``kv_cache``, ``processed`` -> ``log_probs`` (B, n, V) and
  each state's ``*_out``; ``frontend.onnx`` maps ``waveform`` + ``lengths`` to ``frames`` (B, F, E) +
  ``frame_lengths``.
- ``export``: how it was made (exporter, opset, parity figures); informational.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .fileio import atomic_write_text
from .streaming import StreamGeometry
from .vocab import Vocabulary

FORMAT = "wavssl-onnx"
FORMAT_VERSION = 2
"""Newest model-directory format this runtime reads. ``wavssl export`` writes 1 for offline models
(so older runtimes still read them) and 2 for streaming ones (they need this runtime)."""
STREAMING_VERSION = 2
"""First format version with streaming models."""
CONFIG_FILE = "wavssl.json"
MODEL_FILE = "model.onnx"
LM_FILE = "lm.json"
"""Optional: an n-gram LM (``NGramLM.save``) that beam search may use with this model (``wavssl
quickstart`` writes one estimated from its training transcripts; the demo uses it)."""
INT8_FILE = "model.int8.onnx"
KINDS = ("ctc", "classify")


class ModelDirError(ValueError):
    """A model directory is missing a file, is malformed, or was written by a newer format; the
    message names the file."""


@dataclass(frozen=True)
class ModelInfo:
    """The parsed ``wavssl.json`` of a model directory."""

    kind: str
    """``ctc`` or ``classify``."""
    sample_rate: int
    frame_shift: float
    """Seconds between output frames."""
    frame_shift_samples: int
    min_samples: int
    """Fewest input samples that give one output frame."""
    inputs: list[str]
    outputs: list[str]
    files: dict[str, str]
    """Graph (``fp32``, ``int8``; streaming: ``frontend``, ``frontend_int8``) -> file name inside the directory."""
    vocabulary: Vocabulary | None = None
    """ctc: the CTC vocabulary."""
    class_names: list[str] | None = None
    """classify: name of every class, in output order."""
    in_channels: int = 1
    normalize_audio: bool = False
    language: str = ""
    format_version: int = 1
    export: dict[str, Any] = field(default_factory=dict)
    """Informational: exporter, opset, parity figures."""
    streaming: StreamGeometry | None = None
    """Streaming models: chunk geometry and state tensors of the step graph (``model.onnx``)."""

    def to_dict(self) -> dict[str, Any]:
        """The ``wavssl.json`` content."""
        out: dict[str, Any] = {
            "format": FORMAT, "format_version": self.format_version, "kind": self.kind,
            "sample_rate": self.sample_rate, "frame_shift": self.frame_shift,
            "frame_shift_samples": self.frame_shift_samples, "min_samples": self.min_samples,
            "in_channels": self.in_channels, "normalize_audio": self.normalize_audio,
            "inputs": list(self.inputs), "outputs": list(self.outputs), "files": dict(self.files),
        }
        if self.vocabulary is not None:
            out["vocabulary"] = self.vocabulary.to_dict()
            out["blank_id"] = self.vocabulary.blank_id
            out["delimiter_id"] = self.vocabulary.delimiter_id
            out["language"] = self.language
        if self.class_names is not None:
            out["class_names"] = list(self.class_names)
        if self.streaming is not None:
            out["streaming"] = self.streaming.to_dict()
        out["export"] = dict(self.export)
        return out

    def metadata_props(self) -> dict[str, str]:
        """ONNX ``metadata_props``: every ``wavssl.json`` key, JSON-encoded."""
        return {key: json.dumps(value, ensure_ascii=False) for key, value in self.to_dict().items()}

    @classmethod
    def from_dict(cls, data: Any, where: str = CONFIG_FILE) -> ModelInfo:
        """Parse ``wavssl.json`` content; raises :class:`ModelDirError` naming ``where``."""
        if not isinstance(data, dict):
            raise ModelDirError(f"{where}: expected a JSON object")
        if data.get("format") != FORMAT:
            raise ModelDirError(f"{where}: not a wavssl-onnx model description (format {data.get('format')!r})")
        version = data.get("format_version")
        if not isinstance(version, int) or version < 1:
            raise ModelDirError(f"{where}: bad format_version {version!r}")
        if version > FORMAT_VERSION:
            raise ModelDirError(f"{where}: written in model format version {version}, newer than this runtime "
                                f"reads (up to {FORMAT_VERSION}); upgrade wavssl-onnx")
        try:
            kind = str(data["kind"])
            if kind not in KINDS:
                raise ModelDirError(f"{where}: unknown kind {kind!r} (expected one of {KINDS})")
            vocabulary = Vocabulary.from_dict(data["vocabulary"]) if kind == "ctc" else None
            names = [str(n) for n in data["class_names"]] if kind == "classify" else None
            info = cls(
                kind=kind, sample_rate=int(data["sample_rate"]), frame_shift=float(data["frame_shift"]),
                frame_shift_samples=int(data["frame_shift_samples"]), min_samples=int(data["min_samples"]),
                inputs=[str(x) for x in data["inputs"]], outputs=[str(x) for x in data["outputs"]],
                files={str(k): str(v) for k, v in dict(data["files"]).items()}, vocabulary=vocabulary,
                class_names=names, in_channels=int(data.get("in_channels", 1)),
                normalize_audio=bool(data.get("normalize_audio", False)), language=str(data.get("language", "")),
                format_version=version, export=dict(data.get("export", {})),
                streaming=StreamGeometry.from_dict(data["streaming"]) if "streaming" in data else None,
            )
        except ModelDirError:
            raise
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            missing = f"missing key {e}" if isinstance(e, KeyError) else str(e)
            raise ModelDirError(f"{where}: invalid model description: {missing}") from e
        for key, name in info.files.items():
            _check_file_name(where, key, name)
        if info.sample_rate <= 0 or not info.frame_shift > 0 or info.min_samples < 1 or "fp32" not in info.files:
            raise ModelDirError(f"{where}: invalid model description (sample_rate, frame_shift, min_samples "
                                f"and files.fp32 must be set)")
        if info.streaming is not None and ("frontend" not in info.files or kind != "ctc" or version < STREAMING_VERSION):
            raise ModelDirError(f"{where}: a streaming model needs kind 'ctc', files.frontend and format_version "
                                f">= {STREAMING_VERSION}")
        return info

    def save(self, model_dir: str | os.PathLike[str]) -> Path:
        """Write ``wavssl.json`` atomically into ``model_dir``; returns its path."""
        target = Path(model_dir) / CONFIG_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(target, json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n")


def load_model_info(model_dir: str | os.PathLike[str]) -> ModelInfo:
    """Read and validate ``MODEL_DIR/wavssl.json`` and check that its fp32 model file exists.

    Raises:
        ModelDirError: the directory or a file is missing, the JSON is malformed, or the format
            version is newer than this runtime reads. The message names the file.
    """
    root = Path(model_dir)
    if not root.is_dir():
        raise ModelDirError(f"{root}: no such model directory")
    path = root / CONFIG_FILE
    if not path.is_file():
        raise ModelDirError(f"{path}: missing (not a wavssl-onnx model directory; write one with wavssl export)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelDirError(f"{path}: not valid JSON: {e}") from e
    except RecursionError as e:
        raise ModelDirError(f"{path}: not valid JSON: nested too deeply") from e
    info = ModelInfo.from_dict(data, str(path))
    for key in ("fp32", "frontend"):
        if key in info.files:
            _existing(root, info, key)
    return info


def model_file(model_dir: str | os.PathLike[str], info: ModelInfo, int8: bool) -> Path:
    """Path of the fp32 or int8 graph; raises :class:`ModelDirError` naming a missing file."""
    variant = "int8" if int8 else "fp32"
    if variant not in info.files:
        raise ModelDirError(f"{Path(model_dir) / CONFIG_FILE}: no int8 model in this directory "
                            f"(export it with wavssl export --int8)")
    return _existing(model_dir, info, variant)


def frontend_file(model_dir: str | os.PathLike[str], info: ModelInfo, int8: bool) -> Path:
    """Path of a streaming model's front-end graph for the fp32 or int8 variant (the int8 variant
    runs ``files.frontend_int8`` where the directory has one, else ``files.frontend``); raises
    :class:`ModelDirError` naming a missing file."""
    if "frontend" not in info.files:
        raise ModelDirError(f"{Path(model_dir) / CONFIG_FILE}: not a streaming model (no files.frontend)")
    return _existing(model_dir, info, "frontend_int8" if int8 and "frontend_int8" in info.files else "frontend")


def _existing(model_dir: str | os.PathLike[str], info: ModelInfo, key: str) -> Path:
    """Path of ``info.files[key]``; raises :class:`ModelDirError` naming it when it is missing."""
    path = Path(model_dir) / info.files[key]
    if not path.is_file():
        raise ModelDirError(f"{path}: missing (the {key.replace('_', ' ')} model named in {Path(model_dir) / CONFIG_FILE})")
    return path


INFORMATIONAL_KEYS = ("export", "files")
"""``wavssl.json`` keys that may differ from a graph's metadata: how it was made, and which files sit
beside it (a directory may drop or add a variant, e.g. an older one without ``frontend_int8``);
neither changes what the graph computes."""


def check_metadata(path: Path, info: ModelInfo, metadata: dict[str, str]) -> None:
    """Check that an ONNX file's ``metadata_props`` agree with ``wavssl.json``: format version and kind
    must be there, and every other key both hold (sample rate, frame shift, vocabulary, ...) must
    have the same value; a mismatched or foreign file is refused by name."""
    for key in ("format_version", "kind"):
        if key not in metadata:
            raise ModelDirError(f"{path}: not written by wavssl export (no {key!r} in its metadata)")
    for key, want in info.to_dict().items():
        if key in INFORMATIONAL_KEYS or key not in metadata:
            continue
        try:
            got = json.loads(metadata[key])
        except json.JSONDecodeError:
            got = metadata[key]
        if got != want:
            shown = f"{got!r}"[:80]
            raise ModelDirError(f"{path}: metadata {key}={shown} disagrees with wavssl.json ({f'{want!r}'[:80]}); "
                                f"the directory mixes files of different exports")


def _check_file_name(where: str, key: str, name: str) -> None:
    """Refuse a ``files`` entry that is not a plain relative path inside the model directory."""
    parts = Path(name).parts
    if not name or Path(name).is_absolute() or ".." in parts or "\\" in name:
        raise ModelDirError(f"{where}: files.{key} = {name!r} leaves the model directory; file names must be "
                            f"relative paths inside it")
