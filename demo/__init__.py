"""wavssl's browser demo: a gradio app over the torch-free runtime ``wavssl_onnx``.

``wavssl demo [--model DIR ...]`` serves it; in Python::

    from demo import build_app
    app = build_app(models=["demo/models/en"])   # a gr.Blocks (DemoApp)
    app.launch(prevent_thread_lock=True)          # 127.0.0.1, the demo's upload limit and queue

Modules: :mod:`demo.app` (the page), :mod:`demo.models` (finding and loading models),
:mod:`demo.transcribe`, :mod:`demo.live`, :mod:`demo.sensor` and :mod:`demo.ssl_view` (each tab's
work), :mod:`demo.plots` (figures), :mod:`demo.settings` (limits); ``python -m demo.screenshot``
(the README's picture) and ``python -m demo.measure`` (startup and latency in a browser). Importing
``demo`` itself is cheap: gradio loads with :mod:`demo.app`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DemoApp", "Limits", "build_app"]


def __getattr__(name: str) -> Any:
    if name in ("build_app", "DemoApp"):
        from . import app

        return getattr(app, name)
    if name == "Limits":
        from .settings import Limits

        return Limits
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
