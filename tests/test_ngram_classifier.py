"""The n-gram classifier: hashed word and character n-grams as a tokenizer, a bag model trained by gradwise's
step, and the same run directory as every classifier (predict, eval, resume)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from gradwise import predict, train
from gradwise.config.load import load_config
from gradwise.core.errors import ConfigError, DataError
from gradwise.data.tokenizers import NgramTokenizer, tokenizer_from_json
from gradwise.models.ngram import NgramClassifier, NgramConfig, bag_weights, idf_weights, nb_weights
from tests.test_classify import make_dataset

SMALL = ["train.batch_size=16", "train.max_steps=60", "train.eval_every=20", "train.log_every=10",
         "train.patience=null", "model.block_size=512"]


def test_the_tokenizer_lists_each_hashed_ngram_per_occurrence_and_round_trips_as_json() -> None:
    tok = NgramTokenizer(bits=10)
    ids = tok.encode("The cat sat. The cat!")
    assert ids.min() >= 0 and ids.max() < tok.eot_id and np.all(np.diff(ids) >= 0)  # in id order
    words = ids[ids < 1 << 10]
    # the, cat, sat, "the cat", "cat sat" and "sat the" (punctuation is no boundary); the and cat twice, and
    # "the cat" twice
    assert len(set(words.tolist())) == 6 and len(words) == 9
    sets = NgramTokenizer(bits=10, counts=False)
    assert np.array_equal(sets.encode("The cat sat. The cat!"), np.unique(ids))
    old = json.loads(sets.to_json())
    del old["counts"]  # a run from before counts: its tokenizer still lists sets
    assert not tokenizer_from_json(json.dumps(old)).counts
    again = tokenizer_from_json(tok.to_json())
    assert isinstance(again, NgramTokenizer) and np.array_equal(again.encode("The cat sat. The cat!"), ids)
    assert np.array_equal(tok.encode("THE CAT SAT. the cat!"), ids)  # lower-cased, as the baseline's analyzers
    assert [len(x) for x in tok.encode_batch(["a b", "cat"])] == [len(tok.encode("a b")), len(tok.encode("cat"))]
    with pytest.raises(DataError, match="cannot be decoded"):
        tok.decode(ids)


def test_the_bag_ignores_padding_and_order() -> None:
    torch.manual_seed(0)
    model = NgramClassifier(NgramConfig(vocab_size=101, n_classes=3, pad_id=100, n_embd=8)).eval()
    ids = torch.tensor([[5, 17, 42]])
    padded = torch.tensor([[42, 5, 17, 100, 100]])
    assert torch.allclose(model(ids), model(padded), atol=1e-6)
    logits = model(torch.tensor([[5, 17, 42], [7, 100, 100]]))
    model(ids).sum().backward()
    assert model.embed.weight.grad[100].abs().sum() == 0  # the padding vector never trains
    assert logits.shape == (2, 3)


@pytest.mark.parametrize(("idf", "nb"), [(True, False), (False, False), (True, True), (False, True)])
def test_the_bag_is_the_baselines_l2_normalised_sublinear_tfidf_row(idf: bool, nb: bool) -> None:
    """The bag is exactly (the text's sublinear TF(-IDF) row, times the nb ratios with ``nb``, L2-normalised, as
    scikit-learn makes it) @ the vectors, whatever order the ids come in."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize

    docs = [[0, 1, 1, 2], [1, 2, 3, 3, 3, 4], [2, 4], [0, 2, 4, 5, 5]]  # an id once per occurrence
    labels = np.array([0, 1, 1, 0])
    vocab = 7  # id 6 (padding) is in no document
    as_text = [" ".join(f"t{i}" for i in d) for d in docs]
    sk = TfidfVectorizer(token_pattern=r"t\d", vocabulary=[f"t{i}" for i in range(vocab)], sublinear_tf=True,
                         use_idf=idf, norm=None)
    rows = sk.fit_transform(as_text).toarray()
    if nb:
        rows = rows * nb_weights(docs, labels, vocab).numpy()
    rows = torch.tensor(normalize(rows), dtype=torch.float32)
    torch.manual_seed(0)
    model = NgramClassifier(NgramConfig(vocab_size=vocab, n_classes=2, pad_id=6, n_embd=4, idf=idf, nb=nb)).eval()
    if idf:
        assert torch.allclose(idf_weights(docs, vocab), torch.tensor(sk.idf_, dtype=torch.float32))
    if idf or nb:
        model.set_weights(bag_weights(docs, labels, vocab, idf=idf, nb=nb))
        assert "idf" in model.state_dict()  # saved with the weights: predict reads the training split's back
    padded = torch.tensor([d[::-1] + [6] * (6 - len(d)) for d in docs])
    expected = model.head(rows @ model.embed.weight)
    assert torch.allclose(model(padded), expected, atol=1e-5)


def test_the_nb_ratio_favours_the_ngrams_that_tell_the_classes_apart() -> None:
    """NBSVM's log-count ratio of each class against the rest, from distinct ids, smoothed by one: checked by
    hand on a toy split, with its largest magnitude over the classes kept."""
    docs = [np.array([0, 1, 1]), np.array([0, 2]), np.array([3, 2]), np.array([3, 2, 2])]
    w = nb_weights(docs, np.array([0, 0, 1, 1]), vocab_size=6).numpy()
    # ids 0..3 seen; class 0's documents hold 0 twice, 1 once, 2 once: smoothed shares (3, 2, 2, 1) / 8;
    # class 1's hold 2 twice and 3 twice: (1, 1, 3, 3) / 8
    shares0, shares1 = np.array([3, 2, 2, 1]) / 8, np.array([1, 1, 3, 3]) / 8
    assert np.allclose(w[:4], np.abs(np.log(shares0 / shares1)), atol=1e-6)
    assert w[4] == w[5] == 0  # an id no training text holds says nothing, and drops out of the bag
    assert w[0] > w[2]  # in both classes' texts: weighed less than one that names a class
    multi_hot = nb_weights(docs, np.eye(2)[[0, 0, 1, 1]], vocab_size=6)  # one label each, as multi-hot rows
    assert torch.allclose(multi_hot, torch.from_numpy(w))


def test_tokenizer_and_arch_go_together() -> None:
    with pytest.raises(ConfigError, match="go together"):
        load_config("classify-lstm", ["data.tokenizer=ngram"])
    with pytest.raises(ConfigError, match="go together"):
        load_config("classify-ngram", ["model.arch=lstm"])
    with pytest.raises(ConfigError, match="for classification"):
        load_config("default", ["data.tokenizer=ngram"])
    with pytest.raises(ConfigError, match="model.idf weighs"):
        load_config("classify-lstm", ["model.idf=true"])
    with pytest.raises(ConfigError, match="model.nb weighs"):
        load_config("classify-lstm", ["model.nb=true"])


def test_it_learns_topics_predicts_and_resumes_exactly(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "topics.jsonl", n=240)
    base = [*SMALL, f"data.path={data}", f"out_dir={tmp_path}", "schedule.name=constant", "schedule.warmup_steps=5"]
    whole = train("classify-ngram", overrides=[*base, "name=whole"], quiet=True)
    s = whole.summary
    assert s["test_macro_f1"] >= 0.9 and s["params"] == (2 * 2**18 + 1) * 16 + 3 * 16 + 3
    assert json.loads((whole.run_dir / "tokenizer.json").read_text())["format"] == "gradwise-ngram-v1"
    preds = predict(whole.run_dir, ["the rocket and the orbit of a star", "bake the flour in the oven"])
    assert [p.label for p in preds] == ["space", "cooking"]

    half = train("classify-ngram", overrides=[*base, "name=half", "train.max_steps=30"], quiet=True)
    resumed = train(overrides=["train.max_steps=60"], resume=half.run_dir, quiet=True)
    assert resumed.summary["best_val_loss"] == s["best_val_loss"]
    a = load_file(whole.run_dir / "checkpoints" / "last" / "model.safetensors")
    b = load_file(half.run_dir / "checkpoints" / "last" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit: the resumed run is the uninterrupted one


def test_best_on_macro_f1_keeps_the_checkpoint_with_the_best_val_macro_f1(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "topics.jsonl", n=240)
    rng, rows = random.Random(0), [json.loads(line) for line in data.read_text().splitlines()]
    for row in rows:  # noisy labels: the loss turns up before macro-F1 stops rising
        if rng.random() < 0.35:
            row["label"] = rng.choice(sorted({r["label"] for r in rows}))
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # model.nb=false: on this planted set the idf bag's loss and macro-F1 peak at different steps, which is what
    # the test needs; with the nb ratios both peak at step 10
    base = [*SMALL, f"data.path={data}", f"out_dir={tmp_path}", "train.eval_every=5", "train.patience=3",
            "optim.lr=0.05", "model.nb=false"]
    by_loss = train("classify-ngram", overrides=[*base, "name=loss"], quiet=True).summary
    run = train("classify-ngram", overrides=[*base, "name=f1", "train.best_on=macro_f1"], quiet=True)
    s = run.summary
    evals = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in evals if e.get("kind") == "eval"]
    top = max(e["val_macro_f1"] for e in evals)
    chosen = min((e for e in evals if e["val_macro_f1"] == top), key=lambda e: (e["val_loss"], e["step"]))
    assert s["best_on"] == "macro_f1" and s["best_step"] == chosen["step"] != by_loss["best_step"]
    assert s["best_val_loss"] == chosen["val_loss"] and s["best_val_metrics"]["macro_f1"] == top
    assert s["stopped_because"] == "early_stopping" and evals[-1]["step"] == chosen["step"] + 3 * 5
    with pytest.raises(ConfigError, match="classifier's metric"):
        load_config("default", ["train.best_on=macro_f1"])
