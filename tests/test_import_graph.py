"""The package's import graph: no cycles, and the model side never reaches into training.

Read from the source (``ast``), so function-level imports count too: a cycle hidden behind a lazy
import is still a cycle. Imports under ``if TYPE_CHECKING:`` are annotations only and do not count.
Entry points (``wavssl/__init__.py``'s lazy API, ``cli.py``, ``__main__.py``) import everything on
purpose and import nothing back, so edges *to* them are what would matter; there are none.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "wavssl"
ENTRY_POINTS = {"wavssl", "wavssl.cli", "wavssl.__main__"}
MODEL_SIDE = ("wavssl.models", "wavssl.modules", "wavssl.losses", "wavssl.recognition", "wavssl.streaming",
              "wavssl.onnx_graph", "wavssl.data")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package modules that ``path`` imports anywhere in its code."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_lines(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for target in targets:
            while target and target not in modules:  # a name inside a module: the module
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): _imports(p, modules) for p in paths}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (entry points left out), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in ENTRY_POINTS:
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in ENTRY_POINTS and node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle() -> None:
    graph = _graph()
    assert len(graph) > 20
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_model_side_never_imports_training() -> None:
    graph = _graph()
    offenders = {m: sorted(t for t in targets if t.startswith("wavssl.train"))
                 for m, targets in graph.items() if m.startswith(MODEL_SIDE)}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_nothing_imports_an_entry_point() -> None:
    graph = _graph()
    importers = {m: sorted(t & (ENTRY_POINTS - {"wavssl"})) for m, t in graph.items() if m not in ENTRY_POINTS}
    assert {m: t for m, t in importers.items() if t} == {}


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("module", ["wavssl.models", "wavssl.train.classify"])  # the two ends of the old circle
def test_each_module_imports_alone(module: str) -> None:
    run = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def test_models_import_without_audio_io() -> None:
    """The models (and the pretraining objective) load on a machine without soundfile / soxr, as GPU
    images are: audio I/O loads only where audio is read."""
    code = ("import sys\nfor m in ('soundfile', 'soxr'):\n    sys.modules[m] = None\n"
            "import wavssl.models, wavssl.objectives, wavssl.onnx_graph")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
