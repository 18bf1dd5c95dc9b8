"""wavssl-onnx: the CPU runtime of wavssl (numpy + onnxruntime + soundfile + soxr; never torch).

- Inference on exported models (``wavssl export``): :class:`OfflineRecognizer` (speech -> text with
  word times; long files in overlapping windows), :class:`OnlineRecognizer` (audio that arrives
  live: ``create_stream`` / ``accept_waveform`` / ``decode`` / ``input_finished``, chunk by chunk for
  models exported with ``--streaming``) and :class:`Classifier` (sensor series -> class
  probabilities); the model-directory contract in :mod:`wavssl_onnx.model_dir`; the
  ``wavssl-onnx`` command (:mod:`wavssl_onnx.cli`). These load onnxruntime on first use.
- The text side (numpy only): text normalisation, the CTC character vocabulary, CTC decoding
  (greedy, prefix beam search with n-gram shallow fusion, word times), an n-gram LM and WER/CER.
  The PyTorch side (``wavssl``) imports these from here.
"""

from typing import TYPE_CHECKING

from .decoding import (
    BeamSearch,
    Decoding,
    Greedy,
    Hypothesis,
    choose_decoding,
    WordTime,
    beam_search,
    ctc_log_likelihood,
    greedy_decode,
    greedy_decode_batch,
    word_times,
)
from .lm import NGramLM
from .metrics import EditCounts, ErrorRate, cer, edit_ops, wer
from .text import LANGUAGE_RULES, SUPPORTED_LANGUAGES, check_language, normalize_text, normalize_with_report
from .vocab import VOCAB_FILE, Vocabulary

if TYPE_CHECKING:  # the lazy names below, as type checkers see them
    from .audio import AudioError, read_audio
    from .classifier import Classifier, Prediction, load_series
    from .model_dir import FORMAT_VERSION, ModelDirError, ModelInfo, load_model_info
    from .recognizer import OfflineRecognizer, OnlineRecognizer, Result
    from .series import SeriesError, read_series
    from .streaming import EndpointRules

__version__ = "0.1.0"

_LAZY = {
    "OfflineRecognizer": "recognizer", "OnlineRecognizer": "recognizer", "Result": "recognizer", "Classifier": "classifier",
    "Prediction": "classifier", "load_series": "classifier", "AudioError": "audio", "read_audio": "audio",
    "ModelInfo": "model_dir", "ModelDirError": "model_dir", "load_model_info": "model_dir",
    "FORMAT_VERSION": "model_dir", "EndpointRules": "streaming", "SeriesError": "series", "read_series": "series",
}


def __getattr__(name: str) -> object:
    """The inference API, imported on first use (the text side does not need onnxruntime)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "FORMAT_VERSION",
    "LANGUAGE_RULES",
    "SUPPORTED_LANGUAGES",
    "VOCAB_FILE",
    "AudioError",
    "BeamSearch",
    "Classifier",
    "Decoding",
    "EditCounts",
    "EndpointRules",
    "ErrorRate",
    "Greedy",
    "Hypothesis",
    "ModelDirError",
    "ModelInfo",
    "NGramLM",
    "OfflineRecognizer",
    "OnlineRecognizer",
    "Prediction",
    "Result",
    "SeriesError",
    "Vocabulary",
    "WordTime",
    "__version__",
    "beam_search",
    "cer",
    "choose_decoding",
    "ctc_log_likelihood",
    "edit_ops",
    "greedy_decode",
    "greedy_decode_batch",
    "load_model_info",
    "load_series",
    "check_language",
    "normalize_text",
    "normalize_with_report",
    "read_audio",
    "read_series",
    "wer",
    "word_times",
]
