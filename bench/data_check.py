"""Data-check benchmark: `gradwise data check` on a ~100 MB corpus, and gradwise's MinHash against datasketch's.

The corpus is generated: paragraphs of tinyshakespeare (or the embedded corpus when absent) with 30% of their
words replaced at random, so nearly every paragraph is distinct, plus planted copies (1% exact, 1% near: 3% of
words replaced) so the check has something to find. Timed in a fresh process each: tokenizing (char
tokenizer; what any training run on this corpus does once, then caches) and the check itself. Target: the
check of 100 MB well under a minute on 2 cores.

    python3 bench/data_check.py --record      # ~3 minutes; appends to docs/benchmarks.md
    python3 bench/data_check.py --mb 5        # smaller corpus
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchrecord import RECORD_FILE, append_record

REPO = Path(__file__).resolve().parent.parent
SHAKESPEARE = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"

CHILD = r"""
import json, resource, sys, time
from gradwise.api import resolve_train_config, check_data
from gradwise.data import prepare_corpus
over = json.loads(sys.argv[1])
cfg, _, _ = resolve_train_config(None, over)
t0 = time.perf_counter(); corpus = prepare_corpus(cfg.data); t1 = time.perf_counter()
report = check_data(None, overrides=over); t2 = time.perf_counter()
print(json.dumps({"tokenize_s": t1 - t0, "check_s": t2 - t1, "tokens": corpus.store.n_tokens,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "helper_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                  "units": report["units"], "exact": report["exact"]["cross"], "near": report["near"]["cross"],
                  "duplicates": report["exact"]["duplicate_units"], "near_pairs": report["near"]["pairs"],
                  "verdicts": [v["text"] for v in report["verdicts"]]}))
"""


def base_paragraphs() -> list[str]:
    if SHAKESPEARE.is_file():
        text = SHAKESPEARE.read_text()
    else:
        from pydoc_data.topics import topics

        text = "\n\n".join(topics.values())
    return [p.strip() for p in text.split("\n\n") if len(p.strip()) > 40]


def make_corpus(path: Path, megabytes: float, seed: int = 0) -> dict[str, int]:
    rng = random.Random(seed)
    base = base_paragraphs()
    vocab = sorted({w for p in base for w in p.split()})
    target = int(megabytes * 1e6)
    out, size, made, planted = [], 0, [], {"exact": 0, "near": 0}

    def mutate(p: str, rate: float) -> str:
        return " ".join(rng.choice(vocab) if rng.random() < rate else w for w in p.split(" "))

    while size < target:
        r = rng.random()
        if made and r < 0.01:
            p = rng.choice(made)
            planted["exact"] += 1
        elif made and r < 0.02:
            p = mutate(rng.choice(made), 0.03)
            planted["near"] += 1
        else:
            p = mutate(rng.choice(base), 0.3)
            if len(made) < 200_000:
                made.append(p)
        out.append(p)
        size += len(p) + 2
    path.write_text("\n\n".join(out) + "\n")
    return {"paragraphs": len(out), **planted}


def minhash_comparison(n: int = 20_000) -> list[str]:
    """Signatures + LSH for n paragraphs: gradwise's numpy MinHash against datasketch (when installed)."""
    import numpy as np

    from gradwise.data.quality.minhash import MinHasher, ShingleSets, batch_shingles
    from gradwise.data.quality.textunits import WORD, WordHasher

    paras = base_paragraphs()
    rng = random.Random(1)
    texts = [" ".join(rng.choice(p.split()) if rng.random() < 0.3 else w for w in p.split())
             for p in (rng.choice(paras) for _ in range(n))]
    words = WordHasher()
    t0 = time.perf_counter()
    word_lists = [WORD.findall(t.casefold()) for t in texts]
    lengths = np.array([len(w) for w in word_lists])
    sets, _ = ShingleSets.from_owned(*batch_shingles(words.hashes([w for ws in word_lists for w in ws]), lengths))
    hasher = MinHasher(64, 16)
    sig = hasher.signatures(sets)
    hasher.candidate_pairs(sig)
    ours = time.perf_counter() - t0
    lines = [f"| gradwise (numpy) | {n:,} | {ours:.2f} s |"]
    try:
        from datasketch import MinHash, MinHashLSH
    except ImportError:
        return lines + ["| datasketch | - | not installed |"]
    t0 = time.perf_counter()
    lsh = MinHashLSH(threshold=0.8, num_perm=64)
    for i, t in enumerate(texts):
        w = t.casefold().split()
        m = MinHash(num_perm=64)
        m.update_batch([" ".join(w[k:k + 3]).encode() for k in range(max(1, len(w) - 2))])
        lsh.insert(i, m)
    theirs = time.perf_counter() - t0
    return lines + [f"| datasketch (MinHash.update_batch + MinHashLSH) | {n:,} | {theirs:.2f} s ({theirs / ours:.1f}x) |"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=100.0, help="corpus size in megabytes (default 100)")
    ap.add_argument("--record", action="store_true", help=f"append the table to {RECORD_FILE.relative_to(REPO)}")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gradwise-datacheck-") as tmp:
        corpus = Path(tmp) / "corpus.txt"
        t0 = time.perf_counter()
        planted = make_corpus(corpus, args.mb)
        print(f"  corpus: {corpus.stat().st_size / 1e6:.1f} MB, {planted} ({time.perf_counter() - t0:.0f}s to make)",
              flush=True)
        over = [f"data.path={json.dumps(str(corpus))}", "data.tokenizer=char", "data.dedupe=false",
                f"data.cache_dir={json.dumps(tmp + '/cache')}"]
        res = json.loads(subprocess.run([sys.executable, "-c", CHILD, json.dumps(over)], check=True,
                                        capture_output=True, text=True).stdout)
        print(f"  {res}", flush=True)
    mh = minhash_comparison()
    lines = ["| corpus | paragraphs | tokenize (once, cached) | data check | peak memory (+ contamination process) |",
             "|---|--:|--:|--:|--:|",
             f"| {args.mb:g} MB generated | {sum(res['units'].values()):,} compared | {res['tokenize_s']:.1f} s | "
             f"**{res['check_s']:.1f} s** | {res['peak_rss_mb']:,.0f} MB (+ {res['helper_peak_rss_mb']:,.0f} MB) |", "",
             f"Planted: {planted['exact']:,} exact and {planted['near']:,} near copies. Found: "
             f"{res['duplicates']:,} exact repeats, {res['near_pairs']:,} near-copy pairs; across splits exact "
             f"{res['exact']}, near {res['near']}.", "", "Verdicts:", *[f"- {v}" for v in res["verdicts"]], "",
             "MinHash signatures + LSH candidates on tinyshakespeare-like paragraphs:", "",
             "| implementation | paragraphs | time |", "|---|--:|--:|", *mh]
    print("\n" + "\n".join(lines))
    if args.record:
        append_record("data check (100 MB)" if args.mb == 100 else f"data check ({args.mb:g} MB)", "\n".join(lines),
                      ["char tokenizer, default thresholds (Jaccard 0.8, 13-word runs, 64 permutations, 16 bands)"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
