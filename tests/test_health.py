"""Run-health rules (wavssl.train.health): each fires on a crafted metric stream, once, after its
patience; none fires on real healthy runs (committed logs in tests/data/health, made with the
recipes users start from); a collapsed pretraining warns end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wavssl import config as C
from wavssl.train.health import HealthMonitor, HealthRules, RunHealth, check_log, main

DATA = Path(__file__).parent / "data" / "health"
ROOT = Path(__file__).resolve().parents[1]

HEALTHY = {
    # `wavssl quickstart`'s pretraining: tiny preset, 600 updates, on `wavssl synth-corpus -n 1200`
    "tiny_quickstart.jsonl": lambda: C.resolve("tiny", assignments=["optim.max_updates=600"]),
    # the sensor recipes (benchmarks/sensor_fewlabel.py pretraining), sensor-tiny + recipe TOML
    **{f"sensor_{name}.jsonl": (lambda name=name: C.resolve("sensor-tiny", ROOT / "recipes" / "sensors" / "configs"
                                                            / f"{name}.toml"))
       for name in ("JapaneseVowels", "PickupGestureWiimoteZ", "BasicMotions")},
}


def _records(name: str = "tiny_quickstart.jsonl") -> list[dict[str, float]]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("name", sorted(HEALTHY))
def test_silent_on_real_healthy_runs(name: str) -> None:
    cfg = HEALTHY[name]()
    monitor = check_log(DATA / name, cfg)
    assert len(monitor.history) >= 20
    assert monitor.fired == {}
    # and with margin: the thresholds sit well outside what these runs did after warm-up
    after = [r for r in monitor.history if r["update"] > cfg.optim.warmup_updates]
    groups = [k for k in after[0] if k.startswith("code_perplexity_") and k[16:].isdigit()]
    assert len(groups) == cfg.model.quantizer.groups
    assert min(r[g] for r in after for g in groups) > 1.5 * monitor.collapse_threshold
    assert min(r["accuracy"] for r in after) > 1.5 * monitor.rules.chance_factor * monitor.chance_accuracy


def _monitor(**rules: object) -> HealthMonitor:
    cfg = HEALTHY["tiny_quickstart.jsonl"]()
    return HealthMonitor.for_config(cfg, HealthRules(warmup_updates=cfg.optim.warmup_updates, **rules))  # type: ignore[arg-type]


def _crafted(change: dict[str, object], start: int = 300) -> list[dict[str, float]]:
    """The healthy log with ``change`` applied from update ``start`` on (a value, or a function of the record)."""
    out = []
    for r in _records():
        r = dict(r)
        if r["update"] >= start:
            for k, v in change.items():
                r[k] = v(r) if callable(v) else v  # type: ignore[assignment]
        out.append(r)
    return out


CASES = {
    "collapse": {"code_perplexity_1": 1.3},
    "chance": {"accuracy": 0.05},
    "gradient": {"grad_norm": lambda r: 80 * r["grad_norm"]},
    "nonfinite": {"nonfinite_total": lambda r: r["update"] - 290},
    "plateau": {"loss": 2.1},
    "masking": {"masked_fraction": 0.97},
}


@pytest.mark.parametrize("condition", sorted(CASES))
def test_each_rule_fires_once_after_its_patience(condition: str) -> None:
    monitor, reported = _monitor(), []
    monitor.report = reported.append
    raised_at = []
    for r in _crafted(CASES[condition]):
        if monitor.observe(r):
            raised_at.append(r["update"])
    assert list(monitor.fired) == [condition] and len(reported) == 1 and reported[0] == monitor.fired[condition]
    line = reported[0]
    assert "\n" not in line and line.startswith("health: ") and "Is my run healthy?" in line
    if condition != "plateau":  # the others hold from update 300 on: reported at the third window
        assert raised_at == [320.0]
    else:
        assert len(raised_at) == 1 and raised_at[0] > 300


def test_rules_wait_for_warmup_and_a_streak() -> None:
    # collapsed codes and chance accuracy during warm-up (update <= 50) are not judged
    monitor = _monitor()
    for r in _crafted({"code_perplexity_0": 1.0, "accuracy": 0.0}, start=0)[:5]:
        monitor.observe(r)
    assert monitor.fired == {}
    # two bad windows in a row, then a good one: no warning (patience 3)
    monitor = _monitor()
    records = _records()
    for i, r in enumerate(records):
        monitor.observe({**r, "code_perplexity_0": 1.0} if i in (20, 21, 23, 24) else r)
    assert monitor.fired == {}
    # validation records (no loss) are ignored
    assert monitor.observe({"update": 700.0, "valid_loss": 1.0}) == []


def test_run_health_follows_the_log_and_replays_a_resumed_one_silently(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    cfg = HEALTHY["tiny_quickstart.jsonl"]()
    lines = [json.dumps(r) for r in _crafted(CASES["chance"])]
    log = tmp_path / "train_log.jsonl"
    log.write_text("\n".join(lines[:20]) + "\n")
    health = RunHealth(cfg, tmp_path)
    log.write_text("\n".join(lines[:40]) + "\n" + lines[40][:30])  # a line still being written
    health.after_update(399)  # not a logged update: nothing read
    assert health.monitor.history[-1]["update"] == 200
    health.after_update(400)
    assert health.monitor.history[-1]["update"] == 400 and list(health.monitor.fired) == ["chance"]
    events = (tmp_path / "events.log").read_text().splitlines()
    assert len(events) == 1 and events[0].startswith("health: contrastive accuracy 0.050 stuck at chance")
    assert f"[wavssl] {events[0]}" in capsys.readouterr().out
    log.write_text("\n".join(lines) + "\n")
    health.follow()
    assert len(health.monitor.history) == len(lines)
    # a resumed run replays what is logged without reporting it again
    again = RunHealth(cfg, tmp_path)
    assert list(again.monitor.fired) == ["chance"]
    assert len((tmp_path / "events.log").read_text().splitlines()) == 1
    assert RunHealth(cfg, None).follow() == []  # ranks other than 0


def test_cli_checks_a_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = HEALTHY["tiny_quickstart.jsonl"]()
    C.save_json(cfg, tmp_path / "config.json")
    (tmp_path / "train_log.jsonl").write_text((DATA / "tiny_quickstart.jsonl").read_text())
    assert main([str(tmp_path)]) == 0 and "healthy over 60 logged windows" in capsys.readouterr().out
    (tmp_path / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _crafted(CASES["masking"])))
    assert main([str(tmp_path)]) == 1 and "masked fraction 0.970" in capsys.readouterr().out
    assert main([str(tmp_path / "nothing")]) == 2 and "config.json: not found" in capsys.readouterr().err


@pytest.mark.e2e
def test_collapsed_pretraining_warns(speech_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No diversity loss, an 8-entry codebook and a high learning rate: the codes collapse within 40
    updates (about 15 s) and the run says so, once, on stdout and in events.log."""
    from wavssl.train.pretraining import pretrain

    cfg = C.resolve("tiny", assignments=[
        "data.max_batch_samples=96000", "data.max_samples=48000", "data.num_workers=0", "train.log_every=5",
        "train.tensorboard=false", "optim.max_updates=40", "optim.warmup_updates=5", "optim.lr=0.02",
        "model.loss.diversity_weight=0", "model.quantizer.entries=8"])
    pretrain(speech_dir, tmp_path / "run", cfg, progress=False)
    events = [e for e in (tmp_path / "run" / "events.log").read_text().splitlines() if e.startswith("health:")]
    assert len(events) == 1 and events[0].startswith("health: codebook collapse"), events
    assert capsys.readouterr().out.count("[wavssl] health: codebook collapse") == 1


def test_health_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import runpy

    plot = runpy.run_path(str(ROOT / "recipes" / "health_plot.py"))["plot"]
    C.save_json(HEALTHY["tiny_quickstart.jsonl"](), tmp_path / "config.json")
    (tmp_path / "train_log.jsonl").write_text((DATA / "tiny_quickstart.jsonl").read_text())
    out = plot(tmp_path, tmp_path / "fig" / "health.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    with pytest.raises(FileNotFoundError, match="config.json: not found"):
        plot(tmp_path / "fig", tmp_path / "x.png")
