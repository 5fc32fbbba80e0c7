"""Training any local Hugging Face causal LM with gradwise (``--model hf:DIR``), and LoRA through peft.

Nothing is downloaded: the models are tiny random GPT-2 and Llama models built with transformers, each
with a tokenizer trained by ``tokenizers`` on a small text (byte-level BPE for GPT-2, a SentencePiece-style
BPE with its own eos token for Llama), saved to temp dirs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from gradwise.cli.commands import main  # noqa: E402
from gradwise.core.errors import GradwiseError  # noqa: E402
from gradwise.core.rundir import read_metrics  # noqa: E402
from gradwise.data.tokenizers import fingerprint  # noqa: E402
from gradwise.hf.auto_tokenizer import load_any_tokenizer, load_hf_tokenizer  # noqa: E402
from gradwise.inference import evaluate_run, generate_text, load_run  # noqa: E402
from gradwise.objectives.losses import CausalLMObjective  # noqa: E402
from gradwise.optim.optimizers import classify_params  # noqa: E402
from gradwise.training.run import train  # noqa: E402
from tests.hf_models import english_paragraphs, make_gpt2, make_llama  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()

TINY = ["train.batch_size=4", "train.max_steps=8", "train.eval_every=4", "train.eval_batches=2",
        "train.log_every=1", "data.split_chunks=1", "data.check=false", "data.dedupe=false", "schedule.warmup_steps=1",
        "optim.lr=3e-3", "schedule.min_lr=1e-4"]
MAX_LOGIT_DIFF = 1e-4


# ---------------------------------------------------------------- tiny models

@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hf-train")


@pytest.fixture(scope="module")
def corpus(workdir: Path) -> Path:
    paras = english_paragraphs(300)
    path = workdir / "corpus.txt"
    path.write_text("\n\n".join(paras) + "\n\nnaïve café ✓\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def gpt2_dir(workdir: Path, corpus: Path) -> Path:
    return make_gpt2(workdir / "gpt2", corpus)


@pytest.fixture(scope="module")
def llama_dir(workdir: Path, corpus: Path) -> Path:
    return make_llama(workdir / "llama", corpus)


def hf_train(directory: Path, corpus: Path, out: Path, name: str, *extra: str, **kwargs):
    return train("hf-finetune", overrides=[*TINY, "model.arch=hf", f"model.hf_path={directory}",
                                           f"data.path={corpus}", f"out_dir={out}", f"name={name}", *extra],
                 quiet=True, **kwargs)


def val_losses(run: Path) -> list[float]:
    return [r["val_loss"] for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "eval"]


# ---------------------------------------------------------------- the model and its tokenizer

@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_gradwise_loss_equals_the_models_own_loss(which: str, request: pytest.FixtureRequest) -> None:
    from gradwise.config.schema import ModelConfig
    from gradwise.hf.model import build_hf_model

    directory = request.getfixturevalue(f"{which}_dir")
    model = build_hf_model(ModelConfig(arch="hf", hf_path=str(directory), block_size=32), 10).eval()
    ids = torch.randint(0, model.base_model().config.vocab_size, (3, 25), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = CausalLMObjective()(model, ids[:, :-1], ids[:, 1:]).total.item()
        theirs = model.hf(input_ids=ids, labels=ids).loss.item()
    assert abs(ours - theirs) < 1e-5, (ours, theirs)  # measured: 0 (GPT-2) and < 5e-7 (Llama)


@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_model_flops_per_token_count_each_matmul_weight_once(which: str, request: pytest.FixtureRequest) -> None:
    """6N + 12·L·H·Q·T as for gradwise's GPT: N leaves out lookup tables (GPT-2's positions, Llama's untied input
    embedding) but keeps a table tied to the output layer."""
    from gradwise.config.schema import ModelConfig
    from gradwise.hf.model import build_hf_model
    from gradwise.models.cost import hf_flops_per_token

    model = build_hf_model(ModelConfig(arch="hf", hf_path=str(request.getfixturevalue(f"{which}_dir")),
                                       block_size=32), 10)
    hf = model.base_model()
    lookup = hf.transformer.wpe if which == "gpt2" else hf.model.embed_tokens
    n = sum(p.numel() for p in model.parameters()) - lookup.weight.numel()
    assert hf_flops_per_token(model, 32) == 6 * n + 12 * 2 * 32 * 32  # 2 layers, width 32, context 32


def test_tokenizer_adapter_matches_autotokenizer_and_fingerprints_content(llama_dir: Path, gpt2_dir: Path,
                                                                         tmp_path: Path) -> None:
    tok = load_hf_tokenizer(llama_dir)
    auto = transformers.AutoTokenizer.from_pretrained(str(llama_dir))
    text = "the model and the data\n\nnaïve café"
    assert tok.encode(text).tolist() == auto(text, add_special_tokens=False)["input_ids"]
    assert tok.eot_id == auto.eos_token_id == auto.convert_tokens_to_ids("</s>")
    assert tok.decode(tok.encode("the model")) == "the model"
    lengths = tok.token_byte_lengths()
    assert lengths[tok.eot_id] == 0 and lengths[auto.convert_tokens_to_ids("▁the")] == 4  # '▁' is the space
    gpt = load_hf_tokenizer(gpt2_dir)
    assert int(gpt.token_byte_lengths()[gpt.encode(text)].sum()) == len(text.encode("utf-8"))  # byte-level: exact
    copy = tmp_path / "copy"
    shutil.copytree(llama_dir, copy)
    assert fingerprint(load_hf_tokenizer(copy)) == fingerprint(tok)  # content, not the directory's name
    settings = json.loads((copy / "tokenizer_config.json").read_text())
    (copy / "tokenizer_config.json").write_text(json.dumps({**settings, "model_max_length": 7}))
    assert fingerprint(load_hf_tokenizer(copy)) != fingerprint(tok)


def test_output_head_is_grouped_with_embeddings(llama_dir: Path, gpt2_dir: Path) -> None:
    from gradwise.config.schema import ModelConfig
    from gradwise.hf.model import build_hf_model

    llama = build_hf_model(ModelConfig(arch="hf", hf_path=str(llama_dir)), 10)
    kinds = {k: {id(p) for p in v} for k, v in classify_params(llama).items()}
    base = llama.base_model()
    assert id(base.lm_head.weight) in kinds["embeddings"] and id(base.model.embed_tokens.weight) in kinds["embeddings"]
    assert len(kinds["embeddings"]) == 2 and id(base.model.norm.weight) in kinds["vectors"]
    gpt = build_hf_model(ModelConfig(arch="hf", hf_path=str(gpt2_dir)), 10)
    kinds = {k: {id(p) for p in v} for k, v in classify_params(gpt).items()}
    tied = gpt.base_model().transformer.wte.weight
    assert gpt.get_output_embeddings().weight is tied and kinds["embeddings"] == {id(tied), id(
        gpt.base_model().transformer.wpe.weight)}


# ---------------------------------------------------------------- training, eval, generate, export

def test_train_gpt2_then_eval_generate_and_export(gpt2_dir: Path, corpus: Path, workdir: Path) -> None:
    res = hf_train(gpt2_dir, corpus, workdir, "gpt2-full", "optim.name=muon")  # the preset's context: 256
    run, s = res.run_dir, res.summary
    losses = val_losses(run)
    assert losses[-1] < losses[0] - 0.1, losses
    saved = load_any_tokenizer(run / "tokenizer.json")
    assert saved.kind == "hf" and (run / "hf" / "config.json").is_file() and (run / "checkpoints" / "best").is_dir()
    cfg = (run / "config.yaml").read_text()
    assert f"hf_path: {gpt2_dir.resolve()}" in cfg and "block_size: 64" in cfg  # fitted to n_positions 64
    assert s["params"] == sum(p.numel() for p in transformers.AutoModelForCausalLM.from_pretrained(gpt2_dir).parameters())
    assert evaluate_run(run, "test").loss == pytest.approx(s["test_loss"], rel=1e-6)
    text = generate_text(run, "the model", max_new_tokens=5, temperature=0)[0]
    assert text.startswith("the model") and len(text) > len("the model")
    out = workdir / "gpt2-export"
    assert main(["export", str(run), "--out", str(out), "--verify"]) == 0
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out)).eval()
    ids = torch.randint(0, saved.vocab_size, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (hf(input_ids=ids).logits - load_run(run).model(ids)).abs().max().item() < MAX_LOGIT_DIFF
    assert transformers.AutoTokenizer.from_pretrained(str(out))("the model")["input_ids"] == saved.encode("the model").tolist()


def interrupt_at(step: int):
    """An on_eval callback that sends this process Ctrl-C at ``step`` (the loop saves and stops)."""
    def on_eval(at: int, loss: float) -> bool:
        if at == step:
            os.kill(os.getpid(), signal.SIGINT)
        return False
    return on_eval


@pytest.mark.slow
@pytest.mark.parametrize("which,extra", [("llama", []), ("gpt2", ["model.lora={r: 2, alpha: 4}"])],
                         ids=["llama-full", "gpt2-lora"])
def test_resume_is_exact(which: str, extra: list[str], request: pytest.FixtureRequest, corpus: Path,
                         tmp_path: Path) -> None:
    directory = request.getfixturevalue(f"{which}_dir")
    sets = [*extra, "model.block_size=32", "train.grad_accum=2", "train.checkpoint_every=2"]
    full = hf_train(directory, corpus, tmp_path, "full", *sets).run_dir
    stopped = hf_train(directory, corpus, tmp_path, "stopped", *sets, on_eval=interrupt_at(4))
    assert stopped.summary["stopped_because"] == "interrupted" and stopped.summary["steps"] == 4
    resumed = train(resume=stopped.run_dir, quiet=True).run_dir

    def curve(run: Path) -> list[tuple]:
        return [(r["kind"], r["step"], r.get("train_loss"), r.get("val_loss")) for r in read_metrics(run / "metrics.jsonl")]

    assert curve(resumed) == curve(full)  # every logged loss identical, not merely close
    a, b = (load_file(str(r / "checkpoints" / "last" / "model.safetensors")) for r in (full, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- LoRA

def lora_shapes(model: torch.nn.Module, targets: list[str]) -> list[tuple[int, int]]:
    """(in, out) of every layer the targets adapt (Conv1D stores its weight as (in, out))."""
    out = []
    for name, mod in model.named_modules():
        if name.rsplit(".", 1)[-1] in targets:
            out.append((mod.in_features, mod.out_features) if isinstance(mod, torch.nn.Linear) else tuple(mod.weight.shape))
    return out


def test_lora_trains_adapters_only_and_exports_merged(gpt2_dir: Path, corpus: Path, workdir: Path) -> None:
    pytest.importorskip("peft")
    from gradwise.optim import build_optimizer

    r = 4
    res = hf_train(gpt2_dir, corpus, workdir, "gpt2-lora", f"model.lora={{r: {r}, alpha: 8, targets: [c_attn, c_proj]}}",
                   "optim.lr=2e-2", "model.block_size=32")
    run = res.run_dir
    losses = val_losses(run)
    assert losses[-1] < losses[0], losses
    loaded = load_run(run, "last")
    original = transformers.AutoModelForCausalLM.from_pretrained(str(gpt2_dir))
    shapes = lora_shapes(original, ["c_attn", "c_proj"])
    assert len(shapes) == 6  # c_attn, and c_proj names both attn.c_proj and mlp.c_proj: 3 per layer, 2 layers
    expected = sum(r * (i + o) for i, o in shapes)
    model = loaded.model
    assert model.trainable_params() == expected
    optimizer = build_optimizer(model, loaded.cfg.optim, torch.device("cpu"))
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == expected
    # model FLOPs on the log lines: a frozen weight costs 4 per token (forward, input gradient), an adapter 6
    n = sum(p.numel() for p in original.parameters()) - original.transformer.wpe.weight.numel() + expected
    per_token = 4 * n + 2 * expected + 12 * 2 * 32 * 32
    logged = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"]
    assert logged and all(r["model_tflops"] == pytest.approx(r["tokens_per_s"] * per_token / 1e12, abs=1e-3)
                          for r in logged)
    # the base weights in the checkpoint are exactly the pretrained ones
    ckpt = model.state_dict()  # the last checkpoint's weights (tied names included)
    base = load_file(str(gpt2_dir / "model.safetensors"))
    # ...which the checkpoint itself leaves out: it holds the adapters, and names the base it needs
    last = run / "checkpoints" / "last"
    saved = load_file(str(last / "model.safetensors"))
    assert saved and all("lora_" in k for k in saved), sorted(saved)[:5]
    assert sum(v.numel() for v in saved.values()) == expected
    frozen = json.loads((last / "state.json").read_text())["frozen_base"]
    assert frozen["path"] == str(gpt2_dir.resolve()) and len(frozen["fingerprint"]) == 64
    compared = 0
    for key, value in base.items():
        stem, leaf = key.rsplit(".", 1)
        for name in (f"hf.base_model.model.{key}", f"hf.base_model.model.{stem}.base_layer.{leaf}"):
            if name in ckpt:
                assert torch.equal(ckpt[name], value), key
                compared += 1
    assert compared == len(base)
    out = workdir / "gpt2-lora-export"
    assert main(["export", str(run), "--out", str(out), "--checkpoint", "last"]) == 0
    exported = load_file(str(out / "model.safetensors"))
    assert not any("lora" in k for k in exported)
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out)).eval()
    ids = torch.randint(0, loaded.tokenizer.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (hf(input_ids=ids).logits - model(ids)).abs().max().item()
    assert diff < MAX_LOGIT_DIFF, diff
    assert not torch.equal(exported["transformer.h.0.attn.c_attn.weight"], base["transformer.h.0.attn.c_attn.weight"])


def test_lora_checkpoint_refuses_a_changed_or_missing_base(gpt2_dir: Path, corpus: Path, tmp_path: Path) -> None:
    """A LoRA checkpoint keeps only the adapters, so loading it checks the base is the one it was trained on."""
    pytest.importorskip("peft")
    from safetensors.torch import save_file

    from gradwise.core.errors import CheckpointError

    base = tmp_path / "base"
    shutil.copytree(gpt2_dir, base)
    run = hf_train(base, corpus, tmp_path, "lora", "model.lora={r: 2, alpha: 4}", "train.max_steps=2",
                   "train.eval_every=2").run_dir
    assert evaluate_run(run, "val").loss > 0  # the base is there and unchanged: the run loads
    hashes = json.loads((Path(os.environ["GRADWISE_CACHE"]) / "hf-weight-hashes.json").read_text())
    assert any(k.startswith(f"{(base / 'model.safetensors').resolve()}|") for k in hashes)  # hashed once, cached
    weights = load_file(str(base / "model.safetensors"))
    weights["transformer.h.0.mlp.c_fc.weight"] = weights["transformer.h.0.mlp.c_fc.weight"] * 1.01
    save_file(weights, str(base / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="trained on a base model whose weights differ"):
        load_run(run)
    base.rename(tmp_path / "moved")
    with pytest.raises(CheckpointError, match=r"holds only the trained \(LoRA\) weights; .* put the base model back"):
        load_run(run)


def test_a_full_lora_checkpoint_keeps_its_run_saving_full_ones(gpt2_dir: Path, tmp_path: Path) -> None:
    """Runs from before adapter-only checkpoints saved everything: loading one puts those weights in the model,
    so the model no longer stands for the base on disk, and its next checkpoints stay full."""
    pytest.importorskip("peft")
    from gradwise.config.schema import LoraSettings, ModelConfig
    from gradwise.core.checkpoint import load_weights, save_checkpoint
    from gradwise.hf.model import build_hf_model

    m = ModelConfig(arch="hf", hf_path=str(gpt2_dir), lora=LoraSettings(r=2, alpha=4))
    old = build_hf_model(m, 10)
    base, old.frozen_base = old.frozen_base, None  # what an older gradwise wrote: every weight, no base record
    save_checkpoint(tmp_path / "old", old, {"step": 1})
    assert "frozen_base" not in json.loads((tmp_path / "old" / "state.json").read_text())
    model = build_hf_model(m, 10)
    assert model.frozen_base == base
    load_weights(tmp_path / "old", model)
    assert model.frozen_base is None
    save_checkpoint(tmp_path / "next", model, {"step": 2})
    saved = set(load_file(str(tmp_path / "next" / "model.safetensors")))
    assert saved == set(load_file(str(tmp_path / "old" / "model.safetensors"))) and any("lora_" not in k for k in saved)


def test_lora_default_targets_are_peft_defaults_for_the_architecture(llama_dir: Path) -> None:
    pytest.importorskip("peft")
    from gradwise.config.schema import LoraSettings, ModelConfig
    from gradwise.hf.model import build_hf_model, fit_lora_targets

    m = ModelConfig(arch="hf", hf_path=str(llama_dir), lora=LoraSettings(r=2, alpha=4))
    fit_lora_targets(m)  # what resolving the run's config does: the targets are named before the model is built
    model = build_hf_model(m, 10)
    assert m.lora.targets == ["q_proj", "v_proj"]
    shapes = lora_shapes(transformers.AutoModelForCausalLM.from_pretrained(str(llama_dir)), m.lora.targets)
    assert model.trainable_params() == sum(2 * (i + o) for i, o in shapes)


# ---------------------------------------------------------------- the command line and one-line errors

def test_cli_model_and_lora_flags(gpt2_dir: Path, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("peft")
    sets = sum((["--set", s] for s in [*TINY, "train.max_steps=2", "train.eval_every=2", f"out_dir={tmp_path}"]), [])
    code = main(["train", "--model", f"hf:{gpt2_dir}", "--lora", "r=2,alpha=4,dropout=0.05,targets=c_attn",
                 "--data", str(corpus), "--name", "cli", "--quiet", *sets])
    assert code == 0, capsys.readouterr().err
    cfg = (tmp_path / "cli" / "config.yaml").read_text()
    assert "arch: hf" in cfg and "name: adamw" in cfg and "dropout: 0.05" in cfg and "- c_attn" in cfg


@pytest.mark.parametrize("argv,message", [
    (["--model", "gpt2"], "--model gpt2: give hf:DIR"),
    (["--model", "hf:/no/such/dir"], "no such directory"),
    (["--lora", "r=two"], "--lora r=two: not a whole number"),
    (["--lora", "rank=8"], "--lora 'rank=8': use KEY=VALUE"),
    (["--lora", "r=8"], "model.lora adapts a Hugging Face model"),
    (["--model", "hf:GPT2", "--set", "model.block_size=65"], "model.block_size 65 exceeds the 64 positions"),
    (["--model", "hf:GPT2", "--set", "model.dropout=0.1"], "model.dropout does not apply to model.arch hf"),
    (["--model", "hf:GPT2", "--task", "classify"], "classification needs labelled data: pass --data"),
])
def test_bad_input_is_one_line(argv: list[str], message: str, gpt2_dir: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture) -> None:
    argv = [a.replace("hf:GPT2", f"hf:{gpt2_dir}") for a in argv]
    assert main(["train", *argv, "--set", f"out_dir={tmp_path}", "--quiet"]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_pickled_weights_refused_and_missing_packages_named(gpt2_dir: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from gradwise.config.schema import LoraSettings, ModelConfig
    from gradwise.hf.model import build_hf_model

    pickled = tmp_path / "pickled"
    shutil.copytree(gpt2_dir, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(GradwiseError, match="pickled or non-PyTorch weights only; gradwise reads safetensors"):
        build_hf_model(ModelConfig(arch="hf", hf_path=str(pickled)), 10)
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(GradwiseError, match=r"--lora \(model.lora\) needs the Python package 'peft'; install the hf "
                                            r"extra: pip install 'gradwise\[hf\]'"):
        build_hf_model(ModelConfig(arch="hf", hf_path=str(gpt2_dir), lora=LoraSettings()), 10)
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(GradwiseError, match=r"needs the Python package 'transformers'; install the hf extra"):
        load_hf_tokenizer(gpt2_dir)


def test_a_hugging_face_run_beyond_memory_is_refused_after_loading_and_before_the_run_directory(
        gpt2_dir: Path, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gradwise.core.device_memory as device_memory
    from gradwise.config.load import load_config
    from gradwise.hf.model import build_hf_model
    from gradwise.plan.hf_shape import hf_shape
    from gradwise.training.memory import MEMORY_HEADROOM, loaded_step_bytes

    cfg = load_config("hf-finetune", [*TINY, "model.arch=hf", f"model.hf_path={gpt2_dir}", "model.block_size=64"])
    model = build_hf_model(cfg.model, 0).train()
    fixed, per_sample = loaded_step_bytes(model, "adamw", 0.9, 64)
    shape, _ = hf_shape(cfg, 300)
    # the loaded model's measurement agrees with the planner's meta-device one (plus the logits' gradient)
    assert per_sample - 64 * shape.output_rows * 4 == pytest.approx(shape.activations_per_sample, rel=0.15)
    params = list(model.parameters())  # the gradients, Adam's two moments and its step count per tensor
    assert fixed == 3 * 4 * sum(p.numel() for p in params) + 4 * len(params)

    free = int((fixed + 2.5 * per_sample) / MEMORY_HEADROOM)  # a micro-batch of 2 fits, 4 does not
    monkeypatch.setattr(device_memory, "available_memory", lambda device: (free, "test"))
    with pytest.raises(GradwiseError, match="--set train.batch_size=2 --set train.grad_accum=2 keeps the global"):
        hf_train(gpt2_dir, corpus, tmp_path, "too-big", "model.block_size=64", "train.grad_accum=1")
    assert not (tmp_path / "too-big").exists()
    res = hf_train(gpt2_dir, corpus, tmp_path, "fits", "model.block_size=64", "train.batch_size=2",
                   "train.grad_accum=2", "train.max_steps=2", "train.eval_every=2")
    assert res.run_dir.is_dir()
