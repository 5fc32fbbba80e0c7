"""Hugging Face in and out: export to GPT-2 directories, import from them, round trips, one-line errors.

Nothing is downloaded: every Hugging Face model here is a tiny random GPT-2 built with transformers and a
byte-level BPE trained with ``tokenizers`` on a small text, saved to a temp dir.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from gradwise.cli.export import add_export_parser, cmd_export  # noqa: E402
from gradwise.config.load import build_config, load_config, read_config_file  # noqa: E402
from gradwise.core.errors import GradwiseError  # noqa: E402
from gradwise.core.rundir import read_metrics  # noqa: E402
from gradwise.data.tokenizers import EOT, BPETokenizer, CharTokenizer  # noqa: E402
from gradwise.export import export_hf  # noqa: E402
from gradwise.export.gpt2 import verify_export  # noqa: E402
from gradwise.hf import INSTALL_HINT, require  # noqa: E402
from gradwise.hf.convert import gpt_from_hf, hf_config  # noqa: E402
from gradwise.inference import load_run  # noqa: E402
from gradwise.tasks import prepare_task  # noqa: E402
from gradwise.tasks.classify import classifier  # noqa: E402
from gradwise.tasks.init_from import adopt_init_config, init_tokenizer, load_init_weights  # noqa: E402
from gradwise.training.run import train  # noqa: E402
from gradwise.training.run_config import resolve_train_config  # noqa: E402
from tests.hf_models import byte_level_bpe, english_paragraphs, make_gpt2  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()

TEXTS = [
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "ünïcödé: naïve café, 日本語のテキスト, emoji 😀✓, e\u0301 (a combining accent)",
    "whitespace    runs\t\ttabs   and  spaces ",
    "newlines\n\nand\r\nwindows lines\n\n\n",
    "  leading spaces, trailing ones   ",
    "",
]
TINY = ["model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.block_size=32", "train.batch_size=4",
        "train.max_steps=3", "train.eval_every=3", "train.eval_batches=2", "train.log_every=1", "data.split_chunks=1",
        "data.check=false", "data.dedupe=false", "schedule.warmup_steps=1"]
MAX_LOGIT_DIFF = 1e-4  # fp32, eval mode; measured: 0 on export, ~1e-6 on import (see the report in the PR)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hf")


@pytest.fixture(scope="module")
def corpus(workdir: Path) -> Path:
    """English-like paragraphs plus the test texts, so a char tokenizer knows every character in TEXTS."""
    paras = english_paragraphs(400) + TEXTS[:-1] * 20
    path = workdir / "corpus.txt"
    path.write_text("\n\n".join(paras), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def bpe_run(corpus: Path, workdir: Path) -> Path:
    """A byte-level BPE GPT without biases, tied embeddings (the defaults)."""
    return train("default", overrides=[*TINY, f"data.path={corpus}", f"out_dir={workdir}", "name=bpe",
                                       "data.tokenizer=bpe", "data.vocab_size=320"], quiet=True).run_dir


@pytest.fixture(scope="module")
def char_run(corpus: Path, workdir: Path) -> Path:
    """A char GPT with biases and untied embeddings: the other side of both switches."""
    return train("default", overrides=[*TINY, f"data.path={corpus}", f"out_dir={workdir}", "name=char",
                                       "data.tokenizer=char", "model.bias=true", "model.tie_embeddings=false"],
                 quiet=True).run_dir


def make_hf_gpt2(directory: Path, corpus: Path, activation: str = "gelu", seed: int = 0) -> Path:
    """A tiny random GPT-2 with every weight and bias perturbed, so a conversion that drops one shows."""
    return make_gpt2(directory, corpus, n_embd=64, n_head=4, activation=activation, perturb=0.05, seed=seed)


@pytest.fixture(scope="module")
def hf_dir(corpus: Path, workdir: Path) -> Path:
    return make_hf_gpt2(workdir / "hf-gpt2", corpus)


def export_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="gradwise")
    add_export_parser(parser.add_subparsers(dest="command"))
    return cmd_export(parser.parse_args(["export", *argv]))


def max_logit_diff(hf_model, gw_model, vocab: int, length: int, seed: int = 0) -> float:
    ids = torch.randint(0, vocab, (3, length), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return (hf_model(input_ids=ids).logits - gw_model(ids)).abs().max().item()


# ---------------------------------------------------------------- export

@pytest.mark.parametrize("which", ["bpe", "char"])
def test_export_loads_in_transformers_with_the_same_logits_and_tokens(which: str, bpe_run: Path, char_run: Path,
                                                                     workdir: Path, capsys) -> None:
    run = bpe_run if which == "bpe" else char_run
    out = workdir / f"export-{which}"
    assert export_cli(str(run), "--format", "hf", "--out", str(out)) == 0
    assert f"exported {run}" in capsys.readouterr().out

    cfg = json.loads((out / "config.json").read_text())
    gw = load_run(run, device="cpu")
    g = gw.model.cfg
    assert (cfg["model_type"], cfg["n_embd"], cfg["n_layer"], cfg["n_head"], cfg["n_positions"], cfg["vocab_size"]) \
        == ("gpt2", g.n_embd, g.n_layer, g.n_head, g.block_size, g.vocab_size)
    assert cfg["activation_function"] == "gelu" and cfg["layer_norm_epsilon"] == gw.model.ln_f.eps == 1e-5
    assert cfg["tie_word_embeddings"] is (which == "bpe") and cfg["eos_token_id"] == gw.tokenizer.eot_id

    hf = transformers.AutoModelForCausalLM.from_pretrained(out).float().eval()
    assert type(hf).__name__ == "GPT2LMHeadModel"
    assert (hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()) is (which == "bpe")
    diff = max_logit_diff(hf, gw.model, g.vocab_size, g.block_size)
    print(f"export {which}: max |logit diff| {diff:.3g}")
    assert diff <= MAX_LOGIT_DIFF

    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    assert isinstance(hf_tok, transformers.PreTrainedTokenizerFast)
    assert hf_tok.eos_token == EOT and hf_tok.eos_token_id == gw.tokenizer.eot_id
    for text in TEXTS:
        ids = gw.tokenizer.encode(text).tolist()
        assert hf_tok(text)["input_ids"] == ids, text
        assert hf_tok.encode(text, add_special_tokens=False) == ids
        assert hf_tok.decode(ids) == text
    assert verify_export(run, out)["tokenizer_matches"]


def test_export_bias_free_model_writes_zero_biases(bpe_run: Path, workdir: Path) -> None:
    out = workdir / "export-zero-bias"
    export_hf(bpe_run, out)
    tensors = load_file(str(out / "model.safetensors"))
    biases = [k for k in tensors if k.endswith(".bias")]
    assert len(biases) == 2 * 6 + 1  # per block: ln_1, ln_2, c_attn, c_proj, c_fc, mlp.c_proj; plus ln_f
    assert all(not tensors[k].any() for k in biases)
    assert tensors["transformer.h.0.attn.c_attn.weight"].shape == (32, 96)  # Conv1D: (in, out)
    assert "lm_head.weight" not in tensors  # tied: transformers takes the embedding


def test_export_cli_verify_and_force(bpe_run: Path, workdir: Path, capsys) -> None:
    out = workdir / "export-verify"
    assert export_cli(str(bpe_run), "--out", str(out), "--checkpoint", "last", "--verify") == 0
    assert "verified with transformers: max |logit difference| 0.00e+00, tokenizer matches" in capsys.readouterr().out
    with pytest.raises(GradwiseError, match="exists and is not empty; choose another directory or add --force"):
        export_cli(str(bpe_run), "--out", str(out))
    assert export_cli(str(bpe_run), "--out", str(out), "--force") == 0


# ---------------------------------------------------------------- round trip

@pytest.mark.parametrize("which", ["bpe", "char"])
def test_round_trip_gives_identical_weights_shape_and_tokenizer(which: str, bpe_run: Path, char_run: Path,
                                                                workdir: Path) -> None:
    run = bpe_run if which == "bpe" else char_run
    out = workdir / f"round-{which}"
    export_hf(run, out)
    gw = load_run(run, device="cpu")
    back = gpt_from_hf(f"hf:{out}")
    assert back.config == gw.model.cfg  # bias=False and tie_embeddings survive the trip (dropout is the run's own: 0)
    original = gw.model.state_dict()
    assert back.state_dict.keys() == original.keys()
    for name, value in original.items():
        assert torch.equal(back.state_dict[name], value), name
    assert back.tokenizer.to_json() == gw.tokenizer.to_json()
    assert type(back.tokenizer) is (BPETokenizer if which == "bpe" else CharTokenizer)


# ---------------------------------------------------------------- import

def test_import_tiny_gpt2_same_logits_and_tokens(hf_dir: Path) -> None:
    config, state, tok = gpt_from_hf(f"hf:{hf_dir}")
    assert (config.n_layer, config.n_embd, config.n_head, config.block_size, config.bias, config.tie_embeddings) \
        == (2, 64, 4, 64, True, True)
    imported = gpt_from_hf(hf_dir).model()
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).float().eval()
    diff = max_logit_diff(hf, imported, config.vocab_size, 64)
    print(f"import: max |logit diff| {diff:.3g}")
    assert diff <= MAX_LOGIT_DIFF
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    assert tok.kind == "bpe" and tok.eot_id == hf_tok.eos_token_id
    for text in TEXTS:
        assert tok.encode(text).tolist() == hf_tok(text)["input_ids"], text


def test_import_reads_gpt2_vocab_and_merges_files(hf_dir: Path, workdir: Path) -> None:
    """GPT-2's original tokenizer files (no tokenizer.json) give the same tokens."""
    old = workdir / "hf-old-files"
    old.mkdir()
    for f in ("config.json", "model.safetensors"):
        (old / f).write_bytes((hf_dir / f).read_bytes())
    byte_level_bpe((workdir / "corpus.txt").read_text(encoding="utf-8")).model.save(str(old))  # vocab.json + merges.txt
    _, _, tok = gpt_from_hf(old)
    _, _, ref = gpt_from_hf(hf_dir)
    for text in TEXTS:
        assert tok.encode(text).tolist() == ref.encode(text).tolist()


def test_import_reads_sharded_safetensors(hf_dir: Path, workdir: Path) -> None:
    from safetensors.torch import save_file

    sharded = workdir / "hf-sharded"
    sharded.mkdir()
    for f in ("config.json", "tokenizer.json"):
        (sharded / f).write_bytes((hf_dir / f).read_bytes())
    tensors = load_file(str(hf_dir / "model.safetensors"))
    names = sorted(tensors)
    weight_map = {}
    for i, part in enumerate((names[::2], names[1::2])):
        save_file({n: tensors[n] for n in part}, str(sharded / f"model-{i + 1:05d}-of-00002.safetensors"))
        weight_map.update(dict.fromkeys(part, f"model-{i + 1:05d}-of-00002.safetensors"))
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    got, want = gpt_from_hf(sharded).state_dict, gpt_from_hf(hf_dir).state_dict
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_classifier_backbone_starts_from_hf(hf_dir: Path) -> None:
    cfg, _, _ = resolve_train_config("classify-lstm", ["model.arch=gpt", f"model.init_from=hf:{hf_dir}"])
    tok = init_tokenizer(cfg)
    assert (cfg.model.n_embd, cfg.data.tokenizer, tok.vocab_size) == (64, "bpe", gpt_from_hf(hf_dir).config.vocab_size)
    model = classifier(cfg, tok.vocab_size, 3, tok.eot_id)
    load_init_weights(cfg, model)
    want = gpt_from_hf(hf_dir).state_dict
    assert all(torch.equal(v, want[k]) for k, v in model.backbone.state_dict().items())


def test_tanh_gelu_models_import_and_export_exactly(corpus: Path, workdir: Path) -> None:
    """OpenAI's GPT-2 checkpoints use GELU's tanh form: imported as model.activation gelu_tanh, same logits."""
    directory = make_hf_gpt2(workdir / "hf-gelu-new", corpus, activation="gelu_new", seed=1)
    result = gpt_from_hf(directory)
    assert result.config.activation == "gelu_tanh" and not result.warnings
    hf = transformers.AutoModelForCausalLM.from_pretrained(directory).float().eval()
    diff = max_logit_diff(hf, result.model(), result.config.vocab_size, 64)
    assert diff < 1e-4, diff
    assert hf_config(result.config, 0, 1e-5, {})["activation_function"] == "gelu_new"  # and back out as it came


def test_train_starts_from_hf_weights(hf_dir: Path, corpus: Path, workdir: Path, capsys) -> None:
    result = train("default", overrides=[
        f"model.init_from=hf:{hf_dir}", f"data.path={corpus}", f"out_dir={workdir}", "name=from-hf",
        "train.max_steps=20", "train.eval_every=20", "train.eval_batches=2", "train.batch_size=4", "train.log_every=10",
        "data.split_chunks=1", "data.check=false", "data.dedupe=false", "schedule.warmup_steps=2", "optim.name=adamw",
        "optim.lr=1e-3", "train.test_eval=false"], quiet=True)
    cfg = build_config(read_config_file(result.run_dir / "config.yaml"))
    assert (cfg.model.n_layer, cfg.model.n_embd, cfg.model.block_size, cfg.model.bias, cfg.data.tokenizer) \
        == (2, 64, 64, True, "bpe")
    evals = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if r.get("kind") == "eval"]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 20

    class HFAsGPT(torch.nn.Module):
        def __init__(self, hf):
            super().__init__()
            self.hf = hf

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            return self.hf(input_ids=idx).logits

    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).float().eval()
    task = prepare_task(cfg, result.run_dir)  # the run's tokenizer and split: the same validation windows
    hf_loss = task.evaluate(HFAsGPT(hf), "val", torch.device("cpu"), None, fixed_subset=True).loss
    print(f"train from hf: step-0 val loss {evals[0]['val_loss']:.6f}, transformers {hf_loss:.6f}")
    assert evals[0]["val_loss"] == pytest.approx(hf_loss, abs=1e-4)
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]  # it trains from there


# ---------------------------------------------------------------- bad input: one-line errors

def test_import_errors(hf_dir: Path, workdir: Path) -> None:
    with pytest.raises(GradwiseError, match="no such directory; give a local Hugging Face model directory"):
        gpt_from_hf(f"hf:{workdir / 'missing'}")
    llama = workdir / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(GradwiseError, match="holds a 'llama' model; gradwise imports GPT-2 models only"):
        gpt_from_hf(llama)
    pickled = workdir / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((hf_dir / "config.json").read_text())
    (pickled / "tokenizer.json").write_text((hf_dir / "tokenizer.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(GradwiseError, match="pickled weights"):
        gpt_from_hf(pickled)
    wide = workdir / "wide"
    wide.mkdir()
    for f in ("tokenizer.json", "model.safetensors"):
        (wide / f).write_bytes((hf_dir / f).read_bytes())
    cfg = json.loads((hf_dir / "config.json").read_text())
    (wide / "config.json").write_text(json.dumps({**cfg, "vocab_size": cfg["vocab_size"] + 8}))
    with pytest.raises(GradwiseError, match="vocab_size .* but its tokenizer has"):
        gpt_from_hf(wide)
    (wide / "config.json").write_text(json.dumps({**cfg, "activation_function": "relu"}))
    with pytest.raises(GradwiseError, match="uses activation 'relu'"):
        gpt_from_hf(wide)
    with pytest.raises(GradwiseError, match="set model.arch=gpt"):
        adopt_init_config(load_config("classify-lstm", [f"model.init_from=hf:{hf_dir}"]))


def test_export_errors(bpe_run: Path, workdir: Path) -> None:
    with pytest.raises(GradwiseError, match="is not a gradwise run directory"):
        export_cli(str(workdir / "missing"), "--out", str(workdir / "o1"))
    classify = workdir / "classify-run"
    classify.mkdir()
    (classify / "config.yaml").write_text("task: classify\nmodel:\n  arch: lstm\n")
    with pytest.raises(GradwiseError, match="is a classify run; export writes gradwise language models"):
        export_cli(str(classify), "--out", str(workdir / "o2"))
    afile = workdir / "a-file"
    afile.write_text("x")
    with pytest.raises(GradwiseError, match="is a file; give a directory"):
        export_cli(str(bpe_run), "--out", str(afile))


def test_missing_transformers_is_one_line(monkeypatch: pytest.MonkeyPatch, bpe_run: Path, workdir: Path) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now raises ImportError
    with pytest.raises(GradwiseError, match=re.escape(f"needs the Python package 'transformers'; {INSTALL_HINT}")):
        require("transformers", "--verify")
    with pytest.raises(GradwiseError, match=r"pip install 'gradwise\[hf\]'"):
        export_cli(str(bpe_run), "--out", str(workdir / "o3"), "--verify")
    assert not (workdir / "o3").exists()  # refused before writing anything


def test_core_imports_without_transformers() -> None:
    code = ("import sys; sys.modules['transformers'] = None\n"
            "import gradwise.hf.convert, gradwise.hf.tokenizer, gradwise.cli.export, gradwise.tasks.base, gradwise.api\n"
            "print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
