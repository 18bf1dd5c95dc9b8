"""``wavssl quickstart``: the whole built-in job, at toy sizes, through the same code as the README's
first command (generate, pretrain, fine-tune, export, LM weight chosen on dev, test scored once)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wavssl.quickstart import LM_FILE, QuickstartConfig, run

pytestmark = pytest.mark.e2e


def test_quickstart_runs_every_step_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    qc = QuickstartConfig(train_utterances=12, dev_utterances=3, test_utterances=3,
                          pretrain=["optim.max_updates=4", "optim.warmup_updates=1", "train.log_every=1",
                                    "data.max_batch_samples=64000"],
                          finetune=["ctc.language=en", "optim.max_updates=4", "train.valid_every=2",
                                    "data.max_batch_samples=160000", "data.max_samples=160000"],
                          lm_weights=(0.0, 0.5), beam=2)
    data, out = tmp_path / "speech", tmp_path / "runs"
    summary = run(data, out, qc=qc, progress=False)
    printed = capsys.readouterr().out

    for split in ("transcripts", "dev", "test"):
        assert (data / f"{split}.tsv").is_file()
    assert (out / "ssl" / "model.safetensors").is_file() and (out / "asr" / "vocab.json").is_file()
    assert (out / "model" / "model.int8.onnx").is_file() and (out / "model" / LM_FILE).is_file()
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["pretrain_updates"] == 4 and summary["finetune_updates"] == 4
    assert set(summary["dev_cer_by_lm_weight"]) == {0.0, 0.5}  # type: ignore[arg-type]
    assert summary["lm_weight"] in (0.0, 0.5) and summary["test_utterances"] == 3
    for key in ("test_greedy", "test_lm"):
        assert 0.0 <= summary[key]["cer"] and 0.0 <= summary[key]["wer"]  # type: ignore[index]
    assert "pretraining run" in printed and "Next:" in printed and "wavssl demo --model" in printed

    again = run(data, out, qc=qc, progress=False)  # a finished run is picked up, not redone
    assert again["pretrain_updates"] == 4 and again["finetune_updates"] == 4
    assert again["test_greedy"] == summary["test_greedy"]
