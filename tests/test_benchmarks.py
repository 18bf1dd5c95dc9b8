"""Smoke tests of the benchmark scripts (CPU, tiny sizes): they run, write their result line, and
compare like with like."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("transformers")

# the GPU image has no audio I/O packages: the benchmark must run without them
_BLOCK_AUDIO_IO = "import sys\nfor m in ('soundfile', 'soxr', 'gradio', 'torchaudio'):\n    sys.modules[m] = None\n"


@pytest.mark.e2e
def test_gpu_pretrain_cpu_smoke(tmp_path: Path) -> None:
    out = tmp_path / "gpu_pretrain.jsonl"
    argv = ["benchmarks/gpu_pretrain.py", "--device", "cpu", "--preset", "tiny", "--steps", "2", "--warmup", "1",
            "--batch-seconds", "2", "--utterance-seconds", "1", "--threads", "2", "--out", str(out)]
    code = _BLOCK_AUDIO_IO + f"import runpy\nsys.argv = {argv!r}\nrunpy.run_path({argv[0]!r}, run_name='__main__')\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = out.read_text().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["benchmark"] == "gpu_pretrain" and rec["device"] == "cpu" and rec["preset"] == "tiny"
    assert rec["batch_shapes"] == [[2, 16000]] and rec["audio_seconds_per_step"] == 2.0
    results = rec["results"]
    assert set(results) == {"wavssl", "transformers"}
    for impl, r in results.items():
        assert r["status"] == "ok", (impl, r)
        assert len(r["step_times_s"]) == 2 and r["median_step_s"] > 0
        assert r["audio_s_per_s"] > 0 and r["audio_s_per_s_mean"] > 0
        assert r["losses_finite"] and len(r["losses"]) == 4  # 1 warm-up + 2 timed + 1 closing update
        assert all(isinstance(x, float) and math.isfinite(x) for x in r["losses"])
    assert results["wavssl"]["params"] == results["transformers"]["params"]
    ratio = rec["targets"]["speed_ratio"]
    assert ratio["value"] == pytest.approx(results["wavssl"]["audio_s_per_s"] / results["transformers"]["audio_s_per_s"],
                                           rel=1e-2)
    assert ratio["pass"] is None  # GPU targets are not judged on a CPU
    for name in ("wavssl", "transformers", "ratio", "target"):
        assert name in proc.stdout


def test_tiny_configs_match() -> None:
    """transformers' config is the wavssl tiny preset's architecture, translated the way the benchmark
    translates BASE: same widths, depths, codebooks, masking, and the same parameter count."""
    sys.path.insert(0, str(ROOT))
    from transformers import Wav2Vec2ForPreTraining

    from benchmarks._wav2vec2 import hf_config, model_config
    from wavssl.config import preset
    from wavssl.models import build_model

    m, notes = model_config("tiny")
    assert any("front end" in n for n in notes)  # tiny's fbank front end becomes a waveform conv stack
    h = hf_config(m)
    p = preset("tiny").model
    assert (h.hidden_size, h.num_hidden_layers, h.num_attention_heads, h.intermediate_size) == (
        p.context.embed_dim, p.context.num_layers, p.context.num_heads, p.context.ffn_dim)
    assert (h.num_conv_pos_embeddings, h.num_conv_pos_embedding_groups) == (p.context.pos_conv_kernel,
                                                                            p.context.pos_conv_groups)
    assert (h.num_codevector_groups, h.num_codevectors_per_group, h.codevector_dim, h.proj_codevector_dim) == (
        p.quantizer.groups, p.quantizer.entries, p.quantizer.dim, p.final_dim)
    assert (h.num_negatives, h.mask_time_prob, h.mask_time_length, h.mask_time_min_masks) == (
        p.masking.num_negatives, p.masking.mask_prob, p.masking.mask_length, p.masking.min_masks)
    assert (h.diversity_loss_weight, h.contrastive_logits_temperature) == (p.loss.diversity_weight, p.loss.logit_temp)
    assert h.conv_dim[-1] == p.frontend.frame_dim and h.feat_extract_norm == "group"
    n_ours = sum(t.numel() for t in build_model(m).parameters())
    n_peer = sum(t.numel() for t in Wav2Vec2ForPreTraining(h).parameters())
    assert n_ours == n_peer


def test_gpu_pretrain_records_oom_and_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An implementation that runs out of memory is recorded as ``oom``; the other one still runs."""
    sys.path.insert(0, str(ROOT))
    import torch

    from benchmarks import gpu_pretrain

    build = gpu_pretrain.build

    def failing_build(impl: str, cfg, seed: int):
        if impl == "transformers":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return build(impl, cfg, seed)

    monkeypatch.setattr(gpu_pretrain, "build", failing_build)
    rec = gpu_pretrain.main(["--device", "cpu", "--preset", "tiny", "--steps", "1", "--warmup", "0",
                             "--batch-seconds", "0.5", "--utterance-seconds", "0.5", "--no-write"])
    assert rec["results"]["transformers"]["status"] == "oom"
    assert rec["results"]["wavssl"]["status"] == "ok" and rec["results"]["wavssl"]["audio_s_per_s"] > 0
    assert rec["targets"]["speed_ratio"]["value"] is None


def test_sensor_probe_variants_and_diagnostic_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe sweep's variant syntax, and its train+test diagnostic file holds both splits' series
    in order (the test split's header dropped)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import sensor_probe

    from wavssl.data.sensor import load_series

    assert sensor_probe.parse_variant("L4 model.context.num_layers=4 optim.lr=0.01") == (
        "L4", ["model.context.num_layers=4", "optim.lr=0.01"])
    with pytest.raises(ValueError, match="key=value"):
        sensor_probe.parse_variant("L4 model.context.num_layers")
    header = "@problemName Toy\n@univariate true\n@classLabel true a b\n@data\n"
    files = {"TRAIN": header + "1,2,3:a\n4,5,6,7:b\n", "TEST": "# a comment\n" + header + "8,9,10:b\n"}
    for split, text in files.items():
        (tmp_path / f"Toy_{split}.ts").write_text(text)
    monkeypatch.setattr(sensor_probe.fewlabel, "aeon_file", lambda name, stem, split: tmp_path / f"{stem}_{split}.ts")
    both = load_series(sensor_probe.combined_series_file("Toy", tmp_path / "both.ts"))
    assert both.labels == ["a", "b", "b"]
    assert [s.tolist() for s in both.series] == [[[1, 2, 3]], [[4, 5, 6, 7]], [[8, 9, 10]]]


# ------------------------------------------------------------------------------ sensor_fewlabel


def test_sensor_fewlabel_peers_validation_split_and_choice(tmp_path: Path) -> None:
    """The aeon peers fit and predict; validation fits score the training split's recordings left out
    of the draw (never the test split); the recipe variant is chosen on validation accuracy only, the
    recipe's own winning ties; the summary holds test rows only."""
    pytest.importorskip("aeon")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import numpy as np
    import sensor_fewlabel as sf

    from wavssl.data.sensor import load_series

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 2, 40)), np.array(["a", "b", "c"] * 2)
    for method in sf.PEERS:
        assert set(sf.peer(method, 0).fit(x, y).predict(x)) <= {"a", "b", "c"}
    with pytest.raises(ValueError, match="unknown peer"):
        sf.peer("Rocket", 0)

    header = "@problemName Toy\n@univariate true\n@classLabel true a b\n@data\n"
    (tmp_path / "toy.ts").write_text(header + "".join(f"{i},{i + 1},{i + 2}:{'ab'[i % 2]}\n" for i in range(8)))
    train = load_series(tmp_path / "toy.ts")
    fit, held = sf.split_indices(train, sf.Job("Toy", "wavssl-pretrained", 1, 1000, "", "validation", "plain"))
    assert len(fit) == 2 and {train.labels[i] for i in fit} == {"a", "b"}
    assert held is not None and sorted([*fit, *held]) == list(range(8))
    assert sf.split_indices(train, sf.Job("Toy", "QUANT", 1, 0, ""))[1] is None
    with pytest.raises(ValueError, match="only wavssl methods"):
        sf.split_indices(train, sf.Job("Toy", "QUANT", 1, 0, "", "validation"))

    ds = "PickupGestureWiimoteZ"
    assert sf.candidates(ds)[0] == sf.recipe_variant(ds) == "segments4+stretch"
    rows = [{"dataset": ds, "method": "wavssl-pretrained", "split": "validation", "variant": v, "k": k,
             "accuracy": acc, "macro_f1": acc, "seconds": 1.0}
            for v, acc in (("plain", 0.6), ("segments4", 0.7), ("stretch", 0.5), ("segments4+stretch", 0.7))
            for k in (1, 2)]
    rows.append({"dataset": ds, "method": "wavssl-pretrained", "split": "test", "variant": "stretch", "k": 1,
                 "draw": 0, "accuracy": 1.0, "macro_f1": 1.0, "seconds": 1.0})
    chosen = sf.choose(rows, [ds], 1)[ds]["wavssl-pretrained"]
    assert chosen["chosen"] == "segments4+stretch" and "TRAINING split" in chosen["chosen_on"]
    assert chosen["validation_accuracy"]["plain"] == pytest.approx(0.6)
    summary = sf.summarise(rows)
    assert summary[ds]["1"]["wavssl-pretrained"]["accuracy"]["draws"] == [1.0]
