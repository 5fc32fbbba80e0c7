"""What the n-gram classifier's features are worth: logistic regression (scikit-learn) on each way of reading a
text's n-grams, over several seeds of gradwise's split of fortunes4, with C chosen on validation macro-F1 as the
baseline chooses it.

  baseline    the run's own baseline: exact TF-IDF vocabularies, sublinear tf, word and char blocks each
              L2-normalised, char n-grams seen in one training text dropped
  sets        what the n-gram tokenizer gave before counts: each hashed n-gram once (binary tf), idf, one norm
  counts      what it gives now: each n-gram per occurrence, weighed 1 + ln(count) (sublinear tf), idf, one norm
  blocks      counts, with the word block and the character block each L2-normalised (as the baseline's
              FeatureUnion of two vectorizers), so the many character n-grams do not outweigh the words
  mindf       blocks, with n-grams seen in a single training text given no weight (the baseline's char min_df=2)
  nb          counts, each n-gram also weighed by how well it tells the classes apart in the training split
              (``model.nb``: the largest |log-count ratio| over the classes, NBSVM's ratio), one norm

The features of "sets" and "counts" are exactly the n-gram model's bag before its learned vectors (the model's
test asserts the bag equals these rows), so this isolates the features from the model and its training.

    python3 bench/ngram_features.py --record     # about 5 minutes on 2 cores
    python3 bench/ngram_features.py --seeds 1337 --variants counts   # smoke check
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
from benchrecord import RECORD_FILE, append_record, paired, seed_list, spread

from gradwise.data.labelled import read_labelled, stratified_split
from gradwise.data.tokenizers import NgramTokenizer
from gradwise.models.ngram import bag_weights, document_frequency
from gradwise.tasks.classify_baseline import C_GRID

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "fortunes4.jsonl"
VARIANTS = ("baseline", "sets", "counts", "blocks", "mindf", "nb")


def hashed_rows(texts: dict[str, list[str]], counts: bool, blocks: bool = False, min_df: int = 1,
                targets: np.ndarray | None = None) -> dict:
    """Each split's rows as the n-gram model's bag weighs them: (sublinear) tf x idf from train (x the nb ratio
    with ``targets``, the training labels), L2-normalised as one row, or block by block (words, characters);
    n-grams in fewer than ``min_df`` training texts dropped."""
    from scipy import sparse
    from sklearn.preprocessing import normalize

    tok = NgramTokenizer(counts=counts)
    ids = {name: tok.encode_batch(t) for name, t in texts.items()}
    idf = bag_weights(ids["train"], targets, tok.vocab_size, idf=True, nb=targets is not None).numpy()
    df = document_frequency(ids["train"], tok.vocab_size)
    half = 1 << tok.bits
    rows = {}
    for name, docs in ids.items():
        indptr = np.cumsum([0] + [len(d) for d in docs])
        m = sparse.csr_matrix((np.ones(indptr[-1]), np.concatenate(docs), indptr), shape=(len(docs), tok.vocab_size))
        m.sum_duplicates()
        m.data = (1 + np.log(m.data)) * idf[m.indices] * (df[m.indices] >= min_df)
        if blocks:
            m = sparse.hstack([normalize(m[:, :half]), normalize(m[:, half:])]).tocsr()
        else:
            m = normalize(m)
        rows[name] = m
    seen = np.flatnonzero(np.asarray((rows["train"] != 0).sum(0)).ravel())  # unseen columns get no weight in LR
    return {name: r[:, seen] for name, r in rows.items()}


def baseline_rows(texts: dict[str, list[str]]) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    from gradwise.tasks.classify_baseline import CHAR_NGRAMS, WORD_NGRAMS

    features = FeatureUnion([
        ("words", TfidfVectorizer(ngram_range=WORD_NGRAMS, sublinear_tf=True)),
        ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=CHAR_NGRAMS, min_df=2, sublinear_tf=True))])
    out = {"train": features.fit_transform(texts["train"])}
    out.update({name: features.transform(t) for name, t in texts.items() if name != "train"})
    return out


def score(rows: dict, y: dict) -> dict:
    """C chosen on validation macro-F1 (the baseline's grid), then test once."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    best = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for c in C_GRID:
            fitted = LogisticRegression(C=c, max_iter=1000, class_weight="balanced").fit(rows["train"], y["train"])
            val = f1_score(y["val"], fitted.predict(rows["val"]), average="macro")
            if best is None or val > best[0]:
                best = (val, c, fitted)
    assert best is not None
    return {"val": best[0], "c": best[1], "test": f1_score(y["test"], best[2].predict(rows["test"]), average="macro")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--seeds", default="1337,1,2")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--record", action="store_true", help=f"append the table to {RECORD_FILE.relative_to(REPO)}")
    args = ap.parse_args(argv)
    if not Path(args.data).is_file():
        print(f"skipped: {args.data} not found; pass --data PATH to fortunes4.jsonl")
        return 0
    texts, labels = read_labelled(Path(args.data))
    classes = sorted(set(labels))
    seeds, variants = seed_list(args.seeds), args.variants.split(",")
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for seed in seeds:
        index = stratified_split(labels, [0.8, 0.1, 0.1], seed)
        split_texts = {name: [texts[i] for i in idx] for name, idx in index.items()}
        y = {name: np.array([classes.index(labels[i]) for i in idx]) for name, idx in index.items()}
        for v in variants:
            rows = baseline_rows(split_texts) if v == "baseline" else hashed_rows(
                split_texts, counts=v != "sets", blocks=v in ("blocks", "mindf"), min_df=2 if v == "mindf" else 1,
                targets=y["train"] if v == "nb" else None)
            results[v].append(score(rows, y))
            r = results[v][-1]
            print(f"  seed {seed} {v:<8} val macro-F1 {r['val']:.4f} test {r['test']:.4f} (C={r['c']:g})", flush=True)

    lines = [f"Logistic regression on each reading of the n-grams; seeds {', '.join(map(str, seeds))} (each its own "
             "split); C chosen on validation macro-F1; mean ± half the range over the seeds.", "",
             "| features | val macro-F1 | test macro-F1 | C chosen |", "|---|--:|--:|---|"]
    for v, rows in results.items():
        lines.append(f"| {v} | {spread([r['val'] for r in rows])} | {spread([r['test'] for r in rows])} | "
                     f"{', '.join(format(r['c'], 'g') for r in rows)} |")
    if "baseline" in results and len(seeds) > 1:
        lines.append("")
        for v, rows in results.items():
            if v == "baseline":
                continue
            difference, wins = paired([r["test"] - b["test"] for r, b in zip(rows, results["baseline"], strict=True)])
            lines.append(f"- {v} minus the baseline, test macro-F1 on the same split: {difference} (mean ± standard "
                         f"error over {len(rows)} seeds); at least the baseline's on {wins} of {len(rows)}")
    print("\n" + "\n".join(lines))
    if args.record:
        append_record("n-gram features under logistic regression (fortunes4)", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
