"""wavssl-onnx: the CPU runtime of wavssl (numpy only on the text side; never torch).

Text normalisation, the CTC character vocabulary, CTC decoding (greedy, prefix beam search with
n-gram shallow fusion, word times), an n-gram LM and WER/CER. The PyTorch side (``wavssl``) imports
these from here.
"""

from .decoding import (
    Hypothesis,
    WordTime,
    beam_search,
    ctc_log_likelihood,
    greedy_decode,
    greedy_decode_batch,
    word_times,
)
from .lm import NGramLM
from .metrics import EditCounts, ErrorRate, cer, edit_ops, wer
from .text import SUPPORTED_LANGUAGES, normalize_text, normalize_with_report
from .vocab import VOCAB_FILE, Vocabulary

__version__ = "0.1.0"

__all__ = [
    "SUPPORTED_LANGUAGES",
    "VOCAB_FILE",
    "EditCounts",
    "ErrorRate",
    "Hypothesis",
    "NGramLM",
    "Vocabulary",
    "WordTime",
    "__version__",
    "beam_search",
    "cer",
    "ctc_log_likelihood",
    "edit_ops",
    "greedy_decode",
    "greedy_decode_batch",
    "normalize_text",
    "normalize_with_report",
    "wer",
    "word_times",
]
