"""Transcript normalisation for CTC training, decoding and scoring, for any language.

``normalize_text`` turns a raw transcript into the form the character vocabulary, the n-gram LM and
WER/CER all see. Every language gets the generic rules, built on Unicode character classes; a few
languages refine them (``LANGUAGE_RULES``). The steps, in order:

1. Unicode NFC. Generic rules only: Halfwidth and Fullwidth Forms (U+FF00-U+FFEF: ``Ａ``, ``１``,
   ``ｶ``) are folded to their ordinary forms (NFKC on those characters alone). Turkish and
   Azerbaijani (``tr``, ``az``): ``I`` lowercases to dotless ``ı`` and ``İ`` to ``i``. Then lowercase
   (``str.lower``, so ``ß`` stays ``ß`` and a final Greek sigma becomes ``ς``), then NFC again.
2. Russian (``ru``) only: stress marks are removed -- the ``+`` that festvox-ru transcripts put
   before or after the stressed vowel, and the combining acute accent U+0301. ``ё`` is kept as its
   own letter (it is not mapped to ``е``): stress-marked transcripts write it consistently, and a
   model that learns it can still be scored after a caller maps both sides.
3. Punctuation (Unicode categories P*) becomes a space, so ``well-known`` gives ``well known``.
   Languages written without spaces between words (``zh``, ``ja``, ``yue``) drop it instead, so
   ``東京、大阪。`` gives ``東京大阪`` (spaces the transcript has are kept). An apostrophe between two
   kept letters stays (``don't``, ``l'homme``, ``geht's``) except in ``es``, ``cs`` and ``ru``,
   where it becomes a space; the typographic apostrophes ``’`` and ``ʼ`` count as ``'``.
4. Digits (Unicode category Nd, any script) are kept.
5. Generic rules: letters (categories L*) and combining marks (M*, e.g. Devanagari vowel signs and
   virama, Arabic harakat) of every script are kept; the Arabic tatweel U+0640 (a typographic
   stretch, not a sound) is dropped. Languages with an alphabet (``ru``, ``cs``, ``en``, ``es``,
   ``fr``, ``it``) keep only its letters: a letter outside it whose base letter (after removing its
   diacritics) is inside it is folded to that base letter (``café`` -> ``cafe`` in English), and
   every other letter is dropped. Whatever is dropped -- letters outside an alphabet, symbols such
   as ``%`` or ``€``, control characters -- is counted by ``normalize_with_report``.
6. Whitespace runs collapse to one space; leading and trailing whitespace is removed; NFC once
   more (a dropped character may have stood between a letter and its mark).

Language codes are BCP 47 tags (``de``, ``pl``, ``pt-BR``, ``zh-Hant-TW``, ``yue``), checked by
``check_language``; the rules come from the primary subtag (``en-GB`` uses ``en``'s). ``None`` or
``""`` means no particular language: the generic rules.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from dataclasses import dataclass

_LATIN = string.ascii_lowercase
_CYRILLIC_RU = "абвгдеёжзийклмнопрстуфхцчшщъыьэюя"
_APOSTROPHES = {"'", "\u2019", "\u02bc"}
_COMBINING_ACUTE = "\u0301"
_TATWEEL = "\u0640"
_WIDTH_FORMS = re.compile("[\uff00-\uffef]+")

_ISO_639_1 = frozenset("""
aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy da de
dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id
ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu
lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu
rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st su sv sw ta te tg th ti tk tl tn to tr
ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu""".split())
"""The 184 two-letter ISO 639-1 codes (from Debian's iso-codes ``iso_639-2.json``). Three-letter
codes (ISO 639-2/3, about 7,900) are checked by form only."""

# language [-script] [-region] [-variant ...], BCP 47 (RFC 5646) without extensions / private use
_TAG = re.compile(r"(?P<language>[A-Za-z]{2,3})(?:-[A-Za-z]{4})?(?:-(?:[A-Za-z]{2}|[0-9]{3}))?"
                  r"(?:-(?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*")


@dataclass(frozen=True)
class _Language:
    """How one language is normalised."""

    alphabet: frozenset[str] | None
    """Lowercase letters kept; ``None`` keeps the letters and marks of every script (generic)."""
    keeps_apostrophe: bool
    """Keep an apostrophe between two letters (``don't``)."""
    strips_stress: bool = False
    """Remove ``+`` and U+0301 stress marks (Russian transcripts)."""
    spaceless: bool = False
    """Written without spaces between words: punctuation is dropped, not turned into a space."""
    turkic_i: bool = False
    """``I`` lowercases to ``ı`` and ``İ`` to ``i`` (Turkish, Azerbaijani)."""


_GENERIC = _Language(None, keeps_apostrophe=True)
_LANGUAGES: dict[str | None, _Language] = {
    None: _GENERIC,
    "en": _Language(frozenset(_LATIN), keeps_apostrophe=True),
    "es": _Language(frozenset(_LATIN + "áéíóúüñ"), keeps_apostrophe=False),
    "fr": _Language(frozenset(_LATIN + "àâæçéèêëîïôœùûüÿ"), keeps_apostrophe=True),
    "it": _Language(frozenset(_LATIN + "àèéìíîòóùú"), keeps_apostrophe=True),
    "cs": _Language(frozenset(_LATIN + "áčďéěíňóřšťúůýž"), keeps_apostrophe=False),
    "ru": _Language(frozenset(_CYRILLIC_RU), keeps_apostrophe=False, strips_stress=True),
    "zh": _Language(None, keeps_apostrophe=True, spaceless=True),
    "yue": _Language(None, keeps_apostrophe=True, spaceless=True),
    "ja": _Language(None, keeps_apostrophe=True, spaceless=True),
    "tr": _Language(None, keeps_apostrophe=True, turkic_i=True),
    "az": _Language(None, keeps_apostrophe=True, turkic_i=True),
}

LANGUAGE_RULES: tuple[str, ...] = tuple(sorted(code for code in _LANGUAGES if code is not None))
"""Primary language subtags with rules of their own; every other valid code gets the generic rules."""
SUPPORTED_LANGUAGES = LANGUAGE_RULES
"""Former name of ``LANGUAGE_RULES`` (any valid code is supported now)."""


def check_language(language: str | None) -> str | None:
    """Check a language code's form; returns its primary subtag in lower case, which picks the
    rules (``"pt-BR"`` -> ``"pt"``), or ``None`` for ``None`` / ``""`` (generic rules).

    Accepted: BCP 47 tags made of a two-letter ISO 639-1 code or any three-letter code, then
    optionally a script (``Hant``), a region (``BR``, ``419``) and variants. Raises ``ValueError``
    naming the code otherwise (``"???"``, ``"english"``, ``"pt_BR"``, ``"xx"``), ``TypeError`` for
    a non-string.
    """
    if language is None or language == "":
        return None
    hint = "use a BCP 47 code such as 'de', 'pl', 'pt-BR' or 'yue', or '' for no particular language"
    if not isinstance(language, str):
        raise TypeError(f"language must be a string code; {hint}; got {language!r}")
    m = _TAG.fullmatch(language)
    if m is None:
        extra = f" (subtags are joined with '-': {language.replace('_', '-')!r})" if "_" in language else ""
        raise ValueError(f"language {language!r} is not a language code{extra}; {hint}")
    primary = m.group("language").lower()
    if len(primary) == 2 and primary not in _ISO_639_1:
        raise ValueError(f"language {language!r}: {primary!r} is not an ISO 639-1 code; {hint}")
    return primary


def _language(language: str | None) -> _Language:
    """The normalisation rules of ``language``; raises ``ValueError`` for a malformed code."""
    return _LANGUAGES.get(check_language(language), _GENERIC)


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
        return char if unicodedata.category(char)[0] in "LM" and char != _TATWEEL else None
    if char in rules.alphabet:
        return char
    base = unicodedata.normalize("NFD", char)[0]
    if base != char and base in rules.alphabet:
        return base
    return None


def _lower(text: str, rules: _Language) -> str:
    """Steps 1 (and 2): NFC, width folding (generic rules), lowercasing, stress removal."""
    text = unicodedata.normalize("NFC", text)
    if rules.alphabet is None:
        text = _WIDTH_FORMS.sub(lambda m: unicodedata.normalize("NFKC", m.group()), text)
    if rules.turkic_i:
        text = text.replace("I", "ı").replace("İ", "i")
    text = unicodedata.normalize("NFC", text.lower())
    return _remove_stress(text) if rules.strips_stress else text


def normalize_with_report(text: str, language: str | None = None) -> tuple[str, Counter[str]]:
    """Normalise ``text`` for ``language`` and count the characters that were dropped.

    Args:
        text: a raw transcript.
        language: a BCP 47 code (``"de"``, ``"pt-BR"``; see ``check_language``), or ``None`` / ``""``
            for the generic rules.

    Returns:
        The normalised text, and a ``Counter`` of the characters (after lowercasing) that are
        neither punctuation, whitespace, digits nor letters of the language and were dropped.
    """
    rules = _language(language)
    text = _lower(text, rules)
    punctuation = "" if rules.spaceless else " "
    dropped: Counter[str] = Counter()
    out: list[str] = []
    for i, char in enumerate(text):
        if char.isspace():
            out.append(" ")
        elif char in _APOSTROPHES:
            inside_word = 0 < i < len(text) - 1 and _kept_letter(text[i - 1], rules) and _kept_letter(text[i + 1], rules)
            out.append("'" if rules.keeps_apostrophe and inside_word else punctuation)
        elif unicodedata.category(char).startswith("P"):
            out.append(punctuation)
        elif unicodedata.category(char) == "Nd":
            out.append(char)
        else:
            kept = _keep_letter(char, rules)
            if kept is None:
                dropped[char] += 1
            else:
                out.append(kept)
    # NFC again: dropping a character can bring a letter and a mark together (normalising twice
    # must give the same text)
    return unicodedata.normalize("NFC", " ".join("".join(out).split())), dropped


def normalize_text(text: str, language: str | None = None) -> str:
    """Normalise ``text`` for ``language`` (see the module docstring); dropped characters are lost."""
    return normalize_with_report(text, language)[0]
