"""The torch-free text side of the runtime (wavssl_onnx): normalisation, vocabulary, CTC decoding,
n-gram LM, WER/CER."""

from __future__ import annotations

import itertools
import json
import math
import random
import re
import subprocess
import sys
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from wavssl_onnx import (
    NGramLM,
    Vocabulary,
    beam_search,
    cer,
    ctc_log_likelihood,
    edit_ops,
    greedy_decode,
    greedy_decode_batch,
    normalize_text,
    normalize_with_report,
    wer,
)

EXPORT_DIR = Path(__file__).resolve().parents[1] / "export"


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of ``(T, V)`` logits, float32 like a model's output."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return (shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))).astype(np.float32)


def frames_from_probs(vocab: Vocabulary, frames: list[dict[str, float]]) -> np.ndarray:
    """``(T, V)`` log-probs from per-frame {token: prob}; the remaining mass (at least 1e-6 per
    token) is spread over the other tokens, then each frame is renormalised."""
    probs = np.zeros((len(frames), len(vocab)))
    for t, frame in enumerate(frames):
        rest = [i for i, tok in enumerate(vocab.tokens) if tok not in frame]
        probs[t, rest] = max(1.0 - sum(frame.values()), 1e-6 * len(rest)) / len(rest)
        for tok, p in frame.items():
            probs[t, vocab.tokens.index(tok)] = p
    return np.log(probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)


def one_hot_path(vocab: Vocabulary, path: str, confidence: float = 0.97) -> np.ndarray:
    """Log-probs whose best path is ``path`` (one char per frame, ``_`` = blank, ``|`` = delimiter)."""
    return frames_from_probs(vocab, [{"<blank>" if c == "_" else c: confidence} for c in path])


@pytest.fixture()
def abc_vocab() -> Vocabulary:
    return Vocabulary(["<blank>", "<unk>", "|", "a", "b", "c", "k", "t"])


# ----------------------------------------------------------------------------------- metrics


@pytest.mark.parametrize(
    ("ref", "hyp", "rate", "s", "d", "i"),
    [
        ("the cat sat", "the cat sat", 0.0, 0, 0, 0),
        ("the cat sat", "the bat sat", 1 / 3, 1, 0, 0),
        ("the cat sat", "the cat sat down", 1 / 3, 0, 0, 1),
        ("the cat sat", "the sat", 1 / 3, 0, 1, 0),
        ("the cat sat", "", 1.0, 0, 3, 0),
        ("привет как дела", "привет как дела", 0.0, 0, 0, 0),
        ("привет как дела", "привет так дела", 1 / 3, 1, 0, 0),
        ("привет как дела", "привет дела", 1 / 3, 0, 1, 0),
        ("příliš žluťoučký kůň", "příliš zlutoucky kůň", 1 / 3, 1, 0, 0),
    ],
)
def test_wer_hand_computed(ref: str, hyp: str, rate: float, s: int, d: int, i: int) -> None:
    result = wer([ref], [hyp])
    assert result.rate == pytest.approx(rate)
    assert (result.substitutions, result.deletions, result.insertions) == (s, d, i)
    assert result.edits == s + d + i and result.ref_units == len(ref.split())


def test_cer_counts_spaces_and_non_ascii() -> None:
    # "kůň" -> "kun": two substitutions; "žlutý  kůň " has 9 units (the space run becomes one space,
    # the trailing space goes).
    result = cer(["žlutý  kůň "], ["žlutý kun"])
    assert (result.ref_units, result.substitutions, result.edits) == (9, 2, 2)
    assert result.rate == pytest.approx(2 / 9)
    # Cyrillic: "ь" -> "ъ" is one substitution; an inner space is one insertion.
    result = cer(["день"], ["денъ"])
    assert (result.ref_units, result.substitutions, result.edits) == (4, 1, 1)
    assert cer(["день"], ["де нь"]).insertions == 1
    # A missing space between words is one deletion.
    assert cer(["ab cd"], ["abcd"]).deletions == 1


def test_empty_reference_conventions() -> None:
    only_empty = wer([""], ["extra words"])
    assert only_empty.rate == math.inf and only_empty.insertions == 2 and only_empty.ref_units == 0
    assert wer([""], [""]).rate == 0.0
    assert cer([""], [""]).rate == 0.0
    # Inside a corpus, an empty reference's insertions count against the other references' units.
    mixed = wer(["a b", ""], ["a b", "c"])
    assert (mixed.rate, mixed.edits, mixed.ref_units) == (0.5, 1, 2)


def test_corpus_level_aggregation() -> None:
    refs = ["the cat sat on the mat", "hello world", "один два три"]
    hyps = ["the cat sat on mat", "hello there world", "один три три"]
    result = wer(refs, hyps)
    # 1 deletion + 1 insertion + 1 substitution over 6 + 2 + 3 words (not the mean of the rates).
    assert (result.deletions, result.insertions, result.substitutions) == (1, 1, 1)
    assert result.ref_units == 11 and result.rate == pytest.approx(3 / 11)
    with pytest.raises(ValueError, match="same length"):
        wer(refs, hyps[:2])
    with pytest.raises(TypeError, match="refs"):
        wer("a b", "a b")


def test_edit_ops_levenshtein() -> None:
    counts = edit_ops(list("kitten"), list("sitting"))
    assert (counts.substitutions, counts.deletions, counts.insertions, counts.edits) == (2, 0, 1, 3)
    assert edit_ops([], [1, 2]).insertions == 2 and edit_ops([1, 2], []).deletions == 2
    rng = random.Random(0)
    for _ in range(20):  # against a plain-Python DP
        a = [rng.choice("abc") for _ in range(rng.randint(0, 8))]
        b = [rng.choice("abc") for _ in range(rng.randint(0, 8))]
        row = list(range(len(b) + 1))
        for i, x in enumerate(a, 1):
            prev, row[0] = row[0], i
            for j, y in enumerate(b, 1):
                prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
        assert edit_ops(a, b).edits == row[-1]


# ------------------------------------------------------------------------------ normalisation


def test_normalize_russian_stress_and_punctuation() -> None:
    text = "Здр+авствуйте, м+ир! Ёлка — «зелёная»... Обе́д в 12 часо́в."
    assert normalize_text(text, "ru") == "здравствуйте мир ёлка зелёная обед в 12 часов"
    # "й" and "ё" are letters, not stress marks: they survive the removal of U+0301.
    assert normalize_text("ЙОД ЁЖ", "ru") == "йод ёж"


def test_normalize_czech_diacritics_kept() -> None:
    text = "Příliš žluťoučký kůň úpěl ďábelské ódy!"
    assert normalize_text(text, "cs") == "příliš žluťoučký kůň úpěl ďábelské ódy"
    decomposed = "Pr\u030ci\u0301s\u030cer\u030ci"  # combining carons/acutes compose under NFC
    assert normalize_text(decomposed, "cs") == "příšeři"


def test_normalize_english_apostrophes() -> None:
    assert normalize_text("Don't say 'hello', it’s rock-n-roll.", "en") == "don't say hello it's rock n roll"
    assert normalize_text("The students' café", "en") == "the students cafe"


def test_normalize_report_and_languages() -> None:
    text, dropped = normalize_with_report("Привет, world! 5% €", "ru")  # "%" is punctuation (Po)
    assert text == "привет 5"
    assert dropped == Counter({"w": 1, "o": 1, "r": 1, "l": 1, "d": 1, "€": 1})
    text, dropped = normalize_with_report("Hello, мир 東京!", None)
    assert text == "hello мир 東京" and not dropped
    assert normalize_text("¿Qué tal, señor?", "es") == "qué tal señor"
    assert normalize_text("L'œil du garçon", "fr") == "l'œil du garçon"
    with pytest.raises(ValueError, match="'xx'"):
        normalize_text("abc", "xx")


def test_normalize_any_language_by_unicode_class() -> None:
    """Languages without rules of their own keep their letters, combining marks and digits."""
    # German: ß stays (str.lower, not casefold), umlauts compose under NFC, ẞ lowercases to ß
    assert normalize_text("Die STRAẞE: Grüße aus Köln, 2024!", "de") == "die straße grüße aus köln 2024"
    assert normalize_text("Gru\u0308\u00dfe, wie geht's?", "de") == "grüße wie geht's"
    # Polish letters, also in a regional tag
    assert normalize_text("Żółć, łąka; ĄĘŁŃ.", "pl") == "żółć łąka ąęłń"
    assert normalize_text("Żółć", "pl-PL") == "żółć"
    # Greek: tonos kept, final sigma from lowercasing, ano teleia and Greek question mark are punctuation
    assert normalize_text("ΟΔΟΣ Αθηνάς· Τι κάνεις;", "el") == "οδος αθηνάς τι κάνεις"
    # Hindi: vowel signs (Mc), virama and nukta (Mn) are kept; danda is punctuation; digits kept
    hindi = "नमस्ते, दुनिया। क़लम १२"
    out = normalize_text(hindi, "hi")
    assert out == unicodedata.normalize("NFC", "नमस्ते दुनिया क़लम १२")
    assert "\u094d" in out and "\u093c" in out and "\u0947" in out  # virama, nukta, vowel sign e
    # Arabic: letters and harakat kept, Arabic comma / question mark are punctuation, tatweel dropped
    text, dropped = normalize_with_report("مَرْحَبًا، كيف الحـــال؟ ٣", "ar")
    assert text == "مَرْحَبًا كيف الحال ٣" and dropped == Counter({"\u0640": 3})
    # Japanese / Chinese: characters kept, punctuation dropped without inventing word breaks,
    # full-width and half-width forms folded, spaces the transcript has kept
    assert normalize_text("今日は、いい天気ですね。", "ja") == "今日はいい天気ですね"
    assert normalize_text("ｶﾀｶﾅとＡＢＣ１２３！", "ja") == "カタカナとabc123"
    assert normalize_text("你好，世界！我 爱 你。", "zh-Hans-CN") == "你好世界我 爱 你"
    assert normalize_text("你好，世界", "yue") == "你好世界"
    # Turkish dotted and dotless i
    assert normalize_text("İSTANBUL'da IŞIK", "tr") == "istanbul'da ışık"


@pytest.mark.parametrize("language", [None, "de", "hi", "ar", "ja", "zh", "tr"])
def test_normalize_any_language_is_idempotent(language: str | None) -> None:
    """Dropping a character can bring a letter and a mark together, or two marks out of canonical
    order: the output is NFC, so normalising it again changes nothing."""
    rng = random.Random(0)
    chars = "aAİIı'’.,?- \u3000ｶﾞＡ１東、ـمَ+ßẞΣकि़्\u0301€"
    texts = ["ि\u0301ıA’\u0301?\u093c\u0301’", "東１ẞIَ?्", "a€\u0301"]
    texts += ["".join(rng.choice(chars) for _ in range(rng.randint(1, 12))) for _ in range(2000)]
    for text in texts:
        once = normalize_text(text, language)
        assert normalize_text(once, language) == once, (text, once)
        assert once == unicodedata.normalize("NFC", once)


def test_language_rules_unchanged_for_refined_languages() -> None:
    """A regional tag uses its language's rules; the generic rules differ from an alphabet's."""
    text = "Don't – the naïve café’s Ａ"
    assert normalize_text(text, "en-GB") == normalize_text(text, "en") == "don't the naive cafe's"
    assert normalize_text(text, "de") == "don't the naïve café's a"
    assert normalize_text("Здр+авствуйте", "ru-RU") == "здравствуйте"
    # "+" marks stress in ru only; elsewhere it is a symbol, dropped and counted
    assert normalize_with_report("Здр+авствуйте", "uk") == ("здравствуйте", Counter({"+": 1}))


@pytest.mark.parametrize("code", ["de", "pl", "pt-BR", "PT-br", "zh-Hant-TW", "es-419", "yue", "hsb",
                                  "sl-rozaj", "de-CH-1996", ""])
def test_check_language_accepts_bcp47(code: str) -> None:
    from wavssl_onnx.text import check_language

    primary = check_language(code)
    assert primary == (code.split("-")[0].lower() or None)
    assert normalize_text("Ab", code) == "ab"


@pytest.mark.parametrize(("code", "message"), [
    ("???", "not a language code"), ("english", "not a language code"), ("d", "not a language code"),
    ("pt_BR", "joined with '-': 'pt-BR'"), ("de-", "not a language code"), (" de", "not a language code"),
    ("xx", "not an ISO 639-1 code"), ("de-Latn-Latn", "not a language code"),
])
def test_check_language_refuses_nonsense(code: str, message: str) -> None:
    from wavssl_onnx.text import check_language

    with pytest.raises(ValueError, match=re.escape(f"language {code!r}")) as err:
        check_language(code)
    assert message in str(err.value)
    with pytest.raises(ValueError, match=re.escape(message)):
        normalize_text("abc", code)


def test_config_validates_language_like_the_runtime() -> None:
    from wavssl.config import ConfigError, merge, parse_set, preset

    cfg = merge(preset("tiny"), parse_set(['ctc.language="de"'])).validate()
    assert cfg.ctc.language == "de"
    assert merge(preset("tiny"), parse_set(['ctc.language="pt-BR"'])).validate().ctc.language == "pt-BR"
    with pytest.raises(ConfigError, match=r"ctc\.language: language '\?\?\?' is not a language code"):
        merge(preset("tiny"), parse_set(['ctc.language="???"'])).validate()


def test_new_language_vocabulary_and_decoding_round_trip() -> None:
    """German and Hindi transcripts through the CTC text path: normalise, build the vocabulary,
    encode, decode a best path; combining marks are tokens of their own and come back in place."""
    for language, lines in (("de", ["Grüße aus Köln!", "Die Straße."]), ("hi", ["नमस्ते दुनिया।", "क़लम"])):
        texts = [normalize_text(line, language) for line in lines]
        vocab = Vocabulary.build(texts)
        assert "<unk>" not in vocab.decode(vocab.encode(" ".join(texts)))
        for text in texts:
            ids = vocab.encode(text)
            assert vocab.unk_id not in ids and vocab.decode(ids) == text
            path = "_".join("|" if i == vocab.delimiter_id else vocab.tokens[i] for i in ids)
            assert greedy_decode(one_hot_path(vocab, path), vocab).text == text


# --------------------------------------------------------------------------------- vocabulary


def test_vocabulary_build_encode_decode() -> None:
    vocab = Vocabulary.build(["привет мир", "мир"])
    assert vocab.tokens[:3] == ["<blank>", "<unk>", "|"] and vocab.tokens[3:] == sorted(set("приветм"))
    assert Vocabulary.build(["мир", "привет мир"]) == vocab  # order of texts does not matter
    assert (vocab.blank_id, vocab.unk_id, vocab.delimiter_id, len(vocab)) == (0, 1, 2, 10)
    ids = vocab.encode("  мир  привет ")
    assert ids[3] == vocab.delimiter_id and vocab.decode(ids) == "мир привет"
    ids, unknown = vocab.encode_with_unknown("мир ёж")
    assert unknown == Counter({"ё": 1, "ж": 1}) and ids[-2:] == [vocab.unk_id, vocab.unk_id]
    assert vocab.decode(ids) == "мир <unk><unk>"
    rare = Vocabulary.build(["aab"], min_count=2)
    assert rare.tokens == ["<blank>", "<unk>", "|", "a"] and rare.encode("b") == [rare.unk_id]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        vocab.decode([99])


def test_vocabulary_save_load_and_errors(tmp_path: Path) -> None:
    vocab = Vocabulary.build(["žluťoučký kůň"])
    written = vocab.save(tmp_path)
    assert written == tmp_path / "vocab.json"
    assert json.loads(written.read_text(encoding="utf-8"))["tokens"] == vocab.tokens
    assert Vocabulary.load(tmp_path) == vocab == Vocabulary.load(written)
    bad_json = tmp_path / "broken.json"
    bad_json.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.json"):
        Vocabulary.load(bad_json)
    no_blank = tmp_path / "no_blank.json"
    no_blank.write_text(json.dumps({"tokens": ["a", "<unk>", "|"]}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"no_blank\.json.*blank"):
        Vocabulary.load(no_blank)
    with pytest.raises(ValueError, match="unique"):
        Vocabulary(["<blank>", "<unk>", "|", "a", "a"])


# ----------------------------------------------------------------------------------- decoding


def test_greedy_decode_repeats_blanks_delimiters_and_times(abc_vocab: Vocabulary) -> None:
    # a a b b _ b a | | _ a a  ->  "abba a": the blank separates the two b's, repeats collapse.
    log_probs = one_hot_path(abc_vocab, "aabb_ba||_aa")
    hyp = greedy_decode(log_probs, abc_vocab, frame_shift=0.02)
    assert hyp.text == "abba a"
    assert hyp.token_ids == abc_vocab.encode("abba a")
    assert [w.word for w in hyp.words] == ["abba", "a"]
    assert hyp.words[0].start == pytest.approx(0.0) and hyp.words[0].end == pytest.approx(0.14)
    assert hyp.words[1].start == pytest.approx(0.20) and hyp.words[1].end == pytest.approx(0.24)
    assert hyp.score == pytest.approx(12 * math.log(0.97), rel=1e-5)
    empty = greedy_decode(np.zeros((0, len(abc_vocab)), dtype=np.float32), abc_vocab)
    assert empty.text == "" and empty.words == []
    with pytest.raises(ValueError, match="log_probs"):
        greedy_decode(np.zeros((4, 3), dtype=np.float32), abc_vocab)


def test_greedy_decode_batch_respects_lengths(abc_vocab: Vocabulary) -> None:
    first, second = one_hot_path(abc_vocab, "cat__"), one_hot_path(abc_vocab, "tab|ab")
    batch = np.stack([np.concatenate([first, second[:1]]), second])
    hyps = greedy_decode_batch(batch, np.array([5, 6]), abc_vocab)
    assert [h.text for h in hyps] == ["cat", "tab ab"]
    with pytest.raises(ValueError, match="lengths"):
        greedy_decode_batch(batch, np.array([7, 6]), abc_vocab)


def test_ctc_log_likelihood_and_beam_match_brute_force() -> None:
    vocab = Vocabulary(["<blank>", "<unk>", "|", "a"])
    log_probs = log_softmax(np.random.default_rng(3).normal(size=(4, 4)) * 2.0)
    exact: dict[tuple[int, ...], float] = defaultdict(float)
    for path in itertools.product(range(4), repeat=4):
        labels = tuple(k for k, _ in itertools.groupby(path) if k != 0)
        exact[labels] += math.exp(sum(float(log_probs[t, k]) for t, k in enumerate(path)))
    for labels, prob in exact.items():
        assert ctc_log_likelihood(log_probs, list(labels)) == pytest.approx(math.log(prob), abs=1e-9)
    assert ctc_log_likelihood(log_probs, [3, 3, 3]) == -math.inf  # needs 5 frames
    # With a beam wide enough to keep everything, every score is the exact labelling probability.
    hyps = beam_search(log_probs, vocab, beam=1000, prune_logp=-math.inf)
    for hyp in hyps:
        assert hyp.score == pytest.approx(math.log(exact[tuple(hyp.token_ids)]), abs=1e-9)
    best_labels = max(exact, key=exact.__getitem__)
    assert hyps[0].token_ids == list(best_labels)
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
    no_frames = beam_search(np.zeros((0, 4), dtype=np.float32), vocab)
    assert [(h.text, h.score) for h in no_frames] == [("", 0.0)]


def test_beam_at_least_as_likely_as_greedy_on_peaky_outputs(abc_vocab: Vocabulary) -> None:
    gains = []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        peaks = rng.choice(len(abc_vocab), size=30, p=[0.5, 0.0, 0.1] + [0.08] * 5)
        logits = rng.normal(size=(30, len(abc_vocab)))
        logits[np.arange(30), peaks] += 3.0
        log_probs = log_softmax(logits)
        greedy = greedy_decode(log_probs, abc_vocab)
        best = beam_search(log_probs, abc_vocab)[0]
        gains.append(ctc_log_likelihood(log_probs, best.token_ids) - ctc_log_likelihood(log_probs, greedy.token_ids))
    assert min(gains) >= -1e-6
    assert max(gains) > 1e-3  # on some cases the beam finds a strictly more likely labelling


def test_beam_finds_labelling_that_greedy_misses(abc_vocab: Vocabulary) -> None:
    # Each frame: blank 0.4, a 0.35, b 0.25. Best path "_ _" gives "" (p = 0.16), but "a" sums three
    # paths: aa + a_ + _a = 0.1225 + 0.14 + 0.14 = 0.4025.
    log_probs = frames_from_probs(abc_vocab, [{"<blank>": 0.4, "a": 0.35, "b": 0.25}] * 2)
    assert greedy_decode(log_probs, abc_vocab).text == ""
    best = beam_search(log_probs, abc_vocab, beam=4)[0]
    assert best.text == "a" and best.score == pytest.approx(math.log(0.4025), abs=1e-4)


def test_beam_word_times_match_greedy_on_confident_output(abc_vocab: Vocabulary) -> None:
    log_probs = one_hot_path(abc_vocab, "_cc_a_tt__|_bb_a_k")
    greedy = greedy_decode(log_probs, abc_vocab, frame_shift=0.04)
    best = beam_search(log_probs, abc_vocab, beam=8, frame_shift=0.04)[0]
    assert best.text == greedy.text == "cat bak"
    assert best.words == greedy.words
    # "cat": c at frames 1-2 ... t at frames 6-7, so 1 * 0.04 s to the end of frame 7, 8 * 0.04 s.
    assert best.words[0].start == pytest.approx(0.04) and best.words[0].end == pytest.approx(0.32)


@pytest.mark.parametrize("level", ["char", "word"])
def test_lm_flips_acoustically_ambiguous_hypothesis(abc_vocab: Vocabulary, level: str) -> None:
    # "kat" is slightly more likely acoustically than "cat"; an LM that has seen "cat" flips them.
    frames = [{"k": 0.5, "c": 0.45}, {"a": 0.95}, {"t": 0.95}, {"<blank>": 0.95}]
    log_probs = frames_from_probs(abc_vocab, frames)
    assert beam_search(log_probs, abc_vocab)[0].text == "kat"
    lm = NGramLM.from_lines(["a cat", "cat", "the cat", "a bat", "tac"], order=3, level=level)
    fused = beam_search(log_probs, abc_vocab, lm=lm, lm_weight=1.0)
    assert fused[0].text == "cat" and fused[0].words[0].word == "cat"
    assert fused[0].score > next(h.score for h in fused if h.text == "kat")


def test_decoding_chosen_on_dev_then_applied(abc_vocab: Vocabulary) -> None:
    """The dev sweep picks the LM setting that fixes dev, prefers the simpler setting on a tie,
    tries greedy only without an LM, and the chosen setting decodes another split the same way."""
    from wavssl_onnx.selection import Setting, choose_decoding_on_dev, decode_texts, grid, score

    ambiguous = frames_from_probs(abc_vocab, [{"k": 0.5, "c": 0.45}, {"a": 0.95}, {"t": 0.95}, {"<blank>": 0.95}])
    clear = one_hot_path(abc_vocab, "b_a_t")
    lm = NGramLM.from_lines(["a cat", "cat", "the cat", "a bat", "tac"], order=3, level="char")
    settings = grid([0.0, 0.5, 1.0, 2.0], word_bonuses=[0.0, 1.0], beams=[4])
    assert settings[0] == Setting() and len(settings) == 1 + 3 * 2
    choice = choose_decoding_on_dev([ambiguous, clear], ["cat", "bat"], abc_vocab, lm, settings, language="en")
    assert choice.dev[Setting()].cer == pytest.approx(1 / 6)  # greedy says "kat": 1 of 6 characters
    assert choice.best_scores.cer == 0.0 and choice.best.lm_weight > 0
    fixing = [s for s, sc in choice.dev.items() if sc.cer == 0.0]
    assert choice.best == min(fixing, key=lambda s: (s.lm_weight, s.word_bonus))  # simplest of the ties
    assert len(choice.grid()) == len(settings) and choice.grid()[0]["greedy"] is True
    hyps = decode_texts([ambiguous], abc_vocab, choice.best, lm, language="en")
    assert hyps == ["cat"] and score(["cat"], hyps).cer == 0.0
    no_lm = choose_decoding_on_dev([ambiguous], ["cat"], abc_vocab, None, settings, language="en")
    assert list(no_lm.dev) == [Setting()] and no_lm.best.greedy
    with pytest.raises(ValueError, match="2 references"):
        choose_decoding_on_dev([ambiguous], ["cat", "bat"], abc_vocab, lm, settings, language="en")
    with pytest.raises(ValueError, match="empty decoding grid"):
        grid([])


# ----------------------------------------------------------------------------------------- LM


LM_TEXT = [
    "the cat sat on the mat",
    "a cat and a hat",
    "the dog sat on the log",
    "a dog and a cat",
    "the hat is on the cat",
]


@pytest.mark.parametrize(("level", "order"), [("char", 1), ("char", 3), ("char", 5), ("word", 2), ("word", 3)])
def test_lm_probabilities_sum_to_one(level: str, order: int) -> None:
    lm = NGramLM.from_lines(LM_TEXT, order=order, level=level)
    histories = [(), ("t",), ("t", "h", "e", " "), ("q", "z"), ("the",), ("the", "cat"), ("zebra", "on")]
    for history in histories:
        total = sum(math.exp(lm.score(history, token)) for token in lm.vocab)
        assert total == pytest.approx(1.0, abs=1e-9)
    assert lm.score(("the",), "never-seen") == lm.score(("the",), "<unk>") > -math.inf


def test_lm_perplexity_training_below_shuffled() -> None:
    lm = NGramLM.from_lines(LM_TEXT, order=3, level="char")
    rng = random.Random(0)
    shuffled = ["".join(rng.sample(line, len(line))) for line in LM_TEXT]
    assert lm.perplexity(LM_TEXT) < 0.5 * lm.perplexity(shuffled)
    assert lm.sentence_logprob("the cat") > lm.sentence_logprob("tca eht")


def test_lm_save_load_round_trip(tmp_path: Path) -> None:
    text_file = tmp_path / "corpus.txt"
    text_file.write_text("\n".join([*LM_TEXT, "", "žluťoučký kůň"]) + "\n", encoding="utf-8")
    lm = NGramLM.from_text_file(text_file, order=3, level="word")
    lm.save(tmp_path / "lm.json")
    loaded = NGramLM.load(tmp_path / "lm.json")
    assert loaded == lm
    assert loaded.score(("the",), "cat") == lm.score(("the",), "cat")
    assert loaded.perplexity(["žluťoučký kůň"]) == pytest.approx(lm.perplexity(["žluťoučký kůň"]))
    (tmp_path / "bad.json").write_text(json.dumps({"format": "something else"}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.json"):
        NGramLM.load(tmp_path / "bad.json")


# ------------------------------------------------------------------------------- torch freedom


def test_runtime_never_imports_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None; "
        "import wavssl_onnx, wavssl_onnx.decoding, wavssl_onnx.lm, wavssl_onnx.metrics, "
        "wavssl_onnx.text, wavssl_onnx.vocab"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    offenders = [p for p in EXPORT_DIR.rglob("*.py") if "import torch" in p.read_text(encoding="utf-8")]
    assert offenders == []
