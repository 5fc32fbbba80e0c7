"""``gradwise report``: the HTML page of one run or several (sections, escaping, running and diverged runs),
checked in a real headless Chromium; and the TensorBoard mirror of metrics.jsonl."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from gradwise.core.errors import GradwiseError
from gradwise.report import build_report, write_report
from gradwise.report.browser import PageCheck, check_page, errors_from_events, find_chromium
from gradwise.report.data import MISSING, add_samples, config_differences, load_run_data
from tests.conftest import TINY
from tests.test_classify import SMALL, make_dataset

DIAGNOSIS = [{"kind": "overfitting", "title": "validation loss <rises> while training loss falls",
              "evidence": "val 3.1 -> 3.4 over the last 20 steps & train 2.9 -> 2.1",
              "actions": ["--set model.dropout=0.1", "stop earlier: --set train.patience=2"]},
             {"kind": "ok", "title": "gradients are healthy", "evidence": "", "actions": []}]


# ---------------------------------------------------------------- runs (trained once for the whole file)

@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny GPT runs, a tiny classifier, and hand-made copies of the first: one still running (no summary,
    no checkpoint) and one diverged (null losses, no summary)."""
    from pydoc_data.topics import topics

    from gradwise import train

    root = tmp_path_factory.mktemp("report-runs")
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join(topics[k] for k in sorted(topics)[:8]), encoding="utf-8")
    out = {}
    lm = [*TINY, f"data.path={corpus}", f"out_dir={root}", "optim.name=adamw"]  # muon: 3x slower on CPU
    out["lm"] = train(None, overrides=[*lm, "name=lm"], quiet=True).run_dir
    tb = ["train.tensorboard=true"] if importlib.util.find_spec("tensorboard") else []
    out["lm-b"] = train(None, overrides=[*lm, "name=lm-b", "optim.lr=3e-3", "train.max_steps=20",
                                         "train.eval_every=10", *tb], quiet=True).run_dir
    data = make_dataset(root / "topics.jsonl", n=150)
    out["cls"] = train("classify-lstm", overrides=[*SMALL, f"data.path={data}", f"out_dir={root}", "name=cls",
                                                   "train.max_steps=20", "train.eval_every=10",
                                                   "train.log_every=5"], quiet=True).run_dir
    records = [json.loads(x) for x in (out["lm"] / "metrics.jsonl").read_text().splitlines()]
    for name, keep in (("running", records[:3]), ("diverged", records[:4])):
        d = root / name
        d.mkdir()
        shutil.copy(out["lm"] / "config.yaml", d / "config.yaml")
        lines = [dict(r) for r in keep]
        if name == "diverged":
            lines += [{"kind": "train", "step": 30, "train_loss": None, "grad_norm": None, "lr": 0.001,
                       "tokens": 7680, "elapsed_s": 3.0, "tokens_per_s": 900.0, "skipped_steps": 10},
                      {"kind": "eval", "step": 30, "val_loss": None, "best_val_loss": 3.3}]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
        out[name] = d
    return out


@pytest.fixture(scope="module")
def pages(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The reports the browser opens: an LM run with its samples, a classifier with data statistics, and a
    comparison of four runs (one diverged)."""
    root = tmp_path_factory.mktemp("report-pages")
    return {
        "lm": write_report(runs["lm"], root / "lm.html", diagnosis=DIAGNOSIS, samples=2, max_new_tokens=40),
        "cls": write_report(runs["cls"], root / "cls.html", data_stats=True),
        "compare": write_report([runs["lm"], runs["lm-b"], runs["cls"], runs["diverged"]], root / "compare.html",
                                diagnosis={str(runs["lm"]): DIAGNOSIS}, samples=1, max_new_tokens=20),
    }


def section(page: str, sid: str) -> str:
    m = re.search(rf'<section id="{re.escape(sid)}">(.*?)</section>', page, re.S)
    assert m, f"no section {sid}"
    return m.group(1)


def external_refs(page: str) -> list[str]:
    """src/href attributes that would make the browser load something from elsewhere."""
    return [u for u in re.findall(r'\b(?:src|href)="([^"]*)"', page) if not u.startswith(("data:", "#"))]


# ---------------------------------------------------------------- the page

@pytest.mark.slow
def test_lm_report_has_every_section_and_escapes_what_it_reads(pages: dict[str, Path]) -> None:
    page = pages["lm"].read_text()
    ids = re.findall(r'<section id="([^"]+)"', page)
    assert ids == ["summary", "diagnosis", "curves", "samples", "data", "config"]
    assert len(re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{200,}"', page)) == 4
    assert external_refs(page) == []
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    summary = section(page, "summary")
    for label in ("best validation loss", "test loss", "test perplexity", "steps", "training time",
                  "tokens per second", "parameters"):
        assert f"<dt>{label}</dt>" in summary
    assert "b-finished" in summary and "at step 40" in summary
    diagnosis = section(page, "diagnosis")
    assert "validation loss &lt;rises&gt; while training loss falls" in diagnosis and "<rises>" not in diagnosis
    assert "&amp; train" in diagnosis and "<li>--set model.dropout=0.1</li>" in diagnosis
    assert diagnosis.count('class="verdict"') == 2 and "b-bad" not in diagnosis
    assert section(page, "samples").count("<pre>") == 2
    assert "<details><summary>config.yaml" in section(page, "config") and "n_layer: 2" in page
    assert "no duplicates or leakage" in section(page, "data")
    assert "length histogram of paragraphs" in section(page, "data")  # from the data check, no --data-stats


@pytest.mark.slow
def test_samples_are_repeatable_and_a_missing_checkpoint_omits_them(runs: dict[str, Path]) -> None:
    a, b = load_run_data(runs["lm"]), load_run_data(runs["lm"])
    add_samples(a, count=2, max_new_tokens=30, seed=3)
    add_samples(b, count=2, max_new_tokens=30, seed=3)
    assert a.samples and len(a.samples) == 2 and a.samples == b.samples and a.samples_note == ""
    running = load_run_data(runs["running"])
    add_samples(running, count=2)
    assert running.samples is None and running.samples_note == "no best checkpoint yet"
    page = build_report(runs["running"], samples=2)
    assert "no best checkpoint yet" in section(page, "samples") and "<pre>" not in section(page, "samples")
    assert 'id="samples"' not in build_report(runs["running"], samples=0)


@pytest.mark.slow
def test_classifier_report_shows_confusion_matrix_per_class_table_and_histogram(pages: dict[str, Path]) -> None:
    page = pages["cls"].read_text()
    assert 'id="samples"' not in page
    cls = section(page, "classification")
    for name in ("space", "cooking", "music"):
        assert f"<td class=l>{name}</td>" in cls and f"<th>{name}</th>" in cls
    assert 'class="confusion"' in cls and "precision" in cls and "support" in cls
    assert cls.count("background:rgba(") == 9  # a 3x3 matrix, every cell shaded
    data = section(page, "data")
    assert "<svg" in data and "length histogram of records" in data and "label counts" in data
    assert 'id="chart-val-metrics"' in page


@pytest.mark.slow
def test_several_runs_overlay_curves_and_compare_configs(pages: dict[str, Path], runs: dict[str, Path]) -> None:
    page = pages["compare"].read_text()
    comparison = section(page, "comparison")
    assert comparison.count("<tr>") >= 5
    for name in ("lm", "lm-b", "cls", "diverged"):
        assert f">{name}</a>" in comparison
    assert "b-diverged" in comparison
    assert re.search(r"<td class=l>optim\.lr</td><td class=l>(.*?)</td><td class=l>0\.003</td>", comparison)
    assert "<td class=l>task</td>" in comparison and "<td class=l>name</td>" not in comparison
    curves = section(page, "curves")
    assert curves.count("<img ") == 5  # one chart per metric with every run overlaid (+ val metrics: cls)
    assert 'id="run-1-diagnosis"' in page and 'id="run-2-diagnosis"' not in page
    assert 'id="run-3-classification"' in page and 'id="run-1-samples"' in page


def test_config_differences_count_missing_keys() -> None:
    class R:
        def __init__(self, config: dict) -> None:
            self.config = config

    diffs = dict(config_differences([R({"name": "a", "optim": {"lr": 1e-3, "name": "adamw"}, "split": [0.9, 0.1]}),
                                     R({"name": "b", "optim": {"lr": 1e-3, "name": "adamw"}, "split": [0.8, 0.2],
                                        "model": {"pool": "mean"}})]))  # type: ignore[list-item]
    assert set(diffs) == {"split", "model.pool"}
    assert diffs["model.pool"] == [MISSING, "mean"]


@pytest.mark.slow
def test_running_and_diverged_runs_report_what_they_have(runs: dict[str, Path]) -> None:
    running = load_run_data(runs["running"])
    assert running.status == "running" and running.summary is None
    assert running.numbers()["steps"] == max(r["step"] for r in running.metrics)
    page = build_report(runs["running"], samples=0)
    assert "b-running" in section(page, "summary") and "not evaluated (yet)" in page
    diverged = load_run_data(runs["diverged"])
    assert diverged.status == "diverged" and "non-finite at step 30" in diverged.status_note
    n = diverged.numbers()
    assert n["best_val_loss"] is not None and n["nonfinite_steps"] == 10 and n["params"] is None
    page = build_report(runs["diverged"], samples=0)
    assert "b-diverged" in page and page.count("<img ") == 4


def test_hostile_file_contents_are_escaped(tmp_path: Path) -> None:
    run = tmp_path / "x<b>&'run"
    run.mkdir()
    bad = '<script>alert("config")</script>'
    (run / "config.yaml").write_text(f"task: lm\nname: '{bad}'\ndata:\n  path: '{bad}'\n")
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "train", "step": 1, "train_loss": 2.0, "lr": 0.1}) + "\n"
                                       + "{broken json\n")
    (run / "summary.json").write_text(json.dumps({"stopped_because": bad, "test_report": {
        "classes": [bad, "b"], "per_class": {bad: {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}},
        "confusion": [[1, 0], [0, 1]], "accuracy": 1.0, "macro_f1": 1.0}}))
    (run / "data_check.json").write_text(json.dumps({"corpus": bad, "verdicts": [{"level": "warn", "text": bad}]}))
    page = build_report(run, diagnosis=[{"kind": bad, "title": bad, "evidence": bad, "actions": [bad]}])
    assert "<script>alert" not in page and page.count("<script>") == 1
    assert "&lt;script&gt;alert(&quot;config&quot;)&lt;/script&gt;" in page
    assert 'class="badge b-warn"' in page  # a kind the page does not know gets a neutral colour, never a class


def test_not_a_run_and_bad_arguments_give_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(GradwiseError, match="not a gradwise run directory"):
        build_report(tmp_path)
    with pytest.raises(GradwiseError, match="at least one run"):
        build_report([])


@pytest.mark.slow
def test_cli_writes_the_page_next_to_the_run(runs: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from gradwise.cli import report as cli_report

    parser = argparse.ArgumentParser()
    cli_report.add_report_parser(parser.add_subparsers(dest="command"))
    monkeypatch.setitem(sys.modules, "gradwise.training.diagnose", None)  # a gradwise without the diagnoser
    assert cli_report.run_diagnosis(str(runs["lm-b"])) is None
    monkeypatch.setattr(cli_report, "run_diagnosis", lambda path: DIAGNOSIS[:1])
    args = parser.parse_args(["report", str(runs["lm-b"]), "--samples", "0"])
    assert cli_report.cmd_report(args) == 0
    written = runs["lm-b"] / "report.html"
    assert f"wrote {written}" in capsys.readouterr().out
    assert 'id="diagnosis"' in written.read_text() and "overfitting" in written.read_text()
    args = parser.parse_args(["report", str(runs["lm"]), str(runs["cls"]), "--samples", "0", "--no-diagnosis",
                              "--out", str(runs["lm"].parent / "both" / "r.html")])
    assert cli_report.cmd_report(args) == 0
    assert 'id="comparison"' in (runs["lm"].parent / "both" / "r.html").read_text()


# ---------------------------------------------------------------- in a real browser

@pytest.fixture(scope="module")
def chromium() -> str:
    """Chromium's path; the test skips when there is none (asked for first, so nothing is trained for it)."""
    exe = find_chromium()
    if exe is None:
        pytest.skip("no chromium to test the page in (Debian: apt-get install chromium)")
    return exe


def assert_clean(check: PageCheck, min_charts: int) -> None:
    """What the issue asks of the page: it loads (its script ran), logs no error, and its charts render."""
    assert check.errors == [], check.errors
    assert check.ready == "1", "the page's script did not run to the end"
    assert len(check.charts) >= min_charts, check.charts
    assert check.broken_charts == [], check.broken_charts


@pytest.mark.slow
def test_report_pages_load_in_headless_chromium_without_console_errors(chromium: str, pages: dict[str, Path]) -> None:
    exe = chromium
    lm = check_page(pages["lm"], exe)
    assert_clean(lm, 4)
    curves = {"chart-loss", "chart-lr", "chart-grad-norm", "chart-throughput"}
    assert {c["id"] for c in lm.charts} == curves | {"hist-lm"}  # the histogram from the run's data check
    assert all(c["width"] == 640 and c["height"] == 340 for c in lm.charts if c["id"] in curves)
    assert lm.sections == ["summary", "diagnosis", "curves", "samples", "data", "config"]
    cls = check_page(pages["cls"], exe)
    assert_clean(cls, 6)
    assert any(c["kind"] == "svg" and c["id"].startswith("hist-") for c in cls.charts)
    compare = check_page(pages["compare"], exe)
    assert_clean(compare, 5)
    assert "comparison" in compare.sections and "run-4-summary" in compare.sections


@pytest.mark.slow
def test_the_browser_check_fails_on_a_broken_page(chromium: str, pages: dict[str, Path], tmp_path: Path) -> None:
    """The capture is real: a deliberate error in the report itself, console.error, a missing image and an
    external load (blocked by the page's security policy) are all caught, and assert_clean fails on them."""
    exe = chromium
    page = pages["lm"].read_text()
    broken = tmp_path / "broken.html"
    broken.write_text(page.replace('<script>document.body.dataset.ready = "1";</script>',
                                   "<script>report.render(); document.body.dataset.ready = '1';</script>"))
    check = check_page(broken, exe)
    assert any("ReferenceError" in x and "report is not defined" in x for x in check.errors), check.errors
    assert check.ready == ""
    with pytest.raises(AssertionError):
        assert_clean(check, 4)

    head = page[:page.index("<body>") + len("<body>")]
    other = tmp_path / "other.html"
    other.write_text(head + '<img src="missing.png" alt="gone"><img src="https://example.invalid/x.png" alt="far">'
                     '<script>console.error("deliberate", 42); document.body.dataset.ready = "1";</script></body></html>')
    check = check_page(other, exe)
    assert any("deliberate 42" in x for x in check.errors), check.errors
    assert any("Content Security Policy" in x for x in check.errors), check.errors
    assert len(check.broken_charts) == 2
    with pytest.raises(AssertionError):
        assert_clean(check, 0)


def test_errors_from_devtools_events() -> None:
    events = [{"method": "Runtime.exceptionThrown", "params": {"exceptionDetails": {
                  "lineNumber": 4, "text": "Uncaught", "exception": {"description": "TypeError: x is null"}}}},
              {"method": "Runtime.consoleAPICalled", "params": {"type": "log", "args": [{"value": "fine"}]}},
              {"method": "Runtime.consoleAPICalled", "params": {"type": "error", "args": [{"value": "bad"}]}},
              {"method": "Log.entryAdded", "params": {"entry": {"level": "warning", "text": "meh"}}},
              {"method": "Log.entryAdded", "params": {"entry": {"level": "error", "source": "network",
                                                                "text": "Failed to load resource", "url": "x.png"}}}]
    assert errors_from_events(events) == ["uncaught: TypeError: x is null (line 5)", "console.error: bad",
                                          "network: Failed to load resource x.png"]


# ---------------------------------------------------------------- TensorBoard

def test_tensorboard_mirror_writes_scalars_at_each_step(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'gradwise[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from gradwise.core.tensorboard import TensorBoardMirror, scalar_tag

    assert [scalar_tag(k) for k in ("train_loss", "val_loss", "test_accuracy", "lr", "grad_norm")] == \
        ["train/loss", "val/loss", "test/accuracy", "lr", "grad_norm"]
    with TensorBoardMirror(tmp_path / "tb") as tb:
        tb.write({"kind": "eval", "step": 0, "val_loss": 4.5})
        for step in (10, 20):
            tb.write({"kind": "train", "step": step, "train_loss": 4.0 - step / 10, "grad_norm": 1.5, "lr": 1e-3,
                      "tokens_per_s": 1000.0, "note": "text is skipped", "diverged": None})
        tb.write({"kind": "eval", "step": 20, "val_loss": 3.0, "val_accuracy": 0.75})
        tb.write({"kind": "train", "train_loss": 9.0})  # no step: nothing to place it at
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"train/loss", "val/loss", "val/accuracy", "lr", "grad_norm", "tokens_per_s"}
    assert [(s.step, round(s.value, 4)) for s in acc.Scalars("train/loss")] == [(10, 3.0), (20, 2.0)]
    assert [(s.step, s.value) for s in acc.Scalars("val/loss")] == [(0, 4.5), (20, 3.0)]
    assert acc.Scalars("lr")[0].value == pytest.approx(1e-3)


def test_tensorboard_missing_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gradwise.core.tensorboard import TensorBoardMirror

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(GradwiseError, match=r"^install tensorboard: pip install 'gradwise\[tensorboard\]'$"):
        TensorBoardMirror(tmp_path / "tb")


@pytest.mark.slow
def test_training_with_tensorboard_mirrors_every_evaluation(runs: dict[str, Path]) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'gradwise[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(runs["lm-b"] / "tensorboard"))
    acc.Reload()
    evals = [json.loads(x) for x in (runs["lm-b"] / "metrics.jsonl").read_text().splitlines()]
    want = [(r["step"], round(r["val_loss"], 4)) for r in evals if r["kind"] == "eval"]
    assert [(s.step, round(s.value, 4)) for s in acc.Scalars("val/loss")] == want and len(want) == 3
