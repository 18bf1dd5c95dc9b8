"""What the CPU offers int8 inference, read from ``/proc/cpuinfo`` (numpy only, no onnxruntime).

ONNX Runtime picks its uint8 x int8 product kernel by the CPU it finds: VNNI (``avx512_vnni`` or
``avx_vnni``) and AMX accumulate every product in int32; plain AVX2 and AVX-512 without VNNI sum
pairs of products in a saturating int16 (``vpmaddubsw``), so int8 weights above 64 in magnitude can
overflow there. ``wavssl export --int8`` keeps every weight within 64 (``export.int8.weight_limit``
in ``wavssl.json``), which makes its int8 models give the same integers on every kind; this module
names the kind (``wavssl-onnx info``, the benchmarks' JSON lines) and tells whether a model exported
without that limit is at risk here.
"""

from __future__ import annotations

import platform
from pathlib import Path

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp")
"""The instruction-set flags that decide the int8 kernel (``asimddp``: ARM dot product)."""

PAIR_SUM_LIMIT = 64
"""Largest |int8 weight| whose u8 x s8 pair sums fit a saturating int16 (2 x 255 x 64 = 32640)."""


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> list[str]:
    """The members of FLAGS this CPU has (empty when ``cpuinfo`` cannot be read)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return []
    have: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            have.update(value.split())
    return [f for f in FLAGS if f in have]


def int8_kernel(flags: list[str] | None = None) -> str:
    """``"vnni"``, ``"amx"``, ``"arm-dot"``, ``"avx2-int16-pairs"`` (saturating pair sums) or ``"other"``."""
    flags = cpu_flags() if flags is None else flags
    if "amx_int8" in flags:
        return "amx"
    if "avx512_vnni" in flags or "avx_vnni" in flags:
        return "vnni"
    if "asimddp" in flags:
        return "arm-dot"
    if "avx2" in flags or platform.machine().lower() in ("x86_64", "amd64"):
        return "avx2-int16-pairs"
    return "other"


def int8_saturation_risk(weight_limit: int | None, flags: list[str] | None = None) -> bool:
    """True when an int8 model whose weights reach ``weight_limit`` (None: unknown, an older export)
    can saturate on this CPU."""
    return int8_kernel(flags) == "avx2-int16-pairs" and (weight_limit is None or weight_limit > PAIR_SUM_LIMIT)
