"""recipes/debian_speech/prepare.py: parsers, split helpers, and an end-to-end run on fake .debs."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SCRIPT = Path(__file__).resolve().parents[1] / "recipes" / "debian_speech" / "prepare.py"
spec = importlib.util.spec_from_file_location("debian_speech_prepare", SCRIPT)
prep = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = prep
spec.loader.exec_module(prep)


# ----------------------------------------------------------------------------- parsers

def test_parse_txt_done_data() -> None:
    text = ('( ru_0001 "Корреспондент, американской газеты, - она читала." )\n'
            '( ru_0002 "Она завела, прядь волнистых вол+ос за ухо." )\n'
            '\n'
            '( ru_0003 "Он сказал: \\"нет\\"." )\n'
            'garbage line\n')
    entries, bad = prep.parse_txt_done_data(text)
    assert entries == {"ru_0001": "Корреспондент, американской газеты, - она читала.",
                       "ru_0002": "Она завела, прядь волнистых вол+ос за ухо.",
                       "ru_0003": 'Он сказал: "нет".'}
    assert len(bad) == 1 and "line 5" in bad[0]
    assert prep.normalize_text(entries["ru_0002"], "ru") == "она завела прядь волнистых волос за ухо"


def test_parse_fillets_dialogs() -> None:
    text = ('\ndialogId("vit-hs-vitejteA", "font_statue", "Welcome to the city.")\n'
            'dialogStr("Vítejte v nejkrásnějším městě pod sluncem.")\n\n\n'
            'dialogId("laser", "", "")\n\n'
            'dialogId("kd-uvod", "font_white", "Good \\"morning\\".")\n'
            'dialogStr("Dobré ráno, \\"rybky\\".")\n')
    got = prep.parse_fillets_dialogs(text)
    assert got == [("vit-hs-vitejteA", "font_statue", "Welcome to the city.",
                    "Vítejte v nejkrásnějším městě pod sluncem."),
                   ("laser", "", "", None),
                   ("kd-uvod", "font_white", 'Good "morning".', 'Dobré ráno, "rybky".')]


def test_parse_asterisk_sounds() -> None:
    text = ("\ufeff; Core Asterisk Sounds in Russian\n\n"
            "activated: Активировано\n"
            "beep: [this is a simple beep tone]\n"
            "conf-adminmenu: conf-adminmenu: Нажмите 1 чтобы отключить микрофон\n"
            "digits/1: один\n"
            "is:\n"
            "letters/at: at [@]\n")
    got = prep.parse_asterisk_sounds(text)
    assert got == {"activated": "Активировано", "beep": "[this is a simple beep tone]",
                   "conf-adminmenu": "Нажмите 1 чтобы отключить микрофон", "digits/1": "один",
                   "is": "", "letters/at": "at [@]"}
    assert prep.is_non_speech(got["beep"]) and not prep.is_non_speech(got["letters/at"])
    assert prep.is_non_speech("<beep decending>") and not prep.is_non_speech("[a] b [c]")


def test_label_problem() -> None:
    assert prep.label_problem(None, "", "en") == "audio without transcript"
    assert prep.label_problem("?!", "", "en") == "empty transcript"
    assert prep.label_problem("press 1", "press 1", "en") == "digits or symbols in transcript"
    assert prep.label_problem("press * now", "press now", "en") == "digits or symbols in transcript"
    assert prep.label_problem("вол+ос", "волос", "ru") is None
    assert prep.label_problem("a+b", "a b", "cs") == "digits or symbols in transcript"


# ----------------------------------------------------------------------------- split helpers

def test_rate_outliers() -> None:
    flags, band = prep.rate_outliers([8, 9, 10, 9, 8.5, 9.5, 40, 0.5], k=3.0)
    assert flags == [False] * 6 + [True, True]
    assert band["low"] < 8 and band["high"] > 10
    assert prep.rate_outliers([5.0] * 4)[0] == [False] * 4  # MAD 0 does not flag everything


def test_hold_out_keeps_groups_and_sentences_apart() -> None:
    items = [(f"u{i}", f"level{i % 5}", f"text{i % 7}", 10.0) for i in range(40)]
    held, rest, removed = prep.hold_out(items, lambda u: u[1], lambda u: u[2], lambda u: u[3], 75.0, seed=1)
    assert {u[1] for u in held}.isdisjoint({u[1] for u in rest})
    assert {u[2] for u in held}.isdisjoint({u[2] for u in rest})
    assert sum(u[3] for u in held) >= 75.0
    assert len(held) + len(rest) + len(removed) == 40
    again = prep.hold_out(items, lambda u: u[1], lambda u: u[2], lambda u: u[3], 75.0, seed=1)
    assert again == (held, rest, removed)


def test_nested_subsets_near_target() -> None:
    rng = np.random.default_rng(0)
    items = [(i, float(d)) for i, d in enumerate(rng.uniform(1.0, 15.0, 800))]
    big, small = prep.nested_subsets(items, lambda u: u[1], (3600.0, 600.0), seed=3)
    assert set(small) <= set(big)
    assert abs(sum(u[1] for u in big) - 3600) < 0.05 * 3600
    assert abs(sum(u[1] for u in small) - 600) < 0.05 * 600
    (short,) = prep.nested_subsets(items[:10], lambda u: u[1], (600.0,), seed=3)
    assert len(short) == 10  # not enough data: all of it


def test_pack() -> None:
    assert prep.pack([5.0, 5.0, 4.0, 20.0, 1.0, 1.0], max_seconds=15.0, gap=0.2) == [[0, 1, 2], [3], [4, 5]]
    assert prep.pack([]) == []


def test_spell_lone_digits() -> None:
    assert prep.spell_lone_digits("Please press 1 to mute, 2 to lock.", "en") == "Please press one to mute, two to lock."
    assert prep.spell_lone_digits("folder 5", "en") == "folder five"
    for text in ("a 28.8 modem", "3D audio", "press 0 for help", "H.323", "dial 500", "IAX2"):
        assert prep.spell_lone_digits(text, "en") is None, text
    assert prep.spell_lone_digits("Нажмите 1", "ru") is None  # no digit words for the language
    assert prep.oov_rate(["a b c d"], ["a b", "c"]) == 0.25 and prep.oov_rate([], ["a"]) == 0.0


def _words(n: int) -> str:
    """A unique lower-case word for ``n`` (letters only: digits would drop the label)."""
    out = ""
    while True:
        out = "abcdefghij"[n % 10] + out
        n //= 10
        if not n:
            return "x" + out


def _clip(source: str, lang: str, key: str, group: str, text: str | None, seconds: float) -> prep.Clip:
    return prep.Clip(source, key, f"pkg:{key}", f"audio/{source}/{key}.flac", lang, "spk", group, text, seconds,
                     16000, key)


def test_dev_splits_leave_train_and_test_as_they_were() -> None:
    """cs_dev and en_dev come from clips neither train nor test took (their membership is the
    draw without dev splits), share no text with them, and stay out of the unlabelled pool."""
    cs = [_clip("fillets-cs", "cs", f"l{lv}/{i}", f"l{lv}", f"věta {_words(lv)} {_words(i)} ryba", 10.0)
          for lv in range(50) for i in range(12)]  # 100 min in 50 levels
    en_plain = [_clip("asterisk-en", "en", f"p{i}", "", f"prompt {_words(i)} please", 2.0) for i in range(330)]
    en_digits = [_clip("asterisk-en", "en", f"vm-{i}", "", f"Press {d} for {_words(i)}.", 2.0)
                 for i, d in enumerate("123456789")]
    en_digits.append(_clip("asterisk-en", "en", "modem", "", "a 28.8 modem", 2.0))  # stays unlabelled
    clips = cs + en_plain + en_digits

    report = {"label_dropped": prep.defaultdict(prep.Counter), "cps_filter": {}, "dev_relabelled": {}}
    splits = prep.make_splits(clips, report)
    assert report["dev_relabelled"] == {"asterisk-en": 9}
    keys = {n: {u.clip.key for u in v} for n, v in splits.items()}
    texts = {n: {u.norm for u in v} for n, v in splits.items()}
    # the train/test draws are the ones prepare.py made before dev splits existed (same seeds)
    usable = [prep.Labeled(c, prep.normalize_text(c.text, "cs")) for c in cs]
    test, rest, _ = prep.hold_out(usable, lambda u: u.clip.group, lambda u: u.norm, lambda u: u.clip.duration,
                                  1200.0, prep.SEED)
    train_1h, _ = prep.nested_subsets(rest, lambda u: u.clip.duration, (3600.0, 600.0), prep.SEED)
    assert keys["cs_test"] == {u.clip.key for u in test} and keys["cs_train_1h"] == {u.clip.key for u in train_1h}
    for lang, train in (("cs", "cs_train_1h"), ("en", "en_train_10min")):
        dev, test_name = f"{lang}_dev", f"{lang}_test"
        assert splits[dev], dev
        assert keys[dev].isdisjoint(keys[train] | keys[test_name])
        assert texts[dev].isdisjoint(texts[train] | texts[test_name])
    assert 500 <= sum(u.clip.duration for u in splits["cs_dev"]) <= 600
    assert {u.clip.group for u in splits["cs_dev"]}.isdisjoint({u.clip.group for u in splits["cs_test"]})
    assert {f"vm-{i}" for i in range(9)} <= keys["en_dev"] and "modem" not in keys["en_dev"]
    assert "press one for " + _words(0) in texts["en_dev"]
    assert list(splits) == list(prep.SPLIT_ORDER)
    unlabeled = {c.key for c in prep.unlabeled_clips(clips, splits, {"unlabeled_duplicates": prep.Counter()})}
    assert unlabeled.isdisjoint(keys["cs_dev"] | keys["en_dev"] | keys["cs_test"] | keys["en_test"])
    assert "modem" in unlabeled and keys["cs_train_1h"] <= unlabeled


# ----------------------------------------------------------------------------- end to end

RU = {"ru_0001": "Она завела прядь волнистых вол+ос за ухо.",
      "ru_0002": "Со спокойным мужеством ожидал всего.",
      "ru_0003": "Окна многоэтажных домов казались нежилыми.",
      "ru_0004": "Окна многоэтажных домов казались нежилыми!",  # same sentence, other take
      "ru_0005": "В это время остановился рослый человек.",
      "ru_0006": "Гусев озирался и повторял шёпотом.",
      "ru_0007": "Этот файл испорчен.",
      "ru_0008": "У этой строки нет звука."}


def _tone(seconds: float, rate: int, seed: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * (150 + 40 * seed) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def _deb(tmp: Path, name: str, files: dict[str, bytes | tuple[np.ndarray, int, str]], debs: Path) -> None:
    root = tmp / "build" / name
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: 1.0-1\nArchitecture: all\nMaintainer: Test <t@example.org>\n"
        f"Description: fake {name}\n")
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            x, rate, fmt = content
            sf.write(path, x, rate, format=fmt)
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-b", str(root), str(debs / f"{name}_1.0-1_all.deb")],
                   check=True, capture_output=True)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_prepare_end_to_end(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    debs = tmp_path / "debs"
    debs.mkdir()
    voice = "usr/share/festival/voices/russian/msu_ru_nsh_clunits"
    fest: dict[str, bytes | tuple[np.ndarray, int, str]] = {
        f"{voice}/etc/txt.done.data": "".join(f'( {k} "{v}" )\n' for k, v in RU.items()).encode()}
    for i, key in enumerate(sorted(RU)[:6]):
        fest[f"{voice}/wav/{key}.wav"] = (_tone(0.25 * len(RU[key]) / 8.0, 16000, i), 16000, "WAV")
    fest[f"{voice}/wav/ru_0007.wav"] = b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk"  # corrupt
    fest[f"{voice}/wav/ru_0009.wav"] = (_tone(2.0, 16000, 9), 16000, "WAV")  # no transcript
    _deb(tmp_path, "festvox-ru", fest, debs)

    sounds = "usr/share/asterisk/sounds/ru_RU_f_Test"
    _deb(tmp_path, "asterisk-core-sounds-ru-wav", {
        f"{sounds}/activated.wav": (_tone(1.0, 8000, 1), 8000, "WAV"),
        f"{sounds}/cancelled.wav": (_tone(0.8, 8000, 2), 8000, "WAV"),
        f"{sounds}/digits/1.wav": (_tone(0.5, 8000, 3), 8000, "WAV"),
        f"{sounds}/press-1.wav": (_tone(0.9, 8000, 5), 8000, "WAV"),
        f"{sounds}/beep.wav": (_tone(0.3, 8000, 4), 8000, "WAV"),
        f"{sounds}/silence/1.wav": (np.zeros(8000), 8000, "WAV")}, debs)
    _deb(tmp_path, "asterisk-core-sounds-ru", {
        "usr/share/doc/asterisk-core-sounds-ru/core-sounds-ru.txt.gz": gzip.compress(
            "; Core Asterisk Sounds in Russian\nactivated: Активировано\ncancelled: Отменено.\n"
            "digits/1: один\npress-1: Нажмите 1.\nbeep: [beep]\n".encode())}, debs)
    _deb(tmp_path, "kajongg", {f"usr/share/kajongg/voices/male1/{n}.ogg": (_tone(0.6, 44100, n, channels=2), 44100, "OGG")
                               for n in range(3)}, debs)

    (debs / "gcin-voice_1.0-1_all.deb").write_bytes(b"!<arch>\nnot really a deb")  # corrupt package

    out = tmp_path / "out"
    assert prep.main(["--out", str(out), "--debs", str(debs), "--jobs", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))

    # missing packages are logged and skipped
    assert "fillets-ng-data-cs" in summary["packages"]["missing"]
    assert "fillets-ng-data-cs" in caplog.text
    assert "gcin-voice" in summary["packages"]["sources_skipped"] and "cannot unpack" in caplog.text
    # the corrupt WAV is skipped, counted and named; so is the transcript without audio
    assert summary["skipped"]["festvox-ru"] == {"unreadable audio": 1, "transcript without audio": 1}
    assert any("ru_0007.wav" in e for e in summary["skipped_examples"]["festvox-ru"]["unreadable audio"])
    assert summary["label_dropped"]["festvox-ru"]["audio without transcript"] == 1
    assert summary["skipped"]["asterisk-ru"]["non-speech"] == 2  # beep and silence/

    split = {n: _rows(out / f"{n}.tsv") for n in
             ("ru_test", "ru_dev", "ru_train_1h", "ru_train_10min", "ru_test_otherspk", "cs_test", "en_test")}
    for name in ("cs_dev", "en_dev"):  # no source: the file exists, header only
        assert (out / f"{name}.tsv").read_text() == "path\ttext\tduration\n"
    assert list(split["ru_test"][0]) == ["path", "text", "duration"]
    assert split["cs_test"] == [] and (out / "cs_test.tsv").read_text().startswith("path\ttext\tduration")
    ru = [r for n in ("ru_test", "ru_dev", "ru_train_1h") for r in split[n]]
    assert sorted(Path(r["path"]).stem for r in ru) == [f"ru_000{i}" for i in range(1, 7)]
    test_texts = {r["text"] for r in split["ru_test"]}
    assert test_texts and split["ru_dev"] and split["ru_train_1h"]
    assert test_texts.isdisjoint({r["text"] for r in split["ru_train_1h"] + split["ru_dev"]})
    assert {r["path"] for r in split["ru_train_10min"]} <= {r["path"] for r in split["ru_train_1h"]}
    assert "волос" in {w for r in ru for w in r["text"].split()}  # stress mark removed
    assert sorted(r["text"] for r in split["ru_test_otherspk"]) == ["активировано", "один", "отменено"]
    assert summary["splits"]["ru_test_otherspk"]["sample_rates_of_origin"] == {"8000": 3}
    assert summary["label_dropped"]["asterisk-ru"] == {"digits or symbols in transcript": 1}

    unlabeled = _rows(out / "unlabeled.tsv")
    assert list(unlabeled[0]) == ["path", "duration"]
    # train clips and the clip without transcript, never test or dev ones
    n_train = len(split["ru_train_1h"])
    assert summary["splits"]["unlabeled"]["sources"] == {"festvox-ru": n_train + 1, "kajongg": 3}
    assert summary["splits"]["unlabeled"]["count"] == 2  # festvox chunk + kajongg chunk
    for r in ru + split["ru_test_otherspk"] + unlabeled:
        info = sf.info(str(out / r["path"]))
        assert info.samplerate == 16000 and info.channels == 1
        assert abs(info.duration - float(r["duration"])) < 1e-3
    festvox = next(r for r in unlabeled if "festvox-ru" in r["path"])
    train_seconds = sum(float(r["duration"]) for r in split["ru_train_1h"])
    assert float(festvox["duration"]) == pytest.approx(train_seconds + 2.0 + 0.2 * n_train, abs=5e-3)
    kajongg = next(r for r in unlabeled if "kajongg" in r["path"])
    assert float(kajongg["duration"]) == pytest.approx(3 * 0.6 + 2 * 0.2, abs=2e-3)

    # a second run reuses the converted audio and writes the same manifests
    stamp = (out / ru[0]["path"]).stat().st_mtime_ns
    before = {p.name: p.read_text(encoding="utf-8") for p in out.glob("*.tsv")}
    assert prep.main(["--out", str(out), "--debs", str(debs), "--jobs", "1"]) == 0
    assert (out / ru[0]["path"]).stat().st_mtime_ns == stamp
    assert {p.name: p.read_text(encoding="utf-8") for p in out.glob("*.tsv")} == before
