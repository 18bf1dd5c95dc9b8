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


# ----------------------------------------------------------------------------------- ssl_benefit


def _ssl_benefit():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import ssl_benefit

    return ssl_benefit


def test_ssl_benefit_rows_sweeps_and_choices() -> None:
    """Row selection, recipe sweeps and the dev-only choice of a recipe candidate."""
    sb = _ssl_benefit()
    every = sb.parse_rows(None)
    assert len(every) == 2 * len(sb.LABEL_SETS) and sb.Row("ru_1h", "pretrained") in every
    assert sb.Row("cs_10min", "scratch") in every
    assert sb.parse_rows("ru_10min, cs_1h:scratch,ru_10min:pretrained") == [
        sb.Row("ru_10min", "pretrained"), sb.Row("ru_10min", "scratch"), sb.Row("cs_1h", "scratch")]
    for bad, message in (("xx_1h", "unknown label set"), ("ru_1h:warm", "unknown init"), (",", "no rows")):
        with pytest.raises(ValueError, match=message):
            sb.parse_rows(bad)
    row = sb.Row("en_10min", "scratch")
    assert (row.language, row.train, row.dev, row.tests) == ("en", "en_train_10min", "en_dev", ("en_test",))
    assert all(sb.Row(n, "pretrained").dev == f"{sb.LABEL_SETS[n][0]}_dev" for n in sb.LABEL_SETS)
    assert sb.sweep_candidates([]) == [[]]
    combos = sb.sweep_candidates(["optim.lr=0.001,0.002", "optim.max_updates=500,1000,2000"])
    assert len(combos) == 6 and combos[0] == ["optim.lr=0.001", "optim.max_updates=500"]
    with pytest.raises(ValueError, match="section.key=v1"):
        sb.sweep_candidates(["optim.lr"])
    assert sb.run_name(row, []) == "ft_en_10min_scratch"
    assert sb.run_name(row, ["optim.lr=0.001"]) == "ft_en_10min_scratch__lr-0.001"
    cands = [{"best_dev_cer": 0.4, "run": "a"}, {"best_dev_cer": 0.3, "run": "b"}, {"best_dev_cer": 0.3, "run": "c"}]
    assert sb.choose_candidate(cands)["run"] == "b"  # lowest dev CER, first of a tie; test never consulted


@pytest.mark.e2e
def test_ssl_benefit_protocol_end_to_end(speech_dir: Path, tmp_path: Path) -> None:
    """One row on a synthetic stand-in corpus: pretraining, fine-tuning validated on dev, the LM
    setting chosen on dev, test decoded once, and a JSON line saying which split chose what."""
    import soundfile as sf

    sb = _ssl_benefit()
    rows = [line.split("\t") for line in (speech_dir / "transcripts.tsv").read_text().splitlines()[1:]]
    data = tmp_path / "data"
    data.mkdir()
    seconds = {p: sf.info(str(speech_dir / p)).duration for p, _ in rows}
    parts = {"en_train_10min": rows[:24], "en_dev": rows[24:32], "en_test": rows[32:]}
    for name, part in parts.items():
        (data / f"{name}.tsv").write_text("path\ttext\tduration\n" + "".join(
            f"{speech_dir / p}\t{t}\t{seconds[p]:.3f}\n" for p, t in part))
    (data / "unlabeled.tsv").write_text("path\tduration\n" + "".join(
        f"{speech_dir / p}\t{seconds[p]:.3f}\n" for p, _ in parts["en_train_10min"]))
    out = tmp_path / "results.jsonl"
    argv = ["--data", str(data), "--workdir", str(tmp_path / "runs"), "--rows", "en_10min:pretrained",
            "--pretrain-set", "optim.max_updates=2", "--pretrain-set", "optim.warmup_updates=1",
            "--pretrain-set", "data.num_workers=0", "--finetune-set", "optim.max_updates=4",
            "--finetune-set", "train.valid_every=2", "--finetune-set", "ctc.freeze_updates=1",
            "--sweep", "optim.lr=0.002,0.004", "--lm-weights", "0,0.5", "--word-bonuses", "0,1", "--beams", "2",
            "--threads", "2", "--out", str(out)]
    assert sb.main(argv) == 0
    (rec,) = [json.loads(x) for x in out.read_text().splitlines()]
    (run,) = rec["runs"]
    assert run["chosen_on"] == {"checkpoint": "en_dev", "recipe": "en_dev", "lm_weight": "en_dev",
                                "word_bonus": "en_dev", "beam": "en_dev"}
    assert [c["sets"][-1] for c in run["candidates"]] == ["optim.lr=0.002", "optim.lr=0.004"]
    best = min(run["candidates"], key=lambda c: c["best_dev_cer"])
    assert run["chosen"]["run"] == best["run"] and run["chosen"]["best_update"] in (2, 4)
    assert all(w is not None and w > 0 for w in run["finetune_wall_seconds"])
    assert run["lm"]["trained_on"] == "en_train_10min" and run["dev"]["split"] == "en_dev"
    assert len(run["dev"]["grid"]) == 1 + 2 and run["dev"]["grid"][0]["greedy"]
    assert run["dev"]["lm"]["cer"] == min(g["cer"] for g in run["dev"]["grid"])
    assert set(run["tests"]) == {"en_test"}
    for kind in ("greedy", "lm"):
        assert run["tests"]["en_test"][kind]["utterances"] == 8 and 0 <= run["tests"]["en_test"][kind]["cer"]
    assert rec["pretraining"]["updates"] == 2 and rec["pretraining"]["wall_seconds"] > 0
    # a second invocation reuses the pretraining run and the finished fine-tunes
    again = ["--pretrained", rec["pretraining"]["run"], *argv]
    assert sb.main(again) == 0
    rec2 = json.loads(out.read_text().splitlines()[-1])
    assert rec2["pretraining"]["reused"] and rec2["runs"][0]["tests"] == run["tests"]
    # --dev-only (recipe experiments): the same dev choices, no test split decoded
    assert sb.main([*again, "--dev-only"]) == 0
    rec3 = json.loads(out.read_text().splitlines()[-1])
    assert rec3["dev_only"] and rec3["runs"][0]["tests"] == {} and rec3["runs"][0]["dev"] == run["dev"] | {
        "decode_seconds": rec3["runs"][0]["dev"]["decode_seconds"]}


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
