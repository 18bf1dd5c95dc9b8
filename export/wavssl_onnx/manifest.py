"""TSV manifests: the one parser of audio lists in training (``wavssl pretrain`` inputs, transcribed
sets for fine-tuning and evaluation) and the runtime (``wavssl-onnx evaluate``, the demo's examples).

The rules:

- UTF-8 (a byte-order mark is ignored), tab-separated, no quoting (a quote is part of the text); a
  line ends at ``\\n``, ``\\r\\n`` or ``\\r``.
- The first line is a header naming the columns, case-insensitive, in any order: ``path`` always,
  ``text`` where transcripts are needed; other columns are ignored.
- Blank lines are skipped; cells missing from a short row are empty.
- A path cell is stripped; a relative path is relative to the manifest's folder. A text cell comes
  back as written (transcripts are normalised by the caller).

A manifest that cannot be read or lacks a header column raises :class:`~wavssl_onnx.audio.AudioError`
naming it; row-level problems (empty path, missing file) are the caller's to report.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from .audio import AudioError


@dataclass(frozen=True)
class ManifestRow:
    """One data line of a manifest."""

    where: str
    """``manifest.tsv:LINE`` (1-based line number), for messages."""
    path: str
    """The audio file (absolute when the manifest's folder is); ``""`` when the cell is empty."""
    text: str
    """The transcript as written; ``""`` without a ``text`` column."""


def _rows(tsv: Path) -> list[list[str]]:
    """Every line of ``tsv`` split at tabs."""
    try:
        with open(tsv, newline="", encoding="utf-8-sig") as f:
            return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise AudioError(tsv, f"cannot read manifest ({e})") from e


def read_manifest(tsv: str | os.PathLike[str], *, text: bool = False) -> list[ManifestRow]:
    """The data rows of a manifest (see the module docstring); ``text``: a ``text`` column is required.

    Raises:
        AudioError: unreadable, empty, or a header without the ``path`` (and ``text``) column.
    """
    tsv = Path(tsv)
    rows = _rows(tsv)
    needed = ("path", "text") if text else ("path",)
    header = [h.strip().lower() for h in rows[0]] if rows else []
    if any(name not in header for name in needed):
        names = " and ".join(f"'{n}'" for n in needed)
        shown = "\t".join(rows[0])[:80] if rows else "<empty file>"
        raise AudioError(tsv, f"manifest header must name {names} column{'s' if text else ''}, got {shown!r}")
    ip = header.index("path")
    it = header.index("text") if "text" in header else None
    base = tsv.parent.absolute()
    out = []
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        cell = row[ip].strip() if ip < len(row) else ""
        out.append(ManifestRow(f"{tsv}:{number}", str(base / cell) if cell else "",
                               row[it] if it is not None and it < len(row) else ""))
    return out
