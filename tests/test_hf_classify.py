"""Local Hugging Face models as classifiers (``--task classify --model hf:DIR``): an encoder (BERT) and a causal LM
(GPT-2), trained in full and with LoRA, exported as directories transformers loads with their labels.

Nothing is downloaded: both models are tiny and random, with tokenizers trained in the test on its own texts.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from gradwise.cli.commands import main  # noqa: E402
from gradwise.core.errors import DataError  # noqa: E402
from gradwise.core.rundir import read_metrics  # noqa: E402
from gradwise.export import export_hf  # noqa: E402
from gradwise.inference import load_run, predict  # noqa: E402
from gradwise.training.run import train  # noqa: E402
from tests.hf_models import make_bert, make_gpt2  # noqa: E402
from tests.test_classify import make_dataset  # noqa: E402
from tests.test_hf_train import interrupt_at  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()

SHORT = ["train.max_steps=100", "train.eval_every=25", "train.log_every=25", "train.patience=null",
         "schedule.warmup_steps=5", "model.block_size=48", "data.check=false"]
LEARNING_RATE = {"full": 2e-3, "lora": 1e-2}  # a tiny random model, not a pretrained one: far above the preset's


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hf-classify")


@pytest.fixture(scope="module")
def data(workdir: Path) -> Path:
    return make_dataset(workdir / "topics.jsonl")


@pytest.fixture(scope="module")
def models(workdir: Path, data: Path) -> dict[str, Path]:
    corpus = workdir / "corpus.txt"
    corpus.write_text("\n".join(json.loads(line)["text"] for line in data.read_text().splitlines()))
    return {"bert": make_bert(workdir / "bert", corpus), "gpt2": make_gpt2(workdir / "gpt2", corpus)}


def fit(model_dir: Path, data: Path, out: Path, name: str, mode: str, *extra: str, **kwargs):
    sets = [f"data.path={json.dumps(str(data))}", f"out_dir={json.dumps(str(out))}", f"name={name}", "model.arch=hf",
            f"model.hf_path={json.dumps(str(model_dir))}", f"optim.lr={LEARNING_RATE[mode]}", *SHORT, *extra]
    if mode == "lora":
        sets.append("model.lora={r: 4, alpha: 8}")
    return train("classify-hf", overrides=sets, quiet=True, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["bert", "gpt2"])
@pytest.mark.parametrize("mode", ["full", "lora"])
def test_a_hugging_face_classifier_learns_and_exports_with_its_labels_and_logits(
        which: str, mode: str, models: dict[str, Path], data: Path, workdir: Path) -> None:
    result = fit(models[which], data, workdir / "runs", f"{which}-{mode}", mode)
    s = result.summary
    losses = [r["val_loss"] for r in read_metrics(result.run_dir / "metrics.jsonl") if r["kind"] == "eval"]
    assert losses[-1] < 0.8 * math.log(3)  # three balanced classes: chance is ln 3
    assert s["baseline"]["test"]["macro_f1"] > 0 and s["test_macro_f1"] is not None  # scored beside the baseline
    classes = json.loads((result.run_dir / "labels.json").read_text())["classes"]

    out = workdir / f"export-{which}-{mode}"
    export_hf(result.run_dir, out)
    exported = transformers.AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    assert type(exported).__name__ == {"bert": "BertForSequenceClassification",
                                       "gpt2": "GPT2ForSequenceClassification"}[which]
    assert [exported.config.id2label[i] for i in range(len(classes))] == classes  # labels round-trip
    assert not any("lora" in k for k in exported.state_dict())  # the adapters are merged in

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
    texts = ["star planet orbit music", "the recipe of a soup and a long text about ovens and flour", "guitar"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")  # right-padded with the pad id gradwise used
    loaded = load_run(result.run_dir, device="cpu")
    assert torch.equal(batch["input_ids"][2][:3], torch.as_tensor(loaded.tokenizer.encode("guitar"))[:3])
    with torch.no_grad():
        ours, theirs = loaded.model(batch["input_ids"]), exported(**batch).logits
    assert torch.allclose(ours, theirs, atol=1e-4)
    labels = [p.label for p in predict(result.run_dir, texts, device="cpu")]
    assert labels == [classes[i] for i in theirs.argmax(-1).tolist()]


def test_the_encoder_reads_its_special_tokens_and_pads_with_its_pad_token(models: dict[str, Path]) -> None:
    from gradwise.hf.auto_tokenizer import load_hf_tokenizer

    bert = load_hf_tokenizer(models["bert"], classify=True)
    ids = bert.encode("music")
    assert ids[0] == bert.hf.cls_token_id and ids[-1] == bert.hf.sep_token_id and bert.eot_id == bert.hf.pad_token_id
    gpt2 = load_hf_tokenizer(models["gpt2"], classify=True)
    assert gpt2.eot_id == gpt2.hf.eos_token_id  # GPT-2 has no pad token: its eos pads, as its own head expects
    with pytest.raises(DataError, match="no eos token"):  # as a language model it would have no document end
        load_hf_tokenizer(models["bert"])


@pytest.mark.slow
def test_lora_resume_is_exact_with_the_new_pooler_trained_and_saved(models: dict[str, Path], data: Path,
                                                                    tmp_path: Path) -> None:
    """BERT's masked-LM file has no pooler: under LoRA it trains in full and is checkpointed, so a resumed run
    (whose model is rebuilt, the pooler drawn afresh) continues exactly."""
    sets = ["train.max_steps=8", "train.eval_every=4", "train.log_every=1", "train.checkpoint_every=2",
            "train.grad_accum=2"]
    full = fit(models["bert"], data, tmp_path, "full", "lora", *sets).run_dir
    stopped = fit(models["bert"], data, tmp_path, "stopped", "lora", *sets, on_eval=interrupt_at(4))
    assert stopped.summary["stopped_because"] == "interrupted"
    resumed = train(resume=stopped.run_dir, quiet=True).run_dir

    def curve(run: Path) -> list[tuple]:
        return [(r["kind"], r["step"], r.get("train_loss"), r.get("val_loss")) for r in read_metrics(run / "metrics.jsonl")]

    assert curve(resumed) == curve(full)
    a, b = (load_file(str(r / "checkpoints" / "last" / "model.safetensors")) for r in (full, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any("pooler" in k for k in a) and any("lora" in k for k in a)
    assert not any("word_embeddings" in k for k in a)  # the frozen base stays out of the checkpoint


def test_an_architecture_without_a_classification_head_is_one_line(tmp_path: Path, data: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    vit = tmp_path / "vit"
    transformers.ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                           intermediate_size=8).save_pretrained(str(vit))
    code = main(["train", "--task", "classify", "--data", str(data), "--model", f"hf:{vit}",
                 "--set", f"out_dir={tmp_path / 'runs'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "no sequence-classification head for ViTConfig" in err and "--task lm" in err
    assert not (tmp_path / "runs").exists()  # refused before any work


def test_plan_of_a_hugging_face_classifier_is_one_line(models: dict[str, Path], data: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    code = main(["plan", "classify-hf", "--set", f"model.hf_path={models['bert']}", "--data", str(data)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "sized from its loaded weights" in err
