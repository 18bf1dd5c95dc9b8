"""Recipes: LibriSpeech manifest preparation on a small fake tree; recipe configs load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from wavssl import config as C
from wavssl.data.audio import scan_audio

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "librispeech"


def _chapter(root: Path, speaker: int, chapter: int, texts: list[str], missing: int | None = None) -> None:
    folder = root / str(speaker) / str(chapter)
    folder.mkdir(parents=True)
    lines = []
    for i, text in enumerate(texts):
        utt = f"{speaker}-{chapter}-{i:04d}"
        lines.append(f"{utt} {text}")
        if i != missing:
            sf.write(folder / f"{utt}.flac", np.random.default_rng(i).uniform(-0.1, 0.1, 16000 * (i + 1)), 16000)
    (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")


def test_prepare_fake_librispeech_and_libri_light(tmp_path: Path) -> None:
    ls, ll, out = tmp_path / "LibriSpeech", tmp_path / "librispeech_finetuning", tmp_path / "manifests"
    _chapter(ls / "train-clean-100", 19, 198, ["HELLO WORLD", "A SECOND ONE"])
    _chapter(ls / "train-other-500", 20, 5, ["OTHER SPEECH", "LOST ONE", "THIRD"], missing=1)
    _chapter(ls / "dev-clean", 84, 121, ["DEV LINE"])
    for part in range(6):
        _chapter(ll / "1h" / str(part) / ("clean" if part % 2 else "other"), 100 + part, 1, [f"TEN MINUTES {part}"])
    _chapter(ll / "9h" / "clean", 200, 1, ["NINE HOURS"])
    done = subprocess.run([sys.executable, str(RECIPE / "prepare.py"), str(ls), "--out", str(out),
                           "--libri-light", str(ll)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = {name: (out / f"{name}.tsv").read_text().splitlines()
            for name in ("train-clean-100", "train-other-500", "dev-clean", "pretrain", "train_10m", "train_1h",
                         "train_10h")}
    assert all(r[0] == "path\ttext\tduration" for r in rows.values())
    assert [line.split("\t")[1] for line in rows["train-clean-100"][1:]] == ["hello world", "a second one"]
    assert len(rows["train-other-500"]) == 1 + 2  # the utterance without audio is left out ...
    assert "missing audio" in (out / "problems.txt").read_text()  # ... and reported
    assert len(rows["pretrain"]) == 1 + 4 and len(rows["dev-clean"]) == 2
    assert (len(rows["train_10m"]), len(rows["train_1h"]), len(rows["train_10h"])) == (2, 7, 8)
    assert rows["train-clean-100"][2].split("\t")[2] == "2.000"
    scan = scan_audio(out / "pretrain.tsv")  # the pretraining manifest is a valid `wavssl pretrain` input
    assert len(scan.items) == 4 and not scan.skipped


def test_prepare_reports_a_folder_without_subsets(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(RECIPE / "prepare.py"), str(tmp_path), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "no LibriSpeech subset folders" in done.stderr


def test_recipe_config_is_fairseq_base() -> None:
    cfg = C.resolve("base", RECIPE / "conf" / "pretrain_base.toml", ["optim.accumulate=8"])
    assert cfg.model == C.base().model
    assert (cfg.optim.lr, cfg.optim.warmup_updates, cfg.optim.max_updates) == (5e-4, 32000, 400000)
    assert cfg.data.max_batch_samples * 64 / 16000 / 3600 > 1.5  # ~1.56 h per update over 64 GPU-batches
    assert cfg.train.checkpoint_every_seconds == 1800 and cfg.optim.accumulate == 8


def test_librispeech_finetune_configs_merge_over_base() -> None:
    """Every fine-tuning TOML is valid over BASE's fine-tuning recipe and keeps its architecture (dropouts aside)."""
    conf = Path(__file__).resolve().parents[1] / "recipes" / "librispeech" / "conf"
    updates = {}
    for split in ("10m", "1h", "10h", "100h"):
        cfg = C.merge(C.finetune_config(C.base(), "ctc"), C.load_toml(conf / f"finetune_{split}.toml")).validate()
        assert C.architecture(cfg.model) == C.architecture(C.base().model)
        assert cfg.ctc.language == "en" and cfg.ctc.mask_length == 10 and cfg.ctc.channel_length == 64
        updates[split] = cfg.optim.max_updates
        assert cfg.optim.schedule == "tri_stage" and cfg.data.max_samples == 560000
    assert updates == {"10m": 13000, "1h": 13000, "10h": 20000, "100h": 80000}
