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
    dropped = C.move_old_keys(kept, "pretrain")  # a pretraining run's fine-tuning defaults go too
    assert ("ctc.lr", None) in dropped and all(new is None for _, new in dropped)
    flat = kept["model"]["frontend"]  # every kind's fields, prefixed -> the fbank kind's table
    kept["model"]["frontend"] = C.upgrade_flat_frontend(flat)
    assert isinstance(cfg.model.frontend, C.FbankFrontend) and cfg.model.frontend.channels == flat["fbank_channels"]
    added_since = {"norm"}  # fields newer than flat tables take their defaults (norm: none, as the model was)
    assert set(kept["model"]["frontend"]) == {f.name for f in dataclasses.fields(C.FbankFrontend)} - added_since
    assert cfg.model.frontend.norm == "none"

    def subset(part: dict, whole: dict) -> bool:
        return all(subset(v, whole[k]) if isinstance(v, dict) else whole[k] == v for k, v in part.items())

    assert subset(kept, C.to_dict(cfg))  # every other value read as written
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
    ("train.best_metric=loss", "train.best_metric"),
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


# --------------------------------------------------------------- fine-tuning runs own their settings

OLD_CTC = DATA / "config_ctc_before_2026-12.json"
OLD_CLASSIFY = DATA / "config_classify_before_2026-12.json"
"""Fine-tuning runs' config.json as wavssl wrote them while the head sections held the run's
learning rate, updates, validation and batching (``ctc.lr``, ``classify.batch_size``, ...)."""


def test_old_finetuning_config_json_keeps_its_run_settings() -> None:
    old = json.loads(OLD_CTC.read_text())
    cfg = C.load_json(OLD_CTC)
    assert (cfg.task, cfg.preset) == ("ctc", "tiny")  # preset inferred from the architecture
    assert cfg.optim.lr == old["ctc"]["lr"] == 0.003 and cfg.optim.max_updates == old["ctc"]["max_updates"]
    assert (cfg.train.valid_every, cfg.train.best_metric) == (50, "cer")
    assert (cfg.data.max_batch_samples, cfg.data.max_samples) == (500_000, 480_000)  # the ctc values, not data's
    assert cfg.ctc.mask_prob == old["ctc"]["mask_prob"] and cfg.ctc.language == "ru"
    old = json.loads(OLD_CLASSIFY.read_text())
    cfg = C.load_json(OLD_CLASSIFY)
    assert (cfg.task, cfg.preset, cfg.data.batch_size) == ("classify", "sensor-tiny", 16)
    assert (cfg.optim.lr, cfg.optim.max_updates) == (0.003, 80) and cfg.classify.pooling == old["classify"]["pooling"]
    pre = C.load_json(OLD_CONFIG)  # a pretraining run: its fine-tuning defaults are dropped, not applied
    assert pre.optim.lr == json.loads(OLD_CONFIG.read_text())["optim"]["lr"] and pre.preset == "tiny"


def test_finetuning_config_comes_from_the_preset_recipe() -> None:
    tiny = C.finetune_config(C.tiny(), "ctc")
    assert (tiny.task, tiny.optim.lr, tiny.optim.max_updates, tiny.optim.schedule) == ("ctc", 2e-3, 300, "tri_stage")
    assert (tiny.train.valid_every, tiny.train.best_metric, tiny.data.max_batch_samples) == (100, "cer", 480_000)
    assert tiny.model == C.tiny().model and tiny.ctc == C.tiny().ctc  # the model and its head are untouched
    base = C.finetune_config(C.base(), "ctc")
    assert (base.optim.lr, base.optim.max_updates, base.train.best_metric) == (5e-5, 13000, "wer")
    clf = C.finetune_config(C.sensor_tiny(), "classify")
    assert (clf.optim.lr, clf.optim.max_updates, clf.optim.warmup_updates, clf.data.batch_size) == (1e-3, 300, 30, 64)
    assert C.finetune_config(tiny, "ctc") is tiny  # a ctc config is already a fine-tuning run's
    with pytest.raises(C.ConfigError, match="a 'ctc' configuration cannot configure a 'classify'"):
        C.finetune_config(tiny, "classify")


def test_moved_keys_move_in_a_finetuning_config_and_are_refused_elsewhere(tmp_path: Path) -> None:
    toml = tmp_path / "ft.toml"
    toml.write_text("[ctc]\nlr = 0.01\nvalid_every = 7\nmask_prob = 0.2\n")
    with pytest.warns(UserWarning, match=r"ctc\.lr is now optim\.lr"):
        cfg = C.merge(C.finetune_config(C.tiny(), "ctc"), C.load_toml(toml))
    assert (cfg.optim.lr, cfg.train.valid_every, cfg.ctc.mask_prob) == (0.01, 7, 0.2)
    with pytest.raises(C.ConfigError, match=r"ctc\.lr is now optim\.lr of the fine-tuning run .*'pretrain'"):
        C.resolve("tiny", toml)


@pytest.mark.parametrize(("assignment", "message"), [
    ("model.quantizer.min_temp=0", "model.quantizer.min_temp must be > 0 and <= max_temp"),
    ("model.context.num_heads=5", "model.context.embed_dim must be divisible by num_heads"),
    ("data.batch_size=0", "data.batch_size must be >= 1"),
    ("train.valid_every=-1", "train.valid_every must be >= 0"),
    ("ctc.channel_length=0", "ctc.mask_length and channel_length must be >= 1"),
    ("classify.head_dropout=1.0", r"classify.head_dropout must be in \[0, 1\)"),
    ("preset=huge", "preset: 'huge' is not one of"),
])
def test_each_section_validates_its_fields(assignment: str, message: str) -> None:
    with pytest.raises(C.ConfigError, match=f"^{message}"):
        C.resolve("tiny", assignments=[assignment])


def test_front_end_is_a_tagged_union_of_kinds(tmp_path: Path) -> None:
    """Each kind has its own fields; switching kind starts from its defaults; a field of another kind
    is an error naming the kind; the old prefixed names of a TOML file are renamed with a warning;
    an old sensor run's flat table keeps its sensor values."""
    fe = C.resolve("base", assignments=['model.frontend.kind="fbank"', "model.frontend.n_mels=40"]).model.frontend
    assert fe == C.FbankFrontend(n_mels=40)
    with pytest.raises(C.ConfigError, match=r"unknown config key 'model\.frontend\.n_mels' \(a 'waveform' front end"):
        C.resolve("base", assignments=["model.frontend.n_mels=40"])
    with pytest.raises(C.ConfigError, match=r"model\.frontend\.kind: 'conv' is not one of"):
        C.resolve("tiny", assignments=['model.frontend.kind="conv"'])
    toml = tmp_path / "s.toml"
    toml.write_text("[model.frontend]\nsensor_conv_layers = [[64, 5, 2], [64, 3, 2]]\nsensor_norm = \"instance\"\n")
    with pytest.warns(UserWarning, match=r"sensor_conv_layers is now model\.frontend\.conv_layers"):
        fe = C.resolve("sensor-tiny", toml).model.frontend
    assert isinstance(fe, C.SensorFrontend) and fe.conv_layers == ((64, 5, 2), (64, 3, 2)) and fe.norm == "instance"
    old = C.load_json(OLD_CLASSIFY).model.frontend
    raw = json.loads(OLD_CLASSIFY.read_text())["model"]["frontend"]
    assert isinstance(old, C.SensorFrontend) and old.conv_layers == tuple(map(tuple, raw["sensor_conv_layers"]))
    assert (old.in_channels, old.norm, old.norm_mode) == (raw["in_channels"], raw["sensor_norm"], raw["norm_mode"])
    assert C.to_dict(C.tiny())["model"]["frontend"] == {"kind": "fbank", **{
        k: v for k, v in dataclasses.asdict(C.tiny().model.frontend).items() if k != "kind"}}
