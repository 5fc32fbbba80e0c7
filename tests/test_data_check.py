"""gradwise data: duplicates, near duplicates, split leakage, contamination and label conflicts are found with
the right counts in planted corpora (expected counts computed independently here), clean corpora report
none, --dedupe removes them deterministically, and bad input gets one-line errors."""

from __future__ import annotations

import itertools
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest

from gradwise.cli.commands import main
from gradwise.data import prepare_corpus
from gradwise.data.labelled import read_labelled, stratified_split
from gradwise.data.quality.textunits import stream_paragraphs
from gradwise.tools.data_stats import check_data, data_stats
from gradwise.training.run import train

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
WORDS = [f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "po", "ri", "su", "te", "vo", "za")
         for b in ("bar", "cen", "dul", "fim", "gor", "hap", "jek", "lun", "mor", "nix", "pel", "qua")]


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def near_copy(text: str, rng: random.Random) -> str:
    """One word of ~40 replaced: Jaccard of 3-word shingles about 0.86, well above 0.8."""
    words = text.split()
    words[len(words) // 2] = "zzqx"
    return " ".join(words)


# ---------------------------------------------------------------- language-model corpora

def lm_corpus(tmp_path: Path, plant: bool) -> tuple[Path, dict]:
    """200 random paragraphs; with ``plant``: 3 exact and 2 near copies of train paragraphs in the test
    region, and one 20-word run of a train paragraph inside a validation paragraph.

    With a char tokenizer and one chunk, token i is character i: train is the first 90% of the text (plus the
    end-of-text token), so where each planted paragraph lands is known from its character offset.
    """
    rng = random.Random(7)
    paragraphs = [sentence(rng, 40) for _ in range(200)]
    planted = {"exact_test": 0, "near_test": 0, "run_val_words": []}
    text = "\n\n".join(paragraphs) + "\n"
    if plant:
        n_est = len(text)
        # Replace paragraphs that lie well inside the test region (last 5%) and the validation region.
        starts = np.cumsum([0] + [len(p) + 2 for p in paragraphs[:-1]])
        in_test = [i for i, s in enumerate(starts) if s > 0.955 * n_est and s + len(paragraphs[i]) < n_est - 5]
        in_val = [i for i, s in enumerate(starts) if 0.905 * n_est < s and s + len(paragraphs[i]) < 0.945 * n_est]
        assert len(in_test) >= 5 and in_val, "corpus too small for the planting plan"
        for k, i in enumerate(in_test[:3]):
            paragraphs[i] = paragraphs[k].upper().replace(" ", "\t", 3)  # the same text once normalised
        for k, i in enumerate(in_test[3:5]):
            paragraphs[i] = near_copy(paragraphs[10 + k], rng)
        run = paragraphs[20].split()[5:25]
        v = paragraphs[in_val[0]].split()
        paragraphs[in_val[0]] = " ".join(v[:10] + run + v[30:])
        planted.update(exact_test=3, near_test=2, run_val_words=run, test_paragraphs=in_test[:5])
        text = "\n\n".join(paragraphs) + "\n"
    path = tmp_path / "corpus.txt"
    path.write_text(text)
    return path, planted


def lm_overrides(path: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [f"data.path={json.dumps(str(path))}", "data.tokenizer=char", "data.split_chunks=1",
            f"data.cache_dir={json.dumps(str(tmp_path / 'cache'))}", "model.block_size=64", "data.dedupe=false",
            *extra]


def test_lm_planted_copies_and_contamination_are_found_with_exact_counts(tmp_path):
    path, planted = lm_corpus(tmp_path, plant=True)
    report = check_data(overrides=lm_overrides(path, tmp_path))
    assert report["exact"]["cross"] == {"val_in_train": 0, "test_in_train": planted["exact_test"], "test_in_val": 0}
    assert report["near"]["cross"] == {"val_in_train": 0, "test_in_train": planted["near_test"], "test_in_val": 0}
    assert report["exact"]["duplicate_units"] == planted["exact_test"]
    assert all(0.8 <= e["similarity"] < 1 for e in report["near"]["examples"])
    assert {e["a"]["split"] for e in report["exact"]["examples"]} == {"test"}
    # Contamination, computed independently: the validation windows (64-char tiles of the val range) that
    # hold the start of a word of the planted 20-word run.
    text = path.read_text()
    n_tokens = len(text) + 1  # characters + end of text
    val_start, val_end = round(0.9 * n_tokens), round(0.95 * n_tokens)
    run = " ".join(planted["run_val_words"])
    at = text.index(run, val_start)
    word_starts = [at + m.start() for m in re.finditer(r"\w+", run)]
    tiles = list(range(val_start, val_end - 64, 64))
    expected = {(p - val_start) // 64 for p in word_starts if (p - val_start) // 64 < len(tiles)}
    c = report["contamination"]
    assert c["val"]["windows"] == len(tiles)
    assert c["val"]["contaminated"] == len(expected)
    # In test, the copies of train paragraphs are contaminated too: every word of them but the replaced one.
    paragraphs = text.split("\n\n")
    offsets = np.cumsum([0] + [len(p) + 2 for p in paragraphs[:-1]])
    test_start = round(0.95 * n_tokens)
    test_tiles = list(range(test_start, n_tokens - 64, 64))
    starts = [int(offsets[i]) + m.start() for i in planted["test_paragraphs"]
              for m in re.finditer(r"\w+", paragraphs[i]) if m.group() != "zzqx"]
    expected = {(p - test_start) // 64 for p in starts if (p - test_start) // 64 < len(test_tiles)}
    assert c["test"]["windows"] == len(test_tiles) and c["test"]["contaminated"] == len(expected)
    assert " ".join(planted["run_val_words"][:13]) in [e["ngram"] for e in c["val"]["examples"]]
    levels = [v["level"] for v in report["verdicts"]]
    assert levels.count("warn") == 3  # test copies in train; val and test windows contaminated (above 1%)
    assert any(f"(5 of {report['units']['test']:,}: 3 exact, 2 near)" in v["text"] for v in report["verdicts"])


def test_clean_lm_corpus_reports_nothing(tmp_path):
    path, _ = lm_corpus(tmp_path, plant=False)
    report = check_data(overrides=lm_overrides(path, tmp_path))
    assert report["exact"]["duplicate_units"] == 0 and report["near"]["pairs"] == 0
    assert report["contamination"]["val"]["contaminated"] == report["contamination"]["test"]["contaminated"] == 0
    assert [v["level"] for v in report["verdicts"]] == ["ok"]


def test_dedupe_removes_copies_and_the_split_is_deterministic(tmp_path):
    path, planted = lm_corpus(tmp_path, plant=True)
    over = lm_overrides(path, tmp_path, "data.dedupe=true")
    report = check_data(overrides=over)
    assert report["exact"]["duplicate_units"] == 0 and report["near"]["pairs"] == 0
    assert report["exact"]["cross"]["test_in_train"] == report["near"]["cross"]["test_in_train"] == 0
    # The same corpus deduplicated twice (fresh caches) gives the same token stream, hence the same split.
    from gradwise.training.run_config import resolve_train_config

    streams = []
    for k in range(2):
        cfg, _, _ = resolve_train_config(None, [*over, f"data.cache_dir={json.dumps(str(tmp_path / f'c{k}'))}"])
        corpus = prepare_corpus(cfg.data)
        streams.append(corpus.store.read(0, corpus.store.n_tokens))
        assert corpus.source.plan()[1] == {"units": 200, "dropped_exact": 3, "dropped_near": 2}
    assert np.array_equal(streams[0], streams[1])
    # Dropped paragraphs are gone; every kept one is intact, in order.
    kept = corpus.tokenizer.decode(streams[0])
    original = [p for p in path.read_text().split("\n\n")]
    assert kept.count("zzqx") == 0 and len(kept.split("\n\n")) == 195
    assert kept.split("\n\n")[0] == original[0]


def test_stream_paragraphs_round_trips_across_piece_edges():
    text = "a b\n\nc d e\n \n\nf\n\n\ng h"
    for cut in range(len(text) + 1):
        pieces = [(text[:cut], False), (text[cut:], True)]
        out = list(stream_paragraphs(pieces))
        assert "".join(p + s for p, s, _ in out) == text
        assert [p.strip() for p, _, _ in out if p.strip()] == ["a b", "c d e", "f", "g h"]


def test_train_warns_about_leakage_and_records_it(tmp_path, capsys):
    path, planted = lm_corpus(tmp_path, plant=True)
    over = lm_overrides(path, tmp_path, f"out_dir={json.dumps(str(tmp_path / 'runs'))}", "name=leaky",
                        "model.n_layer=1", "model.n_embd=32", "model.n_head=2", "train.max_steps=2",
                        "train.eval_every=2", "train.eval_batches=1", "train.batch_size=4")
    result = train(overrides=over, live_progress=False)
    out = capsys.readouterr().out
    assert "data     warning:" in out and "have a copy in train" in out
    saved = json.loads((result.run_dir / "data_check.json").read_text())
    assert saved["exact"]["cross"]["test_in_train"] == planted["exact_test"]
    assert any("copy in train" in w for w in result.summary["data_warnings"])
    deduped = train(overrides=[*over, "name=clean", "data.dedupe=true"], live_progress=False)
    assert deduped.summary["dedupe"] == {"units": 200, "dropped_exact": 3, "dropped_near": 2}
    assert not any("copy in train" in w for w in deduped.summary["data_warnings"])


# ---------------------------------------------------------------- labelled records

def shingle_set(text: str) -> set:
    words = re.findall(r"\w+", text.casefold())
    return {tuple(words)} if len(words) < 3 else {tuple(words[i:i + 3]) for i in range(len(words) - 2)}


def brute_force(texts: list[str], labels: list, index: dict[str, np.ndarray], threshold: float = 0.8) -> dict:
    """Exact and near copies by comparing every pair: slow, obvious, independent of MinHash."""
    split = {}
    for name, idx in index.items():
        for i in idx:
            split[int(i)] = name
    norm = [" ".join(t.casefold().split()) for t in texts]
    first: dict[str, int] = {}
    for i, t in enumerate(norm):
        first.setdefault(t, i)
    distinct = sorted(first.values())
    sets = {i: shingle_set(texts[i]) for i in distinct}
    near = [(a, b) for a, b in itertools.combinations(distinct, 2)
            if len(sets[a] & sets[b]) / len(sets[a] | sets[b]) >= threshold]
    members: dict[str, list[int]] = {}
    for i, t in enumerate(norm):
        members.setdefault(t, []).append(i)

    def splits_of(i: int) -> set:
        return {split[j] for j in members[norm[i]]}

    cross = {}
    for a, b in (("val", "train"), ("test", "train"), ("test", "val")):
        exact = sum(1 for i in range(len(texts)) if split[i] == a and b in splits_of(i))
        near_hits = 0
        for i in range(len(texts)):
            if split[i] != a or b in splits_of(i):
                continue
            rep = first[norm[i]]
            partners = [y if x == rep else x for x, y in near if rep in (x, y)]
            near_hits += any(b in splits_of(p) for p in partners)
        cross[f"{a}_in_{b}"] = (exact, near_hits)
    conflicts = sum(1 for m in members.values() if len({labels[j] for j in m}) > 1)
    return {"duplicate_units": len(texts) - len(first), "near_pairs": len(near), "cross": cross,
            "conflict_texts": conflicts}


def planted_records(tmp_path: Path) -> tuple[Path, list[str], list[str]]:
    rng = random.Random(3)
    texts = [sentence(rng, rng.randint(8, 30)) for _ in range(300)]
    labels = [rng.choice(["a", "b", "c"]) for _ in texts]
    for k in range(6):  # exact copies (case and spacing differ), one with a different label
        texts.append(texts[k].title())
        labels.append(labels[k] if k else ("b" if labels[0] != "b" else "c"))
    for k in range(6, 12):  # near copies
        texts.append(near_copy(texts[k] + " " + sentence(rng, 30), rng).replace("zzqx", texts[k].split()[0]))
        labels.append(labels[k])
        texts.append(near_copy(texts[-1], rng))
        labels.append(labels[k])
    path = tmp_path / "labelled.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in zip(texts, labels, strict=True)))
    return path, texts, labels


def check_against_brute_force(path: Path, tmp_path: Path) -> dict:
    from gradwise.training.run_config import resolve_train_config

    over = [f"data.path={json.dumps(str(path))}", "task=classify", f"data.cache_dir={json.dumps(str(tmp_path / 'cache'))}"]
    cfg, _, _ = resolve_train_config("classify-lstm", over)
    texts, labels = read_labelled(path)
    index = stratified_split(labels, cfg.data.split, cfg.seed)  # the split training makes
    expected = brute_force(texts, labels, index)
    report = check_data("classify-lstm", overrides=over)
    assert report["exact"]["duplicate_units"] == expected["duplicate_units"]
    assert report["near"]["pairs"] == expected["near_pairs"]
    for key, (exact, near) in expected["cross"].items():
        assert report["exact"]["cross"][key] == exact, key
        assert report["near"]["cross"][key] == near, key
    assert report["labels"]["exact_conflict_texts"] == expected["conflict_texts"]
    lengths = sorted(len(t) for t in texts)  # the length histogram the run report draws
    hist = report["stats"]["lengths"]
    assert report["stats"]["records"] == hist["count"] == sum(b["count"] for b in hist["buckets"]) == len(texts)
    assert (hist["min"], hist["max"]) == (lengths[0], lengths[-1])
    return report


def test_labelled_planted_duplicates_match_a_brute_force_count(tmp_path):
    path, _, _ = planted_records(tmp_path)
    report = check_against_brute_force(path, tmp_path)
    assert report["exact"]["duplicate_units"] == 6
    assert report["labels"]["exact_conflict_texts"] >= 1  # the planted one (random labels may add more)
    assert report["near"]["pairs"] >= 6
    for e in report["exact"]["examples"]:
        line = path.read_text().splitlines()[e["a"]["line"] - 1]
        assert " ".join(json.loads(line)["text"].split())[:80].casefold() == e["a"]["text"].casefold()


@pytest.mark.skipif(not (SHARED / "fortunes4.jsonl").is_file(), reason="../shared/data/fortunes4.jsonl not present")
def test_fortunes4_counts_match_a_brute_force_count(tmp_path):
    check_against_brute_force(SHARED / "fortunes4.jsonl", tmp_path)


def test_classify_dedupe_drops_records_before_the_split(tmp_path):
    path, texts, _ = planted_records(tmp_path)
    over = [f"data.path={json.dumps(str(path))}", "task=classify", "data.dedupe=true",
            f"data.cache_dir={json.dumps(str(tmp_path / 'cache'))}"]
    report = check_data("classify-lstm", overrides=over)
    assert report["exact"]["duplicate_units"] == 0 and report["near"]["pairs"] == 0
    assert sum(report["units"].values()) < len(texts) - 6


def test_stats_counts(tmp_path):
    path, texts, labels = planted_records(tmp_path)
    with open(path, "a") as fh:
        fh.write(json.dumps({"text": "  ", "label": "a"}) + "\n" + json.dumps({"text": "no label"}) + "\n")
    s = data_stats("classify-lstm", overrides=[f"data.path={json.dumps(str(path))}", "task=classify"])
    assert s["records"] == len(texts) and s["bytes"] == path.stat().st_size
    assert s["label_counts"] == {c: labels.count(c) for c in sorted(set(labels))}
    assert [b["line"] for b in s["invalid_records"]] == [len(texts) + 1, len(texts) + 2]
    assert s["tokens"] is None  # training would stop at those records
    assert s["lengths"]["count"] == len(texts) and sum(b["count"] for b in s["lengths"]["buckets"]) == len(texts)
    lm_path, _ = lm_corpus(tmp_path, plant=False)
    s = data_stats(overrides=lm_overrides(lm_path, tmp_path))
    text = lm_path.read_text()
    assert s["chars"] == len(text) and s["documents"] == 1 and s["paragraphs"] == 200
    assert s["tokens"] == len(text) + 1 and sum(s["split_tokens"].values()) == s["tokens"]


@pytest.mark.parametrize("content, expect", [
    (None, "does not exist"),
    (b"\xff\xfe bad bytes", "not valid UTF-8"),
    (b'{"text": "a", "label": "x"}\n{not json\n', "is not valid JSON"),
    (b'{"body": "a"}\n{"body": "b"}\n', "no text in field 'text'"),
])
def test_bad_input_gets_one_line_errors(tmp_path, capsys, content, expect):
    path = tmp_path / "bad.jsonl"
    if content is not None:
        path.write_bytes(content)
    for action in ("stats", "check"):
        code = main(["data", action, str(path), "--task", "classify"])
        err = capsys.readouterr().err
        assert code != 0 and expect in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_check_prints_verdicts_and_writes_json(tmp_path, capsys):
    path, planted = lm_corpus(tmp_path, plant=True)
    out_file = tmp_path / "data_check.json"
    code = main(["data", "check", str(path), "--set", "data.tokenizer=char", "--set", "data.split_chunks=1",
                 "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "model.block_size=64",
                 "--set", "data.dedupe=false", "--out", str(out_file), "--strict"])
    out = capsys.readouterr().out
    assert code == 1 and "WARNING" in out and "have a copy in train" in out and "exact copy" in out
    assert json.loads(out_file.read_text())["exact"]["cross"]["test_in_train"] == planted["exact_test"]


def test_short_documents_templates_and_full_leaks_are_handled(tmp_path):
    """Regression: an LM corpus of documents shorter than 13 words (no n-gram in train) must not crash; a
    templated labelled set (one huge LSH bucket) stays bounded; a fully leaked split reads 100%, not 1e+02%."""
    from gradwise.data.quality.check import _pct

    rng = random.Random(5)
    short = tmp_path / "short.jsonl"
    short.write_text("".join(json.dumps({"text": sentence(rng, 8)}) + "\n" for _ in range(400)))
    report = check_data(overrides=[f"data.path={json.dumps(str(short))}", "data.tokenizer=char", "model.block_size=32",
                                   "data.dedupe=false", f"data.cache_dir={json.dumps(str(tmp_path / 'c'))}"])
    assert report["contamination"]["val"]["contaminated"] == 0
    templated = tmp_path / "orders.jsonl"
    templated.write_text("".join(json.dumps({"text": f"Thank you for your order, number {i}", "label": "ab"[i % 2]})
                                 + "\n" for i in range(1000)))
    report = check_data("classify-lstm", overrides=[f"data.path={json.dumps(str(templated))}", "task=classify",
                                                    f"data.cache_dir={json.dumps(str(tmp_path / 'c'))}"])
    assert report["exact"]["duplicate_units"] == 0 and report["near"]["pairs"] == 0  # Jaccard 4/6 < 0.8
    assert _pct(210, 210) == "100%" and _pct(5, 210) == "2.4%" and _pct(1, 2000) == "0.05%"


def test_contamination_in_a_second_process_gives_the_same_report(tmp_path, monkeypatch):
    """The check's contamination half runs in a child process on large corpora: its answer must equal the
    in-process one (char and BPE tokenizers), and a child that fails must not change the report."""
    import sys

    from gradwise.data import check_params
    from gradwise.data.quality import contamination
    from gradwise.data.quality.check import check_lm

    path, _ = lm_corpus(tmp_path, plant=True)
    for tokenizer in ("char", "bpe"):
        over = lm_overrides(path, tmp_path, f"data.tokenizer={tokenizer}", "data.vocab_size=300")
        from gradwise.training.run_config import resolve_train_config

        cfg, _, _ = resolve_train_config(None, over)
        corpus, params = prepare_corpus(cfg.data), check_params(cfg.data)
        inline = check_lm(corpus, 64, params, parallel=False)
        child = contamination.start(corpus, 64, params.ngram, parallel=True)
        assert child is not None
        assert child.result() == inline["contamination"] and child.ran_in_child
        assert inline["contamination"]["val"]["contaminated"] > 0
        both = check_lm(corpus, 64, params, parallel=True)
        assert {**both, "seconds": 0} == {**inline, "seconds": 0}
    monkeypatch.setattr(sys, "executable", "/bin/false")  # the child cannot run: computed here instead
    broken = contamination.start(corpus, 64, params.ngram, parallel=True)
    assert broken.result() == inline["contamination"] and not broken.ran_in_child


def test_lsh_candidate_pairs_match_a_brute_force_banding():
    """Vectorised bucket pairing equals the plain definition, big buckets (capped pairing) included."""
    from gradwise.data.quality.minhash import MAX_BUCKET, MinHasher

    rng = np.random.default_rng(0)
    hasher = MinHasher(8, 4)
    sig = rng.integers(0, 3, size=(300, 8)).astype(np.uint32)  # few values: buckets of every size
    sig[:40, :2] = 7  # one bucket of 40 (> MAX_BUCKET) in band 0
    expected = set()
    for band in range(4):
        buckets: dict[tuple, list[int]] = {}
        for i, row in enumerate(sig[:, band * 2:band * 2 + 2].tolist()):
            buckets.setdefault(tuple(row), []).append(i)
        for members in buckets.values():
            for a in range(min(len(members), MAX_BUCKET)):
                expected.update((members[a], b) for b in members[a + 1:])
    got = hasher.candidate_pairs(sig)
    assert [tuple(p) for p in got.tolist()] == sorted(expected)


def test_find_words_equals_the_word_regex():
    """The ASCII fast path of word finding gives exactly what \\w+ gives (punctuation, digits, underscores,
    control characters), and non-ASCII text goes through the regex itself."""
    from gradwise.data.quality.textunits import WORD, find_words

    rng = random.Random(3)
    alphabet = [chr(i) for i in range(128)] + ["é", "ß", "—", "日", "\u00a0", "\u2028"]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        assert find_words(text) == WORD.findall(text)
    assert find_words("it's a_b--c9 (x)\x1cy") == ["it", "s", "a_b", "c9", "x", "y"]
