"""Per-language transcript normalisation for CTC training, decoding and scoring.

``normalize_text`` turns a raw transcript into the form the character vocabulary, the n-gram LM and
WER/CER all see. The steps, in order:

1. Unicode NFC, then lowercase (``str.lower``), then NFC again.
2. Russian (``ru``) only: stress marks are removed -- the ``+`` that festvox-ru transcripts put
   before or after the stressed vowel, and the combining acute accent U+0301. ``ё`` is kept as its
   own letter (it is not mapped to ``е``): stress-marked transcripts write it consistently, and a
   model that learns it can still be scored after a caller maps both sides.
3. Punctuation (Unicode categories P*) becomes a space, so ``well-known`` gives ``well known``.
   Languages with elision (``en``, ``fr``, ``it``, and ``None``) keep an apostrophe between two
   letters (``don't``, ``l'homme``); the typographic apostrophes ``’`` and ``ʼ`` count as ``'``.
4. Digits (Unicode category Nd) are kept.
5. Letters of the language's alphabet are kept. A letter outside it whose base letter (after
   removing its diacritics) is inside it is folded to that base letter (``café`` -> ``cafe`` in
   English). Everything else -- letters of other scripts, symbols such as ``%`` or ``€``, control
   characters -- is dropped and counted by ``normalize_with_report``.
6. Whitespace runs collapse to one space; leading and trailing whitespace is removed.

``language=None`` keeps the letters (categories L*) and combining marks (M*) of every script.
"""

from __future__ import annotations

import string
import unicodedata
from collections import Counter
from dataclasses import dataclass

_LATIN = string.ascii_lowercase
_CYRILLIC_RU = "абвгдеёжзийклмнопрстуфхцчшщъыьэюя"
_APOSTROPHES = {"'", "\u2019", "\u02bc"}
_COMBINING_ACUTE = "\u0301"


@dataclass(frozen=True)
class _Language:
    """How one language is normalised."""

    alphabet: frozenset[str] | None
    """Lowercase letters kept; ``None`` keeps the letters and marks of every script."""
    keeps_apostrophe: bool
    """Keep an apostrophe between two letters (``don't``)."""
    strips_stress: bool
    """Remove ``+`` and U+0301 stress marks (Russian transcripts)."""


_LANGUAGES: dict[str | None, _Language] = {
    None: _Language(None, keeps_apostrophe=True, strips_stress=False),
    "en": _Language(frozenset(_LATIN), keeps_apostrophe=True, strips_stress=False),
    "es": _Language(frozenset(_LATIN + "áéíóúüñ"), keeps_apostrophe=False, strips_stress=False),
    "fr": _Language(frozenset(_LATIN + "àâæçéèêëîïôœùûüÿ"), keeps_apostrophe=True, strips_stress=False),
    "it": _Language(frozenset(_LATIN + "àèéìíîòóùú"), keeps_apostrophe=True, strips_stress=False),
    "cs": _Language(frozenset(_LATIN + "áčďéěíňóřšťúůýž"), keeps_apostrophe=False, strips_stress=False),
    "ru": _Language(frozenset(_CYRILLIC_RU), keeps_apostrophe=False, strips_stress=True),
}

SUPPORTED_LANGUAGES: tuple[str, ...] = tuple(sorted(code for code in _LANGUAGES if code is not None))
"""Language codes with a defined alphabet; ``None`` (any script) is accepted as well."""


def _language(language: str | None) -> _Language:
    """The normalisation rules of ``language``; raises ``ValueError`` for an unknown code."""
    if language not in _LANGUAGES:
        raise ValueError(f"language {language!r} is not supported; use one of {', '.join(SUPPORTED_LANGUAGES)} or None")
    return _LANGUAGES[language]


def _remove_stress(text: str) -> str:
    """Remove ``+`` and combining-acute stress marks; other diacritics (``й``, ``ё``) survive."""
    decomposed = unicodedata.normalize("NFD", text.replace("+", ""))
    return unicodedata.normalize("NFC", decomposed.replace(_COMBINING_ACUTE, ""))


def _is_letter(char: str) -> bool:
    """True for a letter of any script."""
    return unicodedata.category(char).startswith("L")


def _kept_letter(char: str, rules: _Language) -> bool:
    """True for a letter the output keeps (not an apostrophe): only those make an apostrophe
    word-internal, so normalising twice gives the same text."""
    return char not in _APOSTROPHES and _is_letter(char) and _keep_letter(char, rules) is not None


def _keep_letter(char: str, rules: _Language) -> str | None:
    """``char`` itself, its folded base letter, or ``None`` when the language does not keep it."""
    if rules.alphabet is None:
        return char if unicodedata.category(char)[0] in "LM" else None
    if char in rules.alphabet:
        return char
    base = unicodedata.normalize("NFD", char)[0]
    if base != char and base in rules.alphabet:
        return base
    return None


def normalize_with_report(text: str, language: str | None = None) -> tuple[str, Counter[str]]:
    """Normalise ``text`` for ``language`` and count the characters that were dropped.

    Args:
        text: a raw transcript.
        language: ``"ru"``, ``"cs"``, ``"en"``, ``"es"``, ``"fr"``, ``"it"`` or ``None`` (any script).

    Returns:
        The normalised text, and a ``Counter`` of the characters (after lowercasing) that are
        neither punctuation, whitespace, digits nor letters of the language and were dropped.
    """
    rules = _language(language)
    text = unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).lower())
    if rules.strips_stress:
        text = _remove_stress(text)
    dropped: Counter[str] = Counter()
    out: list[str] = []
    for i, char in enumerate(text):
        if char.isspace():
            out.append(" ")
        elif char in _APOSTROPHES:
            inside_word = 0 < i < len(text) - 1 and _kept_letter(text[i - 1], rules) and _kept_letter(text[i + 1], rules)
            out.append("'" if rules.keeps_apostrophe and inside_word else " ")
        elif unicodedata.category(char).startswith("P"):
            out.append(" ")
        elif unicodedata.category(char) == "Nd":
            out.append(char)
        else:
            kept = _keep_letter(char, rules)
            if kept is None:
                dropped[char] += 1
            else:
                out.append(kept)
    return " ".join("".join(out).split()), dropped


def normalize_text(text: str, language: str | None = None) -> str:
    """Normalise ``text`` for ``language`` (see the module docstring); dropped characters are lost."""
    return normalize_with_report(text, language)[0]
