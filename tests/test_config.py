"""Config loading: old ``config.json`` files still load, string enums are checked against their
``Literal`` type wherever a value comes from (TOML, JSON, ``--set``, Python)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

import wavssl
from wavssl import config as C

DATA = Path(__file__).parent / "data"
OLD_CONFIG = DATA / "config_before_2026-12.json"
"""A run's config.json as wavssl wrote it before model.masking.channel_prob/length were removed
(the demo's shipped pretraining run, demo/models/en-ssl)."""


def test_old_config_json_loads_without_its_removed_keys(tmp_path: Path) -> None:
    old = json.loads(OLD_CONFIG.read_text())
    assert {"channel_prob", "channel_length"} <= set(old["model"]["masking"])
    cfg = C.load_json(OLD_CONFIG)
    kept = json.loads(OLD_CONFIG.read_text())
    assert C.drop_removed_keys(kept) == ["model.masking.channel_prob", "model.masking.channel_length"]
    assert C.to_dict(cfg) == kept  # every other value read as written
    C.save_json(cfg, tmp_path / "config.json")  # written back without them, and read again the same
    assert "channel_prob" not in json.loads((tmp_path / "config.json").read_text())["model"]["masking"]
    assert C.load_json(tmp_path / "config.json") == cfg


def test_old_run_directory_loads_and_runs(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(Path(__file__).parents[1] / "demo" / "models" / "en-ssl", run)
    shutil.copy(OLD_CONFIG, run / "config.json")
    model = wavssl.load(run)
    out = model.encode(torch.randn(1, 16000))
    assert out.last_hidden_state.shape[0] == 1 and torch.isfinite(out.last_hidden_state).all()


def test_toml_with_a_removed_key_warns_and_loads(tmp_path: Path) -> None:
    toml = tmp_path / "over.toml"
    toml.write_text("[model.masking]\nchannel_prob = 0.1\nmask_prob = 0.5\n")
    with pytest.warns(UserWarning, match=r"over\.toml: model\.masking\.channel_prob is ignored \(read by nothing"):
        cfg = C.resolve("tiny", toml)
    assert cfg.model.masking.mask_prob == 0.5


@pytest.mark.parametrize(("assignment", "field"), [
    ("model.frontend.kind=conv", "model.frontend.kind"),
    ("optim.schedule=cosine", "optim.schedule"),
    ("ctc.best_metric=loss", "ctc.best_metric"),
    ("task=finetune", "task"),
])
def test_enum_values_are_checked_on_load(assignment: str, field: str) -> None:
    with pytest.raises(C.ConfigError, match=rf"^{field}: '\w+' is not one of \["):
        C.resolve("tiny", assignments=[assignment])


def test_enum_values_are_checked_by_validate() -> None:
    cfg = C.tiny()
    cfg.classify = dataclasses.replace(cfg.classify, pooling="max")  # type: ignore[arg-type]
    with pytest.raises(C.ConfigError, match=r"^classify\.pooling: 'max' is not one of \['mean', 'attention', 'stats'\]"):
        cfg.validate()
    assert C.FRONTEND_KINDS == ("waveform", "fbank", "sensor") and "ctc" in C.TASKS
