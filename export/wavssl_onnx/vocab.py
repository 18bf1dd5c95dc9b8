"""Character vocabulary for CTC: token ids, encoding and decoding, ``vocab.json``.

Token 0 is the CTC blank. Words are separated by the word-delimiter token (``|``): ``encode`` maps
whitespace to it and ``decode`` maps it back to a space. Text is encoded as given: normalise it first
(``wavssl_onnx.text.normalize_text``).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .fileio import atomic_write_text

VOCAB_FILE = "vocab.json"
"""File name of a vocabulary inside a checkpoint or model directory."""


@dataclass(frozen=True)
class Vocabulary:
    """An ordered list of tokens; a token's id is its index.

    ``tokens[0]`` must be ``blank``; ``unk`` and ``word_delimiter`` must be present. Tokens are unique,
    non-empty and contain no whitespace.
    """

    tokens: list[str]
    """Every token, in id order; ``tokens[0]`` is the blank."""
    blank: str = "<blank>"
    """CTC blank token (id 0)."""
    unk: str = "<unk>"
    """Token standing for characters outside the vocabulary."""
    word_delimiter: str = "|"
    """Token standing for the space between words."""
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tokens = list(self.tokens)
        for token in tokens:
            if not isinstance(token, str) or not token or any(c.isspace() for c in token):
                raise ValueError(f"vocabulary token {token!r} must be a non-empty string without whitespace")
        duplicates = sorted(t for t, n in Counter(tokens).items() if n > 1)
        if duplicates:
            raise ValueError(f"vocabulary tokens must be unique; repeated: {duplicates}")
        if not tokens or tokens[0] != self.blank:
            raise ValueError(f"vocabulary token 0 must be the blank {self.blank!r}, got {tokens[:1]}")
        for name, token in (("unk", self.unk), ("word_delimiter", self.word_delimiter)):
            if token not in tokens:
                raise ValueError(f"vocabulary {name} token {token!r} is not among the tokens")
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "_index", {token: i for i, token in enumerate(tokens)})

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def blank_id(self) -> int:
        """Id of the CTC blank (always 0)."""
        return 0

    @property
    def unk_id(self) -> int:
        """Id of the unknown-character token."""
        return self._index[self.unk]

    @property
    def delimiter_id(self) -> int:
        """Id of the word delimiter."""
        return self._index[self.word_delimiter]

    def encode_with_unknown(self, text: str) -> tuple[list[int], Counter[str]]:
        """Encode ``text`` character by character and count the characters that became ``unk``.

        Whitespace runs become one delimiter; leading and trailing whitespace is ignored.

        Returns:
            ``(ids, unknown)``: token ids ``(L,)`` and a ``Counter`` of the characters not in the
            vocabulary.
        """
        ids: list[int] = []
        unknown: Counter[str] = Counter()
        for w, word in enumerate(text.split()):
            if w:
                ids.append(self.delimiter_id)
            for char in word:
                token_id = self._index.get(char)
                if token_id is None or token_id == self.blank_id:
                    unknown[char] += 1
                    token_id = self.unk_id
                ids.append(token_id)
        return ids, unknown

    def encode(self, text: str) -> list[int]:
        """Token ids ``(L,)`` of ``text``; whitespace -> delimiter, unknown characters -> ``unk``."""
        return self.encode_with_unknown(text)[0]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids: blanks are skipped, delimiters become spaces, whitespace is collapsed.

        Repeats are not collapsed: this is a plain id-to-text mapping (CTC decoding is in
        ``wavssl_onnx.decoding``).
        """
        pieces: list[str] = []
        for token_id in ids:
            i = int(token_id)
            if not 0 <= i < len(self.tokens):
                raise ValueError(f"token id {i} is outside the vocabulary of {len(self.tokens)} tokens")
            if i == self.blank_id:
                continue
            pieces.append(" " if i == self.delimiter_id else self.tokens[i])
        return " ".join("".join(pieces).split())

    @classmethod
    def build(
        cls,
        texts: Iterable[str],
        min_count: int = 1,
        *,
        blank: str = "<blank>",
        unk: str = "<unk>",
        word_delimiter: str = "|",
    ) -> Vocabulary:
        """Vocabulary of the characters in ``texts`` seen at least ``min_count`` times.

        Tokens are ``[blank, unk, word_delimiter, *sorted(characters)]``: deterministic for the same
        texts in any order. Whitespace is not a character (it becomes the delimiter).
        """
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(c for c in text if not c.isspace())
        specials = [blank, unk, word_delimiter]
        chars = sorted(c for c, n in counts.items() if n >= min_count and c not in specials)
        return cls(specials + chars, blank=blank, unk=unk, word_delimiter=word_delimiter)

    def to_dict(self) -> dict[str, object]:
        """The ``vocab.json`` content."""
        return {
            "tokens": list(self.tokens),
            "blank": self.blank,
            "unk": self.unk,
            "word_delimiter": self.word_delimiter,
        }

    @classmethod
    def from_dict(cls, data: object) -> Vocabulary:
        """Vocabulary from ``vocab.json`` content; raises ``ValueError`` naming the bad field."""
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        tokens = data.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise ValueError("'tokens' must be a list of strings")
        specials: dict[str, str] = {}
        for key in ("blank", "unk", "word_delimiter"):
            if key in data:
                if not isinstance(data[key], str):
                    raise ValueError(f"{key!r} must be a string, got {data[key]!r}")
                specials[key] = data[key]
        return cls(tokens, **specials)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``vocab.json`` atomically to ``path`` (a file, or a directory to put it in).

        Returns:
            The file written.
        """
        target = _vocab_path(path)
        text = json.dumps(self.to_dict(), ensure_ascii=False, indent=2) + "\n"
        return atomic_write_text(target, text)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Vocabulary:
        """Read ``vocab.json`` from ``path`` (a file, or a directory holding it).

        Raises:
            FileNotFoundError: the file does not exist.
            ValueError: the file is not valid JSON or not a valid vocabulary; the message names it.
        """
        target = _vocab_path(path)
        try:
            data = json.loads(target.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{target}: not a valid JSON vocabulary file: {e}") from e
        try:
            return cls.from_dict(data)
        except ValueError as e:
            raise ValueError(f"{target}: invalid vocabulary: {e}") from e


def _vocab_path(path: str | os.PathLike[str]) -> Path:
    """``path`` itself, or ``path/vocab.json`` when ``path`` is a directory."""
    p = Path(path)
    return p / VOCAB_FILE if p.is_dir() else p
