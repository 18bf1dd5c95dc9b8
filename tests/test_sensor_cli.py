"""End to end from the shell: pretrain -> finetune -> evaluate on a generated multichannel data set;
``wavssl.load`` of the classifier; channel-count mismatches name the checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import wavssl
from wavssl.models import SequenceClassifier

pytestmark = pytest.mark.e2e  # every test reads the module fixture that runs pretrain + finetune CLIs

CLASSES = {"slow": 0.05, "medium": 0.12, "fast": 0.25}


def _write_split(root: Path, n_per_class: int, seed: int) -> tuple[Path, Path]:
    """An .npz of 3-channel series (class-dependent frequency, random phase, noise, lengths 40..80,
    a few NaNs) and a labels TSV in the same order."""
    rng = np.random.default_rng(seed)
    series, labels = [], []
    for i in range(n_per_class * len(CLASSES)):
        name = list(CLASSES)[i % len(CLASSES)]
        t = np.arange(rng.integers(40, 81))
        x = np.sin(2 * np.pi * CLASSES[name] * t + rng.uniform(0, 6.3, size=(3, 1)))
        x = (x * rng.uniform(0.5, 2.0) + rng.normal(scale=0.2, size=x.shape)).astype(np.float32)
        x[rng.integers(0, 3), rng.integers(0, len(t))] = np.nan
        series.append(x)
        labels.append(name)
    data, table = root / f"series_{seed}.npz", root / f"labels_{seed}.tsv"
    np.savez(data, *series)
    table.write_text("label\n" + "\n".join(labels) + "\n")
    return data, table


def _wavssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wavssl", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sensor_cli")
    train, train_labels = _write_split(root, 12, seed=0)
    test, test_labels = _write_split(root, 10, seed=1)
    ssl, cls = root / "ssl", root / "cls"
    fast = ["--set", "optim.max_updates=60", "--set", "data.batch_size=12", "--set", "train.tensorboard=false"]
    done = _wavssl("pretrain", str(train), "--preset", "sensor-tiny", "--out", str(ssl), "--no-progress", *fast)
    assert done.returncode == 0, done.stderr
    done = _wavssl("finetune", str(ssl), "--task", "classify", "--train", str(train), "--train-labels", str(train_labels),
                   "--valid", str(test), "--valid-labels", str(test_labels), "--out", str(cls), "--no-progress",
                   "--set", "optim.max_updates=80", "--set", "optim.lr=3e-3")
    assert done.returncode == 0, done.stderr
    assert "validation: accuracy" in done.stdout
    return {"root": root, "ssl": ssl, "cls": cls, "test": test, "test_labels": test_labels, "train": train,
            "train_labels": train_labels}


def test_pretrain_finetune_evaluate_from_the_shell(runs: dict[str, Path]) -> None:
    done = _wavssl("evaluate", str(runs["cls"]), str(runs["test"]), "--labels", str(runs["test_labels"]), "--json")
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)
    print(metrics)
    assert metrics["count"] == 30 and metrics["accuracy"] >= 0.9 and metrics["macro_f1"] >= 0.9
    text = _wavssl("evaluate", str(runs["cls"]), str(runs["test"]), "--labels", str(runs["test_labels"]))
    assert text.stdout.startswith("accuracy ") and "macro-F1" in text.stdout
    assert json.loads((runs["cls"] / "labels.json").read_text()) == ["fast", "medium", "slow"]
    assert json.loads((runs["cls"] / "config.json").read_text())["task"] == "classify"


def test_load_returns_the_classifier(runs: dict[str, Path]) -> None:
    model = wavssl.load(runs["cls"])
    assert isinstance(model, SequenceClassifier) and not model.training
    assert model.class_names == ["fast", "medium", "slow"]
    ckpt = sorted((runs["cls"] / "checkpoints").iterdir())[-1]
    assert wavssl.load(ckpt).class_names == model.class_names  # labels.json found from a checkpoint dir
    ssl = wavssl.load(runs["ssl"])
    assert type(ssl).__name__ == "SSLModel" and type(ssl.encoder) is type(model.encoder)


def test_channel_mismatch_names_the_checkpoint(runs: dict[str, Path]) -> None:
    root = runs["root"]
    np.save(root / "six.npy", np.zeros((4, 6, 50), dtype=np.float32))
    (root / "six.tsv").write_text("label\nfast\nslow\nfast\nslow\n")
    done = _wavssl("evaluate", str(runs["cls"]), str(root / "six.npy"), "--labels", str(root / "six.tsv"))
    assert done.returncode == 2
    assert f"6 channel(s), but the checkpoint {runs['cls']} expects 3" in done.stderr
    done = _wavssl("finetune", str(runs["ssl"]), "--task", "classify", "--train", str(root / "six.npy"),
                   "--train-labels", str(root / "six.tsv"), "--out", str(root / "bad"), "--no-progress")
    assert done.returncode == 2 and f"the checkpoint {runs['ssl']} expects 3" in done.stderr


def test_few_labels_linear_probe_and_unknown_classes(runs: dict[str, Path]) -> None:
    root = runs["root"]
    probe = root / "probe"
    done = _wavssl("finetune", str(runs["ssl"]), "--task", "classify", "--train", str(runs["train"]),
                   "--train-labels", str(runs["train_labels"]), "--out", str(probe), "--k-per-class", "2",
                   "--seed", "3", "--linear-probe", "--no-progress", "--set", "optim.max_updates=5")
    assert done.returncode == 0, done.stderr
    cfg = json.loads((probe / "config.json").read_text())
    assert cfg["classify"]["linear_probe"] is True and cfg["train"]["seed"] == 3
    (root / "odd.tsv").write_text("label\n" + "\n".join(["fast", "walk"] * 15) + "\n")
    logistic = root / "logistic"
    done = _wavssl("finetune", str(runs["ssl"]), "--task", "classify", "--train", str(runs["train"]),
                   "--train-labels", str(runs["train_labels"]), "--out", str(logistic), "--k-per-class", "2",
                   "--linear-probe", "--no-progress", "--set", "classify.head_init=logistic",
                   "--set", "optim.max_updates=0", "--set", "classify.all_layers=true")
    assert done.returncode == 0, done.stderr
    done = _wavssl("evaluate", str(logistic), str(runs["test"]), "--labels", str(runs["test_labels"]))
    assert done.returncode == 0 and "accuracy" in done.stdout, done.stderr
    done = _wavssl("evaluate", str(probe), str(runs["test"]), "--labels", str(root / "odd.tsv"))
    assert done.returncode == 2 and "'walk'" in done.stderr and "not among the classifier's classes" in done.stderr
