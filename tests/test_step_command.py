"""`gradwise step`: the single optimization step, made visible, on a gradwise run and on a Hugging Face model.

The numbers it prints are checked against independent computations: the loss before the step against the
model's own forward pass (and, for Hugging Face, the model's own `labels=` loss), the saved weights against
a plain `torch.optim.Adam` step taken by hand, the loss after the step against the saved model reloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gradwise.cli.commands import main
from gradwise.inference import load_run
from gradwise.tools.step_inspect import converged, layer_group, sparkline
from gradwise.training.run import train

TEXT = "The quick brown fox jumps over the lazy dog"


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("step")
    corpus = root / "corpus.txt"
    corpus.write_text(("The quick brown fox jumps over the lazy dog. " * 3 + "Pack my box with five dozen liquor "
                       "jugs.\n\n") * 200, encoding="utf-8")
    result = train("default", overrides=[
        f"data.path={corpus}", f"out_dir={root}", "name=lm", "data.check=false", "data.dedupe=false",
        "data.split_chunks=1", "model.n_layer=2", "model.n_head=2",
        "model.n_embd=32", "model.block_size=64", "train.max_steps=10", "train.eval_every=10", "train.batch_size=4",
        "train.eval_batches=2", "optim.name=adamw", "train.test_eval=false"], quiet=True)
    return result.run_dir


def _ce(model: torch.nn.Module, ids: list[int]) -> float:
    x, y = torch.tensor([ids[:-1]]), torch.tensor([ids[1:]])
    with torch.no_grad():
        return float(F.cross_entropy(model(x).flatten(0, 1), y.flatten()))


def _json_steps(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def test_one_step_on_a_gradwise_run_matches_a_hand_made_adam_step(lm_run: Path, tmp_path: Path, capsys):
    loaded = load_run(lm_run, "best", "cpu")
    ids = [int(i) for i in loaded.tokenizer.encode(TEXT)]
    before = _ce(loaded.model, ids)
    expected = load_run(lm_run, "best", "cpu").model.train()  # the same weights, stepped by hand
    opt = torch.optim.Adam(expected.parameters(), lr=1e-2)
    x, y = torch.tensor([ids[:-1]]), torch.tensor([ids[1:]])
    F.cross_entropy(expected(x).flatten(0, 1), y.flatten()).backward()
    opt.step()

    assert main(["step", "--model", str(lm_run), "--text", TEXT, "--optimizer", "adam", "--lr", "1e-2",
                 "--save", str(tmp_path / "stepped"), "--json"]) == 0
    (report,) = _json_steps(capsys)
    assert report["loss_before"] == pytest.approx(before, rel=1e-6)
    stepped = load_run(tmp_path / "stepped", "best", "cpu").model
    for (name, got), want in zip(stepped.state_dict().items(), expected.state_dict().values(), strict=True):
        assert torch.allclose(got, want, atol=1e-6), name
    assert report["loss_after"] == pytest.approx(_ce(stepped, ids), rel=1e-6)
    assert report["loss_after"] < report["loss_before"]
    assert set(report["groups"]) >= {"blocks.0", "blocks.1", "wte"}
    assert {"forward", "backward", "clip", "optimizer"} <= set(report["timings"])
    assert report["peak_memory_bytes"] > 0 and report["setup"]["kind"] == "gradwise"
    # the global update ratio is the per-layer ones combined
    old = {k: v.detach() for k, v in load_run(lm_run, "best", "cpu").model.named_parameters()}
    new = {k: v.detach() for k, v in stepped.named_parameters()}
    delta = sum(float((new[k] - old[k]).pow(2).sum()) for k in old) ** 0.5
    size = sum(float(old[k].pow(2).sum()) for k in old) ** 0.5
    assert report["update_ratio"] == pytest.approx(delta / size, rel=1e-4)


def test_repeat_prints_a_row_per_step_and_the_text_view(lm_run: Path, capsys):
    assert main(["step", "--model", str(lm_run), "--text", TEXT, "--lr", "3e-3", "--repeat", "4"]) == 0
    out = capsys.readouterr().out
    assert "step 1   loss" in out and "layer" in out and "blocks.0" in out and "time     forward" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4]
    assert all(float(a[2]) == pytest.approx(float(b[1]), abs=1e-4) for a, b in zip(rows, rows[1:], strict=False))


def test_until_converged_stops_when_the_loss_stops_moving(lm_run: Path, capsys):
    assert main(["step", "--model", str(lm_run), "--text", TEXT, "--lr", "1e-2", "--until-converged",
                 "--tol", "1e-2", "--max-steps", "300", "--json"]) == 0
    reports = _json_steps(capsys)
    losses = [r["loss_after"] for r in reports]
    assert len(reports) < 300 and converged(losses, 1e-2, 5) and not converged(losses[:-1], 1e-2, 5)


def test_a_step_that_blows_up_stops_with_status_3(lm_run: Path, capsys):
    code = main(["step", "--model", str(lm_run), "--text", TEXT, "--optimizer", "sgd", "--lr", "1e6",
                 "--repeat", "50"])
    err = capsys.readouterr().err
    assert code == 3 and "went non-finite" in err and "lower --lr" in err


def test_hugging_face_model_step_and_save_in_its_own_format(tmp_path: Path, capsys):
    transformers = pytest.importorskip("transformers")
    from tests.hf_models import make_gpt2

    corpus = tmp_path / "corpus.txt"
    corpus.write_text((TEXT + ". Sphinx of black quartz, judge my vow.\n") * 50, encoding="utf-8")
    src = make_gpt2(tmp_path / "hf", corpus, n_embd=64, n_head=4, perturb=0.05)
    hf = transformers.AutoModelForCausalLM.from_pretrained(src).float().eval()
    tok = transformers.AutoTokenizer.from_pretrained(src)
    ids = torch.tensor([tok(TEXT, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        own_loss = float(hf(input_ids=ids, labels=ids).loss)  # the model's own shifted loss

    assert main(["step", "--model", str(src), "--text", TEXT, "--optimizer", "adam", "--lr", "1e-2",
                 "--save", str(tmp_path / "out"), "--json"]) == 0
    (report,) = _json_steps(capsys)
    assert report["loss_before"] == pytest.approx(own_loss, rel=1e-5)
    assert report["setup"]["kind"] == "hf" and any(g.startswith("transformer.h.") for g in report["groups"])
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").float().eval()
    with torch.no_grad():
        assert float(again(input_ids=ids, labels=ids).loss) == pytest.approx(report["loss_after"], rel=1e-5)
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "out")(TEXT)["input_ids"] == ids[0].tolist()


@pytest.mark.parametrize(("argv", "message"), [
    (["--text", TEXT], "no such directory"),
    ([], "give the text to step on"),
    (["--text", "x"], "too short"),
])
def test_bad_input_is_one_line(lm_run: Path, tmp_path: Path, capsys, argv: list[str], message: str):
    model = str(tmp_path / "missing") if message == "no such directory" else str(lm_run)
    assert main(["step", "--model", model, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_helpers():
    assert layer_group("blocks.3.attn.qkv.weight") == "blocks.3"
    assert layer_group("model.layers.12.mlp.up_proj.weight") == "model.layers.12"
    assert layer_group("wte.weight") == "wte" and layer_group("ln_f.weight") == "ln_f"
    assert converged([5.0, 4.0, 3.999, 3.9985, 3.998], 1e-3, 3) and not converged([5.0, 4.0, 3.0], 1e-3, 2)
    assert converged([0.010, 0.0105, 0.0101], 1e-3, 2)  # below 1 nat the tolerance is absolute
    assert len(sparkline([float(i) for i in range(500)])) == 60
